"""The moving-window strategy: every reservation is remembered with its time and
counts for exactly one window after it, so no burst at a window boundary can
exceed the limit (the sliding-window counter only approximates this).

It costs one entry per reservation, not per unit: right for requests per
minute, where a key holds at most ``rpm`` entries; tokens per minute stay on
the sliding-window counter, whose two buckets cost the same at any volume.
"""

from __future__ import annotations

import math
import time
import uuid
from collections import deque
from collections.abc import Callable

from .limiter import _MARGIN, Decision
from .redis_store import RedisStore, _shielded

__all__ = ["MovingWindow", "RedisMovingWindow"]


class _Entries:
    """One key's reservations, oldest first, with their running total."""

    __slots__ = ("entries", "total")

    def __init__(self) -> None:
        self.entries: deque[tuple[float, int]] = deque()
        self.total = 0

    def expire(self, now: float, window: float) -> None:
        entries = self.entries
        while entries and entries[0][0] <= now - window:
            self.total -= entries.popleft()[1]

    def wait_for(self, amount: int, limit: int, now: float, window: float) -> float:
        """Seconds until enough old entries have left the window for ``amount``."""
        excess = self.total + amount - limit
        for at, size in self.entries:
            excess -= size
            if excess <= 0:
                return max(at + window - now, 0.0) + _MARGIN
        return window  # not reached: amount <= limit was checked before


class MovingWindow:
    """In-memory moving window, one process. Calls never await, so each one is
    atomic on the event loop; keys are dropped as soon as they hold nothing."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._keys: dict[str, _Entries] = {}

    def __len__(self) -> int:
        return len(self._keys)

    async def reserve(self, key: str, amount: int, limit: int, window: float) -> Decision:
        now = self._clock()
        state = self._keys.get(key)
        if state is not None:
            state.expire(now, window)
        used = state.total if state is not None else 0
        if amount > limit:
            allowed, retry = False, math.inf
        elif used + amount <= limit:
            allowed, retry = True, 0.0
            if amount > 0:
                if state is None:
                    state = self._keys[key] = _Entries()
                state.entries.append((now, amount))
                state.total += amount
                used += amount
        else:
            assert state is not None  # used > 0
            allowed, retry = False, state.wait_for(amount, limit, now, window)
        if state is not None and not state.entries:
            del self._keys[key]
            state = None
        reset = state.entries[-1][0] + window - now if state is not None else 0.0
        return Decision(allowed, max(limit - used, 0), reset, retry)

    async def adjust(self, key: str, delta: int, window: float) -> None:
        state = self._keys.get(key)
        if delta > 0:
            if state is None:
                state = self._keys[key] = _Entries()
            state.entries.append((self._clock(), delta))
            state.total += delta
            return
        if state is None:
            return
        # Give back from the newest entries: usually the reservation being undone.
        owed = -delta
        while owed > 0 and state.entries:
            at, size = state.entries.pop()
            taken = min(size, owed)
            owed -= taken
            state.total -= taken
            if size > taken:
                state.entries.append((at, size - taken))
        if not state.entries:
            del self._keys[key]


# KEYS[1]: the key's sorted set. ARGV: amount, limit, window (µs), entry id.
# Members are "<id>:<amount>" scored by their time in µs (Redis TIME).
# Returns {allowed, used after, retry after (µs, -1: never), reset after (µs)}.
MOVING_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local amount = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local entries = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local used = 0
for i = 1, #entries, 2 do
  used = used + tonumber(string.match(entries[i], ':(%d+)$'))
end
local allowed, retry = 0, 0
if amount > limit then
  retry = -1
elseif used + amount <= limit then
  allowed = 1
  if amount > 0 then
    redis.call('ZADD', KEYS[1], now, ARGV[4] .. ':' .. amount)
    redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000))
    used = used + amount
    entries[#entries + 1] = ARGV[4]
    entries[#entries + 1] = tostring(now)
  end
else
  local excess = used + amount - limit
  for i = 1, #entries, 2 do
    excess = excess - tonumber(string.match(entries[i], ':(%d+)$'))
    if excess <= 0 then
      retry = math.max(tonumber(entries[i + 1]) + window - now, 0) + 1000
      break
    end
  end
end
local reset = 0
if #entries > 0 then
  reset = tonumber(entries[#entries]) + window - now
end
return {allowed, used, retry, reset}
"""

# KEYS[1]: the key's sorted set. ARGV: amount to give back, entry id.
MOVING_GIVE_BACK = """
local owed = tonumber(ARGV[1])
local entries = redis.call('ZREVRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #entries, 2 do
  if owed <= 0 then break end
  local size = tonumber(string.match(entries[i], ':(%d+)$'))
  local taken = math.min(size, owed)
  owed = owed - taken
  redis.call('ZREM', KEYS[1], entries[i])
  if size > taken then
    redis.call('ZADD', KEYS[1], entries[i + 1], ARGV[2] .. ':' .. (size - taken))
  end
end
return owed
"""


class RedisMovingWindow:
    """The moving window in Redis: one sorted set per key
    (``<prefix>{mw:<key>}``), one member per reservation, scored by Redis
    ``TIME``. Each call is one Lua script, so one atomic round trip; it reads
    the key's entries, so it costs O(entries) (at most the limit)."""

    def __init__(self, store: RedisStore, fallback: MovingWindow | None = None) -> None:
        self.store = store
        self.fallback = fallback if fallback is not None else MovingWindow()
        store.add_script("moving_reserve", MOVING_RESERVE)
        store.add_script("moving_give_back", MOVING_GIVE_BACK)

    async def reserve(self, key: str, amount: int, limit: int, window: float) -> Decision:
        window_us = max(round(window * 1_000_000), 1000)
        reply = await self.store.call(lambda: self.store.script(
            "moving_reserve", [self.store.key(f"mw:{key}")],
            [amount, limit, window_us, uuid.uuid4().hex]))
        if reply is None:
            if self.store.on_storage_error == "closed":
                raise self.store.unavailable()
            return await self.fallback.reserve(key, amount, limit, window)
        allowed, used, retry_us, reset_us = (int(value) for value in reply)
        retry = math.inf if retry_us < 0 else retry_us / 1_000_000
        return Decision(bool(allowed), max(limit - used, 0), max(reset_us, 0) / 1_000_000,
                        retry)

    async def adjust(self, key: str, delta: int, window: float) -> None:
        if delta == 0:
            return
        name = self.store.key(f"mw:{key}")
        if delta > 0:
            async def add() -> bool:
                client = self.store.client()
                seconds, micros = await client.time()
                await client.zadd(name, {f"{uuid.uuid4().hex}:{delta}": seconds * 1e6 + micros})
                await client.pexpire(name, max(math.ceil(window * 1000), 1))
                return True

            reply: object = await _shielded(self.store.call(add))
        else:
            reply = await _shielded(self.store.call(lambda: self.store.script(
                "moving_give_back", [name], [-delta, uuid.uuid4().hex])))
        if reply is None and self.store.on_storage_error == "open":
            await self.fallback.adjust(key, delta, window)
