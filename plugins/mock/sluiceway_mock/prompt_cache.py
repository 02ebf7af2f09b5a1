"""The mock's prompt cache, shaped like OpenAI's: a prompt of at least
``min_tokens`` whose leading messages were sent before (to the same provider)
reads them from the cache. Hits count in blocks of 128 tokens, up to the end of
the longest such prefix; ``usage.prompt_tokens_details.cached_tokens`` reports
them and the first token comes that much sooner."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec

__all__ = ["BLOCK", "PromptCache"]

# OpenAI caches prompts in increments of this many tokens.
BLOCK = 128

_encode = msgspec.json.Encoder().encode


class PromptCache:
    """Prefixes seen recently, by digest; bounded (least recently used go first)."""

    def __init__(self, min_tokens: int, max_entries: int = 10_000) -> None:
        self.min_tokens = min_tokens
        self.max_entries = max_entries
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    def read(
        self, model: str, messages: Sequence[Mapping[str, Any]],
        tokens_through: Callable[[int], int],
    ) -> int:
        """The cached tokens of this prompt, and the prompt remembered for next time.
        ``tokens_through(i)`` is the prompt's tokens up to and including message i."""
        digest = hashlib.blake2b(model.encode(), digest_size=16)
        cached = 0
        seen = self._seen
        for index, message in enumerate(messages):
            digest.update(_encode(message))
            key = digest.copy().digest()
            tokens = tokens_through(index)
            if tokens < self.min_tokens:
                continue
            if key in seen:
                seen.move_to_end(key)
                cached = tokens // BLOCK * BLOCK
            else:
                seen[key] = None
                if len(seen) > self.max_entries:
                    seen.popitem(last=False)
        return cached
