"""The mock's embeddings: a unit vector per input, the same for the same text (or
token ids) in every run and process, so tests and benchmarks can compare them."""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence

from .text import count_tokens

__all__ = ["embed"]


def _vector(key: str, dimensions: int) -> list[float]:
    rng = random.Random(hashlib.sha256(key.encode()).digest())
    values = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def embed(
    inputs: Sequence[str] | Sequence[Sequence[int]], dimensions: int, seed: int = 0
) -> tuple[list[list[float]], int]:
    """The vectors of ``inputs`` (``dimensions`` long) and the tokens they count."""
    vectors: list[list[float]] = []
    tokens = 0
    for item in inputs:
        if isinstance(item, str):
            key, tokens = item, tokens + count_tokens(item)
        else:
            key, tokens = ",".join(map(str, item)), tokens + len(item)
        vectors.append(_vector(f"{seed}:{dimensions}:{key}", dimensions))
    return vectors, tokens
