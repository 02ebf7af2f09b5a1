"""The Redis backend: the same :class:`Limiter` and :class:`ConcurrencyLimiter`,
shared by every gateway process that uses the same Redis.

Each ``reserve`` / ``adjust`` / ``acquire`` is one Lua script (``EVALSHA``), so one
atomic round trip. Windows are aligned to Redis ``TIME``, not to each process's
clock. Requests in flight are leases in a sorted set scored by expiry, so a
crashed process leaks no slots for longer than ``lease_ttl``.

When Redis cannot be reached, ``on_storage_error`` decides: ``"open"`` falls back
to the in-memory limiters of this process (a warning at most every 10 s),
``"closed"`` refuses with 503 ``limits_unavailable``. Settling and releasing
never refuse: they are best effort (a lease expires by itself).
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections.abc import Awaitable
from typing import TypeVar

from sluiceway.api import LEASE_ACQUIRE, OnStorageError, RedisConnection

from .limiter import _EPSILON, Decision, InMemoryConcurrency, SlidingWindowCounter, _Counter

__all__ = ["RedisConcurrency", "RedisLimiter", "RedisStore"]

log = logging.getLogger("sluiceway.limits")

T = TypeVar("T")

# KEYS[1]: the key's prefix. ARGV: amount, limit, window (microseconds).
# Returns {allowed, current, previous, now (microseconds)} after the reservation.
RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local amount = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local index = math.floor(now / window)
local window_ms = window / 1000
local current_key = KEYS[1] .. ':' .. string.format('%d', index * window_ms)
local previous_key = KEYS[1] .. ':' .. string.format('%d', (index - 1) * window_ms)
local current = tonumber(redis.call('GET', current_key) or '0')
local previous = tonumber(redis.call('GET', previous_key) or '0')
local elapsed = now / window - index
local used = previous * (1.0 - elapsed) + current
local allowed = 0
if amount <= limit and used + amount <= limit + 1e-9 then
  allowed = 1
  if amount > 0 then
    current = redis.call('INCRBY', current_key, amount)
    redis.call('PEXPIRE', current_key, math.ceil(2 * window_ms))
  end
end
return {allowed, current, previous, now}
"""

# KEYS[1]: the key's prefix. ARGV: delta, window (microseconds). A negative
# delta larger than the current count is taken from the previous one.
ADJUST = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local delta = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local index = math.floor(now / window)
local window_ms = window / 1000
local current_key = KEYS[1] .. ':' .. string.format('%d', index * window_ms)
local previous_key = KEYS[1] .. ':' .. string.format('%d', (index - 1) * window_ms)
local current = tonumber(redis.call('GET', current_key) or '0')
current = current + delta
if current < 0 then
  local previous = tonumber(redis.call('GET', previous_key) or '0')
  if previous > 0 then
    redis.call('SET', previous_key, string.format('%d', math.max(previous + current, 0)),
               'KEEPTTL')
  end
  current = 0
end
if delta > 0 or redis.call('EXISTS', current_key) == 1 then
  redis.call('SET', current_key, string.format('%d', current), 'PX', math.ceil(2 * window_ms))
end
return current
"""

class RedisStore(RedisConnection):
    """The limits' connection: :class:`sluiceway.redis_store.RedisConnection` with
    the counter and lease scripts, and the leases' time to live."""

    def __init__(
        self,
        url: str,
        *,
        key_prefix: str = "sluiceway:limits:",
        lease_ttl: float = 300.0,
        on_storage_error: OnStorageError = "open",
        timeout: float = 1.0,
    ) -> None:
        super().__init__(
            url, what="limits", logger=log, key_prefix=key_prefix,
            on_storage_error=on_storage_error, unavailable_code="limits_unavailable",
            unavailable_message=(
                "Rate limits cannot be checked right now: their storage is unavailable."),
            timeout=timeout,
        )
        self.lease_ttl = lease_ttl
        for name, source in (("reserve", RESERVE), ("adjust", ADJUST), ("acquire", LEASE_ACQUIRE)):
            self.add_script(name, source)


