"""What the mock answers: a plan per choice, decided before anything is sent.

The plan is a pure function of the provider's ``seed``, the model, the messages
and the request's own ``seed`` (plus the choice index), so the same request
always gets the same answer, and the streamed and non-streamed forms of one
answer are two renderings of the same plan. Every plan is a list of pieces of
exactly one token each, so usage is simply a count of pieces.

Tool use follows one documented rule (see :func:`tools_to_call`); JSON output
comes from :mod:`sluiceway_mock.schema`.
"""

from __future__ import annotations

import functools
import hashlib
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from sluiceway.api import ChatRequest, InvalidRequest, usage_object

from .schema import SchemaError, generate
from .text import (
    count_tokens,
    message_texts,
    message_tokens,
    prompt_tokens,
    prose,
    split_pieces,
)

__all__ = ["JSON_OBJECT_SCHEMA", "Answer", "Choice", "Composer", "ToolCall", "tools_to_call"]

_encode = msgspec.json.encode

# What ``response_format: json_object`` answers look like.
JSON_OBJECT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "answer": {"type": "string", "minLength": 20, "maxLength": 120},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "topics": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 3},
    },
    "required": ["answer", "confidence", "topics"],
    "additionalProperties": False,
}
_EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}
_REASONING_OPENER = ("Let", " me", " think", " about", " this", ".")


@dataclass(slots=True)
class ToolCall:
    """One planned function call; ``pieces`` are its arguments, one token each."""

    id: str
    name: str
    pieces: list[str]

    @property
    def arguments(self) -> str:
        return "".join(self.pieces)


@dataclass(slots=True)
class Choice:
    """One planned choice. ``content`` is ``None`` when the choice calls tools;
    ``stop_sequence`` is the stop sequence that cut it, if one did."""

    index: int
    reasoning: list[str]
    content: list[str] | None
    tool_calls: list[ToolCall]
    finish_reason: str
    stop_sequence: str | None = None

    @property
    def completion_tokens(self) -> int:
        calls = sum(len(call.pieces) for call in self.tool_calls)
        return len(self.reasoning) + len(self.content or ()) + calls

    @property
    def stream_steps(self) -> int:
        """Deltas after the role chunk: one per token, plus one to open each tool call."""
        return self.completion_tokens + len(self.tool_calls)


