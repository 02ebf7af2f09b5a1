"""Token usage, normalised once for every consumer (limits, costs, events, logs).

Providers report usage in two shapes: OpenAI's ``usage`` object (prompt and
completion tokens, with cached and reasoning tokens in ``*_details``) and
Anthropic's (input tokens *excluding* cache reads and writes, which are
counted apart). :class:`Usage` is the one typed form the core keeps on a
:class:`~sluiceway.ModelCall`; ``prompt_tokens`` always includes cached
and cache-written tokens, and ``completion_tokens`` includes reasoning tokens.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Usage"]


def _count(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


@dataclass(slots=True)
class Usage:
    """The token counts of one model call.

    ``cached_tokens`` (prompt tokens read from the upstream's prompt cache) and
    ``cache_write_tokens`` (written to it) are part of ``prompt_tokens``;
    ``reasoning_tokens`` are part of ``completion_tokens``.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def from_openai(cls, usage: object) -> Usage | None:
        """From an OpenAI ``usage`` object; ``None`` when it holds no token counts."""
        if not isinstance(usage, Mapping):
            return None
        prompt = _count(usage.get("prompt_tokens"))
        completion = _count(usage.get("completion_tokens"))
        if prompt is None and completion is None:
            return None
        found = cls(prompt or 0, completion or 0)
        details = usage.get("prompt_tokens_details")
        if isinstance(details, Mapping):
            found.cached_tokens = _count(details.get("cached_tokens")) or 0
            found.cache_write_tokens = _count(details.get("cache_creation_tokens")) or 0
        details = usage.get("completion_tokens_details")
        if isinstance(details, Mapping):
            found.reasoning_tokens = _count(details.get("reasoning_tokens")) or 0
        return found

    @classmethod
    def from_anthropic(cls, usage: object) -> Usage | None:
        """From an Anthropic ``usage`` object (``input_tokens`` excludes the cache)."""
        if not isinstance(usage, Mapping):
            return None
        fresh = _count(usage.get("input_tokens"))
        output = _count(usage.get("output_tokens"))
        read = _count(usage.get("cache_read_input_tokens")) or 0
        written = _count(usage.get("cache_creation_input_tokens")) or 0
        if fresh is None and output is None and not read and not written:
            return None
        return cls((fresh or 0) + read + written, output or 0, read, written)

    @classmethod
    def from_responses(cls, usage: object) -> Usage | None:
        """From a Responses API ``usage`` object (``input_tokens`` with the cached
        ones in ``input_tokens_details``, ``output_tokens`` with reasoning)."""
        if not isinstance(usage, Mapping):
            return None
        prompt = _count(usage.get("input_tokens"))
        completion = _count(usage.get("output_tokens"))
        if prompt is None and completion is None:
            return None
        found = cls(prompt or 0, completion or 0)
        details = usage.get("input_tokens_details")
        if isinstance(details, Mapping):
            found.cached_tokens = _count(details.get("cached_tokens")) or 0
        details = usage.get("output_tokens_details")
        if isinstance(details, Mapping):
            found.reasoning_tokens = _count(details.get("reasoning_tokens")) or 0
        return found

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI ``usage`` object for these counts."""
        usage: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "prompt_tokens_details": {
                "cached_tokens": self.cached_tokens,
                "cache_creation_tokens": self.cache_write_tokens,
            },
        }
        if self.reasoning_tokens:
            usage["completion_tokens_details"] = {"reasoning_tokens": self.reasoning_tokens}
        return usage

    def counts(self) -> dict[str, int]:
        """Flat counts for events and logs: prompt, completion, cached, reasoning
        (the last two only when non-zero)."""
        counts = {"prompt_tokens": self.prompt_tokens,
                  "completion_tokens": self.completion_tokens}
        if self.cached_tokens:
            counts["cached_tokens"] = self.cached_tokens
        if self.reasoning_tokens:
            counts["reasoning_tokens"] = self.reasoning_tokens
        return counts
