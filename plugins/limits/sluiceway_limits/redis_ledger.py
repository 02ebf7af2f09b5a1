"""The ledger in Redis: admission is one Lua script and settlement another, so a
request costs two Redis round trips whatever limits it has.

A principal's keys share one hash tag (``<prefix>{<key>}:...``), so that both
scripts touch a single Redis Cluster slot:

* ``<prefix>{<key>}:rpm:<window start ms>`` and ``...:tpm:<window start ms>``:
  the sliding-window counter's buckets (as :class:`RedisLimiter` keeps them),
  expiring two windows after their last change;
* ``<prefix>{<key>}:conc``: the concurrency leases, a sorted set of lease ids
  scored by expiry (as :class:`RedisConcurrency` keeps them).

``admit`` checks every limit first and takes only if all of them allow, so a
refusal leaves nothing counted and needs no give-back. When Redis cannot be
reached, the store's ``on_storage_error`` applies: ``"open"`` admits through
this process's in-memory ledger, ``"closed"`` raises 503.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from typing import cast

from .ledger import Admission, LimiterLedger, Refusal
from .limiter import Decision, InMemoryConcurrency, SlidingWindowCounter
from .redis_store import RedisStore, decision

__all__ = ["RedisLedger"]

# Shared by both scripts: the two buckets of a counter at the current time.
_BUCKETS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[1])
local index = math.floor(now / window)
local elapsed = now / window - index
local window_ms = window / 1000
local function buckets(prefix)
  local current = prefix .. ':' .. string.format('%d', index * window_ms)
  local previous = prefix .. ':' .. string.format('%d', (index - 1) * window_ms)
  return current, previous, tonumber(redis.call('GET', current) or '0'),
         tonumber(redis.call('GET', previous) or '0')
end
"""

# KEYS: leases, rpm prefix, tpm prefix. ARGV: window (µs), rpm, tpm, estimate,
# max concurrent (-1: no such limit), lease id, lease ttl (ms).
# Returns {refused or '', rpm current, rpm previous, tpm current, tpm previous, now}.
ADMIT = _BUCKETS + """
local rpm, tpm = tonumber(ARGV[2]), tonumber(ARGV[3])
local estimate, most = tonumber(ARGV[4]), tonumber(ARGV[5])
local rc, rp, rcur, rprev = buckets(KEYS[2])
local tc, tp, tcur, tprev = buckets(KEYS[3])
local now_ms = math.floor(now / 1000)
local refused = ''
if most >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
  if redis.call('ZCARD', KEYS[1]) >= most then refused = 'concurrency' end
end
if refused == '' and tpm >= 0 and estimate > tpm then refused = 'tokens_exceed' end
if refused == '' and rpm >= 0 and rprev * (1 - elapsed) + rcur + 1 > rpm + 1e-9 then
  refused = 'requests'
end
if refused == '' and tpm >= 0 and tprev * (1 - elapsed) + tcur + estimate > tpm + 1e-9 then
  refused = 'tokens'
end
if refused == '' then
  local ttl = math.ceil(2 * window_ms)
  if most >= 0 then
    redis.call('ZADD', KEYS[1], now_ms + tonumber(ARGV[7]), ARGV[6])
    redis.call('PEXPIRE', KEYS[1], ARGV[7])
  end
  if rpm >= 0 then
    rcur = redis.call('INCRBY', rc, 1)
    redis.call('PEXPIRE', rc, ttl)
  end
  if tpm >= 0 and estimate > 0 then
    tcur = redis.call('INCRBY', tc, estimate)
    redis.call('PEXPIRE', tc, ttl)
  end
end
return {refused, rcur, rprev, tcur, tprev, now}
"""