@dataclass(slots=True)
class Answer:
    """Every choice of one response, and what the prompt cost."""

    choices: list[Choice]
    prompt_tokens: int
    reasoning: bool
    # Prompt tokens read from the provider's (simulated) prompt cache.
    cached_tokens: int = 0

    @property
    def stream_steps(self) -> int:
        return max((choice.stream_steps for choice in self.choices), default=0)

    def usage(self) -> dict[str, Any]:
        completion = sum(choice.completion_tokens for choice in self.choices)
        if self.reasoning:
            reasoning = sum(len(choice.reasoning) for choice in self.choices)
            usage = usage_object(self.prompt_tokens, completion, reasoning_tokens=reasoning)
        else:
            usage = usage_object(self.prompt_tokens, completion)
        if self.cached_tokens:
            usage["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
        return usage


def _last_user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return " ".join(message_texts(message)).lower()
    return ""


def _mentions(text: str, name: str) -> bool:
    lowered = name.lower()
    return lowered in text or lowered.replace("_", " ").replace("-", " ") in text


def tools_to_call(body: Mapping[str, Any], messages: Sequence[Mapping[str, Any]]) -> list[int]:
    """Indexes into ``body["tools"]`` of the functions to call; empty for a text answer.

    * no tools, or ``tool_choice: "none"``: answer with text;
    * a named function: call that one;
    * ``"auto"`` (the default) right after a ``tool`` message: answer with text,
      so that an agent loop ends;
    * otherwise (``"auto"`` or ``"required"``): call every tool whose name the
      last user message mentions (``get_weather`` or "get weather", any case),
      only the first of them if ``parallel_tool_calls`` is false, and the first
      tool listed when none is mentioned.
    """
    tools = body.get("tools") or []
    choice = body.get("tool_choice") or "auto"
    if not tools or choice == "none":
        return []
    names = [tool["function"]["name"] for tool in tools]
    if isinstance(choice, dict):
        return [names.index(choice["function"]["name"])]
    if choice == "auto" and messages and messages[-1].get("role") == "tool":
        return []
    text = _last_user_text(messages)
    mentioned = [index for index, name in enumerate(names) if _mentions(text, name)]
    if not mentioned:
        return [0]
    return mentioned[:1] if body.get("parallel_tool_calls") is False else mentioned


def _stops(body: Mapping[str, Any]) -> list[str]:
    stop = body.get("stop")
    if isinstance(stop, str):
        return [stop] if stop else []
    return [s for s in stop or () if isinstance(s, str) and s]


def _truncate_at_stop(pieces: list[str], stops: list[str]) -> tuple[list[str], str] | None:
    """The pieces before the first stop sequence in the text, and that sequence."""
    text = "".join(pieces)
    found = [(at, stop) for stop in stops if (at := text.find(stop)) >= 0]
    if not found:
        return None
    at, stop = min(found)
    return split_pieces(text[:at]), stop


# Load tests resend the same prompts, and tokenizing is the mock's largest
# per-request cost: counts of recent texts are kept, within a bounded size.
_CACHE_ENTRIES = 256
_CACHE_MAX_TEXT = 32 * 1024


class Composer:
    """Plans answers for one provider (its seed and natural answer length)."""

    __slots__ = ("_cached_count", "response_tokens", "seed")

    def __init__(self, *, seed: int, response_tokens: int) -> None:
        self.seed = seed
        self.response_tokens = response_tokens
        self._cached_count = functools.lru_cache(maxsize=_CACHE_ENTRIES)(count_tokens)

    def _count(self, text: str) -> int:
        # Short texts are cheaper to count than to hash and look up; huge ones
        # would make the cache's memory unbounded in practice.
        if 64 < len(text) <= _CACHE_MAX_TEXT:
            return self._cached_count(text)
        return count_tokens(text)

    def compose(self, request: ChatRequest, *, reasoning: bool) -> Answer:
        body = request.body
        messages = request.messages
        # A digest of everything the answer may depend on; each choice seeds from it.
        digest = hashlib.blake2b(
            _encode([self.seed, request.upstream_model, messages, body.get("seed")]),
            digest_size=8,
        ).digest()
        base = int.from_bytes(digest, "big")
        n = body.get("n") or 1
        calls = tools_to_call(body, messages)
        stops = _stops(body)
        choices = [
            self._choice(request, index, random.Random(base + index), reasoning, calls, stops)
            for index in range(n)
        ]
        return Answer(choices, self.prompt_tokens(messages), reasoning)

    def prompt_tokens(self, messages: Sequence[Mapping[str, Any]]) -> int:
        """What a request with these messages is charged as ``usage.prompt_tokens``."""
        return prompt_tokens(messages, self._count)

    def message_tokens(self, message: Mapping[str, Any]) -> int:
        """One message's share of :meth:`prompt_tokens`."""
        return message_tokens(message, self._count)

    def _choice(
        self, request: ChatRequest, index: int, rng: random.Random, reasoning: bool,
        calls: list[int], stops: list[str],
    ) -> Choice:
        budget = request.max_tokens
        thoughts: list[str] = []
        if reasoning:
            opener = _REASONING_OPENER[: self.response_tokens]
            rest = prose(rng, self.response_tokens - len(opener), leading_space=True)
            thoughts = [*opener, *rest]
            if budget is not None:
                if len(thoughts) >= budget:
                    # The budget ran out while thinking: no answer at all, as upstream.
                    empty: list[str] | None = None if calls else []
                    return Choice(index, thoughts[:budget], empty, [], "length")
                budget -= len(thoughts)
        if calls:
            return self._tool_choice(request, index, rng, thoughts, calls, budget)
        pieces = self._content(request, rng)
        finish = "stop"
        if budget is not None and len(pieces) > budget:
            pieces, finish = pieces[:budget], "length"
        if stops and (cut := _truncate_at_stop(pieces, stops)) is not None:
            (pieces, matched), finish = cut, "stop"
            return Choice(index, thoughts, pieces, [], finish, matched)
        return Choice(index, thoughts, pieces, [], finish)

    def _content(self, request: ChatRequest, rng: random.Random) -> list[str]:
        response_format = request.body.get("response_format")
        kind = response_format.get("type") if isinstance(response_format, dict) else None
        if kind == "json_object":
            return split_pieces(_encode(generate(JSON_OBJECT_SCHEMA, rng)).decode())
        if kind == "json_schema":
            assert isinstance(response_format, dict)
            schema = response_format["json_schema"].get("schema") or {"type": "object"}
            try:
                value = generate(schema, rng)
            except SchemaError as exc:
                raise InvalidRequest(
                    f"Invalid schema for response_format: {exc}.",
                    param="response_format.json_schema.schema", code="invalid_value",
                ) from None
            return split_pieces(_encode(value).decode())
        return prose(rng, self.response_tokens)

    def _tool_choice(
        self, request: ChatRequest, index: int, rng: random.Random, thoughts: list[str],
        calls: list[int], budget: int | None,
    ) -> Choice:
        tools = request.body["tools"]
        planned: list[ToolCall] = []
        finish = "tool_calls"
        for position in calls:
            if budget == 0:
                finish = "length"
                break
            function = tools[position]["function"]
            try:
                arguments = generate(function.get("parameters") or _EMPTY_PARAMETERS, rng)
            except SchemaError as exc:
                raise InvalidRequest(
                    f"Invalid schema for function '{function['name']}': {exc}.",
                    param=f"tools[{position}].function.parameters", code="invalid_value",
                ) from None
            pieces = split_pieces(_encode(arguments).decode())
            call_id = f"call_{rng.getrandbits(96):024x}"
            if budget is not None:
                if len(pieces) > budget:
                    planned.append(ToolCall(call_id, function["name"], pieces[:budget]))
                    finish = "length"
                    break
                budget -= len(pieces)
            planned.append(ToolCall(call_id, function["name"], pieces))
        return Choice(index, thoughts, None, planned, finish)