async def _shielded(awaitable: Awaitable[T]) -> T:
    """Settling and releasing finish even if the request is cancelled meanwhile."""
    return await asyncio.shield(awaitable)


class RedisLimiter:
    """The sliding-window counter of :class:`~sluiceway_limits.SlidingWindowCounter`,
    kept in Redis: two counters per key (``<prefix>{<key>}:<window start ms>``)
    that expire two windows after their last change."""

    def __init__(self, store: RedisStore, fallback: SlidingWindowCounter | None = None) -> None:
        self.store = store
        self.fallback = fallback if fallback is not None else SlidingWindowCounter()

    async def reserve(self, key: str, amount: int, limit: int, window: float) -> Decision:
        window_us = max(round(window * 1_000_000), 1000)
        reply = await self.store.call(lambda: self.store.script(
            "reserve", [self.store.key(key)], [amount, limit, window_us]))
        if reply is None:
            if self.store.on_storage_error == "closed":
                raise self.store.unavailable()
            return await self.fallback.reserve(key, amount, limit, window)
        allowed, current, previous, now = (int(value) for value in reply)
        return decision(bool(allowed), amount, limit, window, int(current), int(previous),
                        now / window_us)

    async def adjust(self, key: str, delta: int, window: float) -> None:
        if delta == 0:
            return
        await _shielded(self._adjust(key, delta, window))

    async def _adjust(self, key: str, delta: int, window: float) -> None:
        window_us = max(round(window * 1_000_000), 1000)
        reply = await self.store.call(lambda: self.store.script(
            "adjust", [self.store.key(key)], [delta, window_us]))
        if reply is None and self.store.on_storage_error == "open":
            await self.fallback.adjust(key, delta, window)


def decision(
    allowed: bool, amount: int, limit: int, window: float, current: int, previous: int,
    position: float,
) -> Decision:
    """The :class:`Decision` for a state read from Redis, computed as the in-memory
    counter does; ``position`` is the time in windows (``now / window``)."""
    index = math.floor(position)
    elapsed = position - index
    counter = _Counter(window, index)
    counter.current, counter.previous = current, previous
    used = counter.used(elapsed)
    if allowed:
        retry = 0.0
    elif amount > limit:
        retry = math.inf
    else:
        retry = counter.wait_for(amount, limit, elapsed)
    remaining = max(math.floor(limit - used + _EPSILON), 0)
    return Decision(allowed, remaining, counter.reset_after(elapsed), retry)


class RedisConcurrency:
    """Requests in flight per key as leases: a sorted set ``<prefix>{concurrency:<key>}``
    of lease ids scored by their expiry. ``acquire`` drops expired leases, counts
    and adds in one script; ``release`` removes one of this process's leases."""

    def __init__(self, store: RedisStore, fallback: InMemoryConcurrency | None = None) -> None:
        self.store = store
        self.fallback = fallback if fallback is not None else InMemoryConcurrency()
        # The leases this process holds per key; None: one taken from the fallback.
        self._leases: dict[str, list[str | None]] = {}

    async def acquire(self, key: str, limit: int) -> bool:
        lease = uuid.uuid4().hex
        ttl = max(math.ceil(self.store.lease_ttl * 1000), 1)
        reply = await self.store.call(lambda: self.store.script(
            "acquire", [self.store.key(f"concurrency:{key}")], [limit, lease, ttl]))
        if reply is None:
            if self.store.on_storage_error == "closed":
                raise self.store.unavailable()
            if not await self.fallback.acquire(key, limit):
                return False
            self._leases.setdefault(key, []).append(None)
            return True
        if not int(reply):
            return False
        self._leases.setdefault(key, []).append(lease)
        return True

    async def release(self, key: str) -> None:
        leases = self._leases.get(key)
        if not leases:
            return
        lease = leases.pop()
        if not leases:
            del self._leases[key]
        if lease is None:
            await self.fallback.release(key)
            return
        name = self.store.key(f"concurrency:{key}")
        # On failure the lease simply expires.
        await _shielded(self.store.call(lambda: self.store.client().zrem(name, lease)))
