"""Sessions in Redis, for several gateway instances that share their logins.

The same sealed envelopes as the file store, as fields of one hash (so every
operation is one atomic command, and the store works on a Redis Cluster). The
cross-instance login lock is a ``SET NX PX`` key released only by its holder.
Redis failures never fail a request: a load that fails is "no session" (the
provider logs in), a save that fails leaves the session in memory only; both
are logged by :class:`~sluiceway.redis_store.RedisConnection`.

Needs the ``redis`` extra (``pip install 'sluiceway[redis]'``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
from collections.abc import AsyncIterator

from ..redis_store import RedisConnection
from .keys import KeyRing, UnreadableSession
from .record import Session
from .store import StoredSession

__all__ = ["RedisSessionStore"]


def _bytes(data: bytes | str) -> bytes:
    # The client is made without decode_responses, so this is bytes; typed as either.
    return data.encode() if isinstance(data, str) else data

log = logging.getLogger("sluiceway.sessions")

# A login holds the lock at most this long (a crashed holder frees it by then).
_LOCK_MS = 120_000
_LOCK_POLL = 0.1
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# KEYS: the hash. ARGV: the field, the sealed value it must still hold, the new one.
_REPLACE_IF = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  return 1
end
return 0
"""
# KEYS: the hash. ARGV: the field, the sealed value it must still hold.
_DELETE_IF = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""


class RedisSessionStore:
    """Sealed sessions in the hash ``sluiceway:sessions:{all}``."""

    def __init__(self, url: str, keys: KeyRing) -> None:
        self.keys = keys
        self.redis = RedisConnection(
            url, what="sessions", logger=log, key_prefix="sluiceway:sessions:", timeout=2.0
        )
        self.redis.add_script("release", _RELEASE)
        self.redis.add_script("delete_if", _DELETE_IF)
        self.redis.add_script("replace_if", _REPLACE_IF)
        self._hash = self.redis.key("all")

    def _open(self, data: bytes | str | None, provider: str) -> Session | None:
        if data is None:
            return None
        try:
            return self.keys.open(_bytes(data), provider)
        except UnreadableSession as exc:
            log.warning("stored session of %r is unusable (%s); treating it as absent",
                        provider, exc)
            return None

    async def load(self, provider: str) -> Session | None:
        client = self.redis.client()
        data = await self.redis.call(lambda: client.hget(self._hash, provider))
        # Decryption is CPU work of well under a millisecond: no thread needed.
        return self._open(data, provider)

    async def _put(self, field: str | bytes, data: bytes) -> None:
        client = self.redis.client()

        async def put() -> int:
            return await client.hset(self._hash, field, data)

        await self.redis.call(put)

    async def save(self, session: Session) -> None:
        await self._put(session.provider, self.keys.seal(session))

    async def delete(self, provider: str, *, only_id: str | None = None) -> bool:
        client = self.redis.client()
        if only_id is None:
            removed = await self.redis.call(lambda: client.hdel(self._hash, provider))
            return bool(removed)
        raw = await self.redis.call(lambda: client.hget(self._hash, provider))
        current = self._open(raw, provider)
        if raw is None or (current is not None and current.id != only_id):
            return False
        # Deleted only if it is still the very value read: a session another
        # instance saved in between is kept.
        removed = await self.redis.call(lambda: self.redis.script(
            "delete_if", [self._hash], [provider, _bytes(raw)]))
        return bool(removed)

    async def entries(self) -> list[StoredSession]:
        client = self.redis.client()
        raw = await self.redis.call(lambda: client.hgetall(self._hash))
        if raw is None:  # down: say so, rather than "no sessions stored"
            raise self.redis.unavailable()
        found = []
        for name, data in sorted(raw.items()):
            provider = name.decode() if isinstance(name, bytes) else str(name)
            try:
                found.append(StoredSession(provider, self.keys.open(_bytes(data), provider)))
            except UnreadableSession as exc:
                found.append(StoredSession(provider, None, exc.reason))
        return found

    async def rotate(self, keys: KeyRing) -> int:
        client = self.redis.client()
        raw = await self.redis.call(lambda: client.hgetall(self._hash))
        if raw is None:
            raise self.redis.unavailable()
        count = 0
        for name, data in raw.items():
            try:
                sealed = keys.reseal(_bytes(data))
            except Exception as exc:
                log.warning("session of %r not re-encrypted: %s", name, type(exc).__name__)
                continue
            # Replaced only if it still holds what was read: a login that saved a
            # new session meanwhile (sealed with a key this ring also opens) wins.
            args: list[int | str | bytes] = [
                name if isinstance(name, (str, bytes)) else str(name), _bytes(data), sealed]
            replaced = await self.redis.call(
                functools.partial(self.redis.script, "replace_if", [self._hash], args))
            count += 1 if replaced else 0
        self.keys = keys
        return count

    @contextlib.asynccontextmanager
    async def login_lock(self, provider: str) -> AsyncIterator[None]:
        """One instance logs a provider in at a time; if Redis is down, each goes
        ahead on its own (a second login is better than none)."""
        client = self.redis.client()
        key = self.redis.key("login:" + provider)
        token = secrets.token_hex(8)

        async def attempt() -> bool:
            # redis-py answers None when NX finds the key taken: made a bool here,
            # because call() returns None for "Redis failed".
            return bool(await client.set(key, token, nx=True, px=_LOCK_MS))

        while True:
            taken = await self.redis.call(attempt)
            if taken or taken is None:  # None: Redis failed, go ahead unlocked
                break
            await asyncio.sleep(_LOCK_POLL)
        try:
            yield
        finally:
            if taken:
                await self.redis.call(lambda: self.redis.script("release", [key], [token]))

    async def aclose(self) -> None:
        await self.redis.aclose()