# KEYS: leases, tpm prefix. ARGV: window (µs), tokens delta, lease id ('' for none).
# A negative delta larger than the current bucket is taken from the previous one.
# Returns {tpm current, tpm previous, now}.
FINISH = _BUCKETS + """
local delta = tonumber(ARGV[2])
local tc, tp, tcur, tprev = buckets(KEYS[2])
if delta ~= 0 then
  tcur = tcur + delta
  if tcur < 0 then
    if tprev > 0 then
      tprev = math.max(tprev + tcur, 0)
      redis.call('SET', tp, string.format('%d', tprev), 'KEEPTTL')
    end
    tcur = 0
  end
  if delta > 0 or redis.call('EXISTS', tc) == 1 then
    redis.call('SET', tc, string.format('%d', tcur), 'PX', math.ceil(2 * window_ms))
  end
end
if ARGV[3] ~= '' then redis.call('ZREM', KEYS[1], ARGV[3]) end
return {tcur, tprev, now}
"""

_NONE = -1


class RedisLedger:
    """:class:`~sluiceway_limits.ledger.Ledger` in Redis: two scripts, two round
    trips per request. Falls back to ``fallback`` (memory) when Redis is down and
    ``on_storage_error = "open"``."""

    def __init__(self, store: RedisStore, fallback: LimiterLedger | None = None) -> None:
        self.store = store
        self.fallback = fallback if fallback is not None else LimiterLedger(
            SlidingWindowCounter(), SlidingWindowCounter(), InMemoryConcurrency())
        store.add_script("admit", ADMIT)
        store.add_script("finish", FINISH)

    def _keys(self, key: str) -> tuple[str, str, str]:
        tagged = self.store.key(key)
        return f"{tagged}:conc", f"{tagged}:rpm", f"{tagged}:tpm"

    async def admit(
        self, key: str, *, rpm: int | None, tpm: int | None, max_concurrent: int | None,
        estimate: int, window: float,
    ) -> Admission:
        window_us = max(round(window * 1_000_000), 1000)
        lease = uuid.uuid4().hex
        ttl = max(math.ceil(self.store.lease_ttl * 1000), 1)
        args: list[int | str] = [
            window_us, _NONE if rpm is None else rpm, _NONE if tpm is None else tpm,
            estimate, _NONE if max_concurrent is None else max_concurrent, lease, ttl,
        ]
        reply = await self.store.call(lambda: self.store.script(
            "admit", list(self._keys(key)), args))
        if reply is None:
            if self.store.on_storage_error == "closed":
                raise self.store.unavailable()
            admission = await self.fallback.admit(
                key, rpm=rpm, tpm=tpm, max_concurrent=max_concurrent, estimate=estimate,
                window=window)
            admission.lease = ("memory", admission.lease)
            return admission
        refused_raw, *counts = reply
        refused = refused_raw.decode() if isinstance(refused_raw, bytes) else str(refused_raw)
        rcur, rprev, tcur, tprev, now = (int(value) for value in counts)
        position = now / window_us
        taken = not refused
        requests = tokens = None
        if rpm is not None:
            requests = decision(taken or refused != "requests", 1, rpm, window, rcur, rprev,
                                position)
        if tpm is not None:
            amount = estimate if refused in ("", "tokens") else 0
            tokens = decision(refused != "tokens", amount, tpm, window, tcur, tprev,
                              position)
        return Admission(
            cast(Refusal, refused) if refused else None, requests, tokens,
            lease if taken and max_concurrent is not None else None,
        )

    async def finish(
        self, key: str, admission: Admission, *, tokens_delta: int, tpm: int | None,
        window: float, release: bool,
    ) -> Decision | None:
        lease = admission.lease if release else None
        if release:
            admission.lease = None
        if isinstance(lease, tuple):  # admitted by the fallback while Redis was down
            admission.lease = lease[1]
            return await self.fallback.finish(key, admission, tokens_delta=tokens_delta,
                                              tpm=tpm, window=window, release=release)
        if not tokens_delta and lease is None and tpm is None:
            return None
        conc, _, tokens_key = self._keys(key)
        window_us = max(round(window * 1_000_000), 1000)
        args: list[int | str] = [window_us, tokens_delta, lease or ""]
        # Settling and releasing finish even if the request is cancelled meanwhile;
        # if Redis fails, the estimate stays charged and the lease expires.
        reply = await asyncio.shield(self.store.call(lambda: self.store.script(
            "finish", [conc, tokens_key], args)))
        if reply is None or tpm is None:
            return None
        tcur, tprev, now = (int(value) for value in reply)
        return decision(True, 0, tpm, window, tcur, tprev, now / window_us)
