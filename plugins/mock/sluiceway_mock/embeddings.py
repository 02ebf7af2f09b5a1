"""The mock's embeddings: a unit vector per input, the same for the same text (or
token ids) in every run and process, so tests and benchmarks can compare them."""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections.abc import Sequence

from .text import count_tokens

__all__ = ["embed"]


def _vector(key: str, dimensions: int) -> list[float]:
    rng = random.Random(hashlib.sha256(key.encode()).digest())
    values = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


_WORD = re.compile(r"\w+")


def _words_vector(text: str, dimensions: int, seed: int) -> list[float]:
    """Each lower-cased word adds +1 or -1 to one coordinate (both picked by
    its hash): the cosine of two texts grows with the words they share."""
    values = [0.0] * dimensions
    for word in _WORD.findall(text.lower()):
        digest = hashlib.blake2b(f"{seed}:{word}".encode(), digest_size=8).digest()
        slot = int.from_bytes(digest[:4], "big") % dimensions
        values[slot] += 1.0 if digest[4] & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in values))
    if not norm:
        return _vector(f"{seed}:{dimensions}:", dimensions)
    return [v / norm for v in values]


def embed(
    inputs: Sequence[str] | Sequence[Sequence[int]], dimensions: int, seed: int = 0,
    *, words: bool = False,
) -> tuple[list[list[float]], int]:
    """The vectors of ``inputs`` (``dimensions`` long) and the tokens they count;
    with ``words``, texts that share words have near vectors."""
    vectors: list[list[float]] = []
    tokens = 0
    for item in inputs:
        if isinstance(item, str):
            key, tokens = item, tokens + count_tokens(item)
            if words:
                vectors.append(_words_vector(item, dimensions, seed))
                continue
        else:
            key, tokens = ",".join(map(str, item)), tokens + len(item)
        vectors.append(_vector(f"{seed}:{dimensions}:{key}", dimensions))
    return vectors, tokens
