"""sluiceway-markov: a provider that answers with a Markov chain of the conversation.

A complete third-party plugin in one module, in the manner of llm-markov:

* :class:`MarkovOptions` validates the keys of a ``type = "markov"`` provider
  table (anything else is a startup error naming the key);
* :class:`MarkovProvider` serves chat completions, streamed or not;
* ``register_provider_types`` makes the type known to the gateway;
* ``register_commands`` adds ``sluiceway markov TEXT`` to the command line.

The gateway imports this module only when plugins.toml lists ``markov``, and
calls the two hooks once, while it is being built. Requests never go through a
hook: they call the provider object directly.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING, Any

import msgspec

import sluiceway

if TYPE_CHECKING:
    import click

__all__ = [
    "MarkovOptions",
    "MarkovProvider",
    "build_chain",
    "generate",
    "register_commands",
    "register_provider_types",
]


class MarkovOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The options of one ``[[providers]]`` table with ``type = "markov"``."""

    # Words per answer; a request's max_tokens (or max_completion_tokens) lowers it.
    length: int = 20
    # A fixed seed gives the same answer to the same conversation.
    seed: int | None = None
    # Pause between streamed words, e.g. "20ms" (sluiceway parses the duration).
    delay: sluiceway.Duration = sluiceway.Duration(0)


def build_chain(text: str) -> dict[str, list[str]]:
    """Map each word of ``text`` to the words that follow it."""
    words = text.split()
    chain: dict[str, list[str]] = {}
    for current, following in itertools.pairwise(words):
        chain.setdefault(current, []).append(following)
    if words:
        chain.setdefault(words[-1], [])
    return chain


def generate(chain: dict[str, list[str]], length: int, rng: random.Random) -> list[str]:
    """Walk the chain for ``length`` words, restarting anywhere at a dead end."""
    if not chain:
        return []
    starts = list(chain)
    word = rng.choice(starts)
    result = [word]
    while len(result) < length:
        word = rng.choice(chain[word] or starts)
        result.append(word)
    return result


def _text_of(messages: Iterable[dict[str, Any]]) -> str:
    """The conversation's text: string contents and the text parts of part lists."""
    pieces: list[str] = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            pieces.append(content)
        elif isinstance(content, list):
            pieces.extend(
                part["text"] for part in content
                if isinstance(part, dict) and isinstance(part.get("text"), str)
            )
    return " ".join(pieces)


class MarkovProvider:
    """One configured ``markov`` provider. Satisfies :class:`sluiceway.Provider`."""

    # Served when the provider table lists no models.
    default_models = (sluiceway.ModelEntry(name="markov"),)

    def __init__(self, options: MarkovOptions) -> None:
        self.options = options

    def _answer(self, request: sluiceway.ChatRequest) -> tuple[list[str], str, int]:
        prompt = _text_of(request.messages)
        limit = self.options.length
        if request.max_tokens is not None and request.max_tokens < limit:
            limit = request.max_tokens
        rng = random.Random(self.options.seed)
        words = generate(build_chain(prompt), limit, rng)
        finish = "length" if limit < self.options.length else "stop"
        return words, finish, len(prompt.split())

    async def chat(self, request: sluiceway.ChatRequest) -> dict[str, Any]:
        """A complete OpenAI ``chat.completion`` object."""
        words, finish, prompt_tokens = self._answer(request)
        return {
            "id": "chatcmpl-" + os.urandom(12).hex(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.upstream_model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": " ".join(words)},
                "finish_reason": finish,
            }],
            "usage": _usage(prompt_tokens, len(words)),
        }

    async def stream(self, request: sluiceway.ChatRequest) -> AsyncIterator[dict[str, Any]]:
        """OpenAI ``chat.completion.chunk`` objects, one word each; the core frames
        them as server-sent events and adds ``data: [DONE]``."""
        words, finish, prompt_tokens = self._answer(request)
        base = {
            "id": "chatcmpl-" + os.urandom(12).hex(),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": request.upstream_model,
        }
        yield {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                    "finish_reason": None}]}
        for index, word in enumerate(words):
            if self.options.delay:
                await asyncio.sleep(self.options.delay)
            text = word if index == 0 else " " + word
            yield {**base, "choices": [{"index": 0, "delta": {"content": text},
                                        "finish_reason": None}]}
        yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}
        # The usage chunk: the core forwards it only to clients that asked for
        # stream_options.include_usage.
        yield {**base, "choices": [], "usage": _usage(prompt_tokens, len(words))}

    async def aclose(self) -> None:
        """Nothing to release: no connections, no files."""


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _create(ctx: sluiceway.ProviderContext) -> MarkovProvider:
    # ctx.options is the table already validated into a MarkovOptions.
    return MarkovProvider(ctx.options)


@sluiceway.hookimpl
def register_provider_types(register: Callable[[sluiceway.ProviderType], None]) -> None:
    register(sluiceway.ProviderType(
        name="markov",
        factory=_create,
        config_model=MarkovOptions,
        description="Answers with a Markov chain built from the conversation.",
    ))


@sluiceway.hookimpl
def register_commands(cli: click.Group) -> None:
    # Imported here, not at the top: the gateway itself never needs click.
    import click

    @cli.command()
    @click.argument("text")
    @click.option("--length", default=20, show_default=True, help="Words to generate.")
    @click.option("--seed", type=int, default=None, help="Seed for a repeatable answer.")
    def markov(text: str, length: int, seed: int | None) -> None:
        """Generate text from a Markov chain of TEXT, without a server."""
        click.echo(" ".join(generate(build_chain(text), length, random.Random(seed))))
