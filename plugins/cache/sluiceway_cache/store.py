"""Where answers are kept: this process's memory, or Redis.

Both are bounded: in memory by the entries' total size (the least recently
used go first) and their age; in Redis by each entry's expiry (and whatever
``maxmemory`` policy the server has). A store never raises for a failure of
its own: a Redis that cannot be reached is a miss, and a write that fails is
lost (the next request answers from upstream and writes again).
"""

from __future__ import annotations

import contextlib
import logging
import time
from contextlib import AbstractAsyncContextManager
from typing import Protocol, runtime_checkable

import cachetools
import msgspec

from sluiceway.api import Recording, RedisConnection

__all__ = ["AnswerStore", "MemoryAnswers", "RedisAnswers"]

log = logging.getLogger("sluiceway.cache")

# What one entry costs in memory beyond its bytes (the key, the objects).
_ENTRY_OVERHEAD = 256


class _Stored(msgspec.Struct, array_like=True):
    content_type: bytes
    parts: list[bytes]
    created: float


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(_Stored).decode


@runtime_checkable
class AnswerStore(Protocol):
    """Keeps recordings by key for ``ttl`` seconds."""

    async def get(self, key: str) -> Recording | None: ...

    async def put(self, key: str, recording: Recording) -> None: ...

    def lifespan(self) -> AbstractAsyncContextManager[None]: ...


def _size(recording: Recording) -> int:
    return recording.size + _ENTRY_OVERHEAD


class MemoryAnswers:
    """Recordings in this process: an LRU bounded by total size, with a TTL."""

    def __init__(self, ttl: float, max_memory: int) -> None:
        self.entries: cachetools.TTLCache[str, Recording] = cachetools.TTLCache(
            maxsize=max_memory, ttl=ttl, timer=time.monotonic, getsizeof=_size)

    async def get(self, key: str) -> Recording | None:
        return self.entries.get(key)

    async def put(self, key: str, recording: Recording) -> None:
        with contextlib.suppress(ValueError):  # larger than the whole cache
            self.entries[key] = recording

    def lifespan(self) -> AbstractAsyncContextManager[None]:
        return contextlib.nullcontext()


class RedisAnswers:
    """Recordings in Redis, shared by every instance: one string per entry,
    ``<key_prefix><key>``, in MessagePack, expiring after ``ttl``."""

    def __init__(self, url: str, ttl: float, *, key_prefix: str = "sluiceway:cache:",
                 timeout: float = 1.0) -> None:
        self.ttl_ms = max(round(ttl * 1000), 1)
        self.key_prefix = key_prefix
        self.connection = RedisConnection(
            url, what="cache", logger=log, key_prefix=key_prefix, timeout=timeout)

    async def get(self, key: str) -> Recording | None:
        name = self.key_prefix + key
        raw = await self.connection.call(lambda: self.connection.client().get(name))
        if not isinstance(raw, bytes):
            return None
        try:
            stored = _decode(raw)
        except msgspec.DecodeError:
            return None  # written by something else: a miss, overwritten next
        return Recording(stored.content_type, tuple(stored.parts), stored.created)

    async def put(self, key: str, recording: Recording) -> None:
        value = _encode(_Stored(recording.content_type, list(recording.parts),
                                recording.created))
        name = self.key_prefix + key
        await self.connection.call(
            lambda: self.connection.client().set(name, value, px=self.ttl_ms))

    def lifespan(self) -> AbstractAsyncContextManager[None]:
        """Closes the client (created on first use) at shutdown."""
        return self.connection.lifespan()
