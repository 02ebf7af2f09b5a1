"""The mock provider: renders planned answers as OpenAI completions or chunk
streams, with simulated latency and injected faults.

Faults are drawn from one ``random.Random`` per provider, seeded from the
provider's ``seed`` and name, so a run of requests meets the same faults every
time (given the same request order). At most one fault hits a request; the
rates are tried in the order rate limit, error, stall, drop.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

from sluiceway.api import (
    ChatRequest,
    EmbeddingsRequest,
    InvalidRequest,
    ModelEntry,
    RateLimited,
    UpstreamError,
    chunk_object,
    completion_id,
    completion_object,
    embeddings_object,
)

from .answer import Answer, Choice, Composer
from .embeddings import embed
from .prompt_cache import PromptCache
from .text import REPLY_OVERHEAD

if TYPE_CHECKING:
    from . import MockOptions

__all__ = ["DEFAULT_MODELS", "DEFAULT_REASONING_MODELS", "FAULTS", "MockProvider"]

Fault = Literal["error", "rate_limit", "stall", "drop"]
FAULTS: tuple[Fault, ...] = ("error", "rate_limit", "stall", "drop")

# Served when the providers table lists no models.
DEFAULT_MODELS = ("mock-gpt", "mock-reasoner", "mock-embed")
# Which of those reason, in that case only: a table that lists models says
# which of them reason with ``reasoning_models``.
DEFAULT_REASONING_MODELS = frozenset({"mock-reasoner"})


class MockProvider:
    """A simulated model: deterministic text, tools and JSON, latency and faults.

    Implements :class:`sluiceway.Provider`. ``default_models`` are routed when
    the providers table lists no models.
    """

    def __init__(self, name: str, options: MockOptions, models: Sequence[ModelEntry]) -> None:
        self.name = name
        self.options = options
        self.default_models = [ModelEntry(name=model) for model in DEFAULT_MODELS]
        self._composer = Composer(seed=options.seed, response_tokens=options.response_tokens)
        reasoning = set(options.reasoning_models)
        if not models:
            reasoning |= DEFAULT_REASONING_MODELS
        self._reasoning = frozenset(reasoning)
        # A string seed is hashed with SHA-512: stable across runs and processes,
        # unlike hash(), and distinct per provider.
        self._faults_rng = random.Random(f"sluiceway-mock:{options.seed}:{name}")
        rates: list[tuple[Fault, float]] = [
            ("rate_limit", options.rate_limit_rate), ("error", options.error_rate),
            ("stall", options.stall_rate), ("drop", options.drop_rate),
        ]
        self._rates = tuple((fault, rate) for fault, rate in rates if rate > 0)
        self._prompt_cache = (PromptCache(options.prompt_cache_min_tokens)
                              if options.prompt_cache else None)

    async def aclose(self) -> None:
        """Nothing to release: the mock holds no connections."""

    async def count_tokens(self, request: ChatRequest) -> int:
        """Exactly the ``prompt_tokens`` the same request would be charged."""
        return self._composer.prompt_tokens(request.messages)

    async def embeddings(self, request: EmbeddingsRequest) -> dict[str, Any]:
        """A unit vector per input, the same for the same input in every run; faults
        and ``ttft`` apply as to chat (a drop fails it, there is nothing to stream)."""
        fault = self._fault(request)
        self._refuse(fault)
        delay = self.options.ttft + (self.options.stall if fault == "stall" else 0)
        if delay > 0:
            await asyncio.sleep(delay)
        if fault == "drop":
            raise self._dropped()
        dimensions = request.dimensions or self.options.embedding_dimensions
        vectors, tokens = embed(request.inputs, dimensions, self.options.seed,
                                words=self.options.embeddings == "words")
        return embeddings_object(vectors, model=request.upstream_model, prompt_tokens=tokens)

    # -- faults -------------------------------------------------------------

    def _fault(self, request: ChatRequest | EmbeddingsRequest) -> Fault | None:
        if self.options.allow_request_faults:
            metadata = request.body.get("metadata")
            forced = metadata.get("mock_fault") if isinstance(metadata, dict) else None
            if forced is not None:
                if forced not in FAULTS:
                    raise InvalidRequest(
                        f"Invalid value for 'metadata.mock_fault': expected one of "
                        f"{', '.join(FAULTS)}, got {forced!r}.",
                        param="metadata.mock_fault", code="invalid_value",
                    )
                return forced  # type: ignore[no-any-return]
        if self._rates:
            rand = self._faults_rng.random
            for fault, rate in self._rates:
                if rand() < rate:
                    return fault
        return None

    def _refuse(self, fault: Fault | None) -> None:
        """Raise the faults that strike before any output."""
        if fault == "rate_limit":
            raise RateLimited(
                "The mock provider is simulating a rate limit.",
                retry_after=self.options.rate_limit_retry_after,
            )
        if fault == "error":
            raise UpstreamError("The mock provider is simulating an upstream failure.")

    def _dropped(self) -> UpstreamError:
        return UpstreamError(
            "The mock provider is simulating a connection dropped mid-response.",
            code="upstream_disconnected",
        )

    def _reasons(self, request: ChatRequest) -> bool:
        return request.upstream_model in self._reasoning or request.model in self._reasoning

    def _compose(self, request: ChatRequest) -> Answer:
        answer = self._composer.compose(request, reasoning=self._reasons(request))
        if self._prompt_cache is not None:
            through = list(itertools.accumulate(
                (self._composer.message_tokens(m) for m in request.messages),
                initial=REPLY_OVERHEAD))
            answer.cached_tokens = self._prompt_cache.read(
                request.upstream_model, request.messages, lambda index: through[index + 1])
        return answer

    def _ttft(self, answer: Answer) -> float:
        """The first token comes sooner by the share of the prompt read from cache."""
        ttft = float(self.options.ttft)
        if answer.cached_tokens and answer.prompt_tokens:
            ttft *= 1 - answer.cached_tokens / answer.prompt_tokens
        return ttft

    # -- non-streaming ------------------------------------------------------

    async def chat(self, request: ChatRequest) -> dict[str, Any]:
        """Answer with one OpenAI ``chat.completion`` object."""
        fault = self._fault(request)
        self._refuse(fault)
        answer = self._compose(request)
        options = self.options
        # As long as the same answer would take to stream.
        steps = answer.stream_steps
        if fault == "drop":
            steps //= 2
        delay = self._ttft(answer) + options.token_delay * max(steps - 1, 0)
        if fault == "stall":
            delay += options.stall
        if delay > 0:
            await asyncio.sleep(delay)
        if fault == "drop":
            raise self._dropped()
        return completion_object(
            id=completion_id(), model=request.upstream_model,
            choices=[_message_choice(choice, answer.reasoning) for choice in answer.choices],
            usage=answer.usage(),
        )

    # -- streaming ----------------------------------------------------------

    async def stream(self, request: ChatRequest) -> AsyncIterator[dict[str, Any]]:
        """Yield OpenAI ``chat.completion.chunk`` objects, ending with a usage chunk."""
        fault = self._fault(request)
        self._refuse(fault)
        answer = self._compose(request)
        options = self.options
        delay = self._ttft(answer) + (options.stall if fault == "stall" else 0)
        if delay > 0:
            await asyncio.sleep(delay)
        id_, created, model = completion_id(), int(time.time()), request.upstream_model

        def chunk(index: int, delta: dict[str, Any], finish: str | None = None,
                  stop: str | None = None) -> dict[str, Any]:
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
            if stop is not None:
                choice["stop_reason"] = stop
            return chunk_object(id=id_, model=model, created=created, choices=[choice])

        scripts = [(choice, _deltas(choice), choice.stream_steps) for choice in answer.choices]
        for choice, _, steps in scripts:
            yield chunk(choice.index, {"role": "assistant",
                                       "content": None if choice.content is None else ""})
            if steps == 0:
                yield chunk(choice.index, {}, choice.finish_reason, choice.stop_sequence)
        total = answer.stream_steps
        drop_at = total // 2 if fault == "drop" else -1
        delay = options.token_delay
        for step in range(total):
            if step == drop_at:
                raise self._dropped()
            if step and delay > 0:
                await asyncio.sleep(delay)
            for choice, deltas, steps in scripts:
                if step < steps:
                    yield chunk(choice.index, next(deltas))
                    if step == steps - 1:
                        yield chunk(choice.index, {}, choice.finish_reason, choice.stop_sequence)
        if fault == "drop":  # only reached with nothing to stream: drop after the role chunk
            raise self._dropped()
        yield chunk_object(id=id_, model=model, created=created, choices=[], usage=answer.usage())


def _deltas(choice: Choice) -> Iterator[dict[str, Any]]:
    """A choice's deltas after the role chunk, in OpenAI's shapes."""
    for piece in choice.reasoning:
        yield {"reasoning_content": piece}
    for piece in choice.content or ():
        yield {"content": piece}
    for index, call in enumerate(choice.tool_calls):
        yield {"tool_calls": [{
            "index": index, "id": call.id, "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }]}
        for piece in call.pieces:
            yield {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}


def _message_choice(choice: Choice, reasoning: bool) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": None if choice.content is None else "".join(choice.content),
        "refusal": None,
    }
    if reasoning:
        message["reasoning_content"] = "".join(choice.reasoning)
    if choice.tool_calls:
        message["tool_calls"] = [
            {"id": call.id, "type": "function",
             "function": {"name": call.name, "arguments": call.arguments}}
            for call in choice.tool_calls
        ]
    result = {"index": choice.index, "message": message, "logprobs": None,
              "finish_reason": choice.finish_reason}
    if choice.stop_sequence is not None:
        # As vLLM does: which stop sequence ended the answer (OpenAI says nothing).
        result["stop_reason"] = choice.stop_sequence
    return result

