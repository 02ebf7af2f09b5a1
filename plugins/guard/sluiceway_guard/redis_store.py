"""The Redis backend: bans, blocks and their counters shared by every gateway
process that uses the same Redis.

Keys (``key_prefix`` defaults to ``sluiceway:guard:``):

* ``<prefix>fail:ip:<address>``: failed authentications in the current window
  (``INCR``, ``PEXPIRE`` of ``failed_auth_window`` when the window starts);
* ``<prefix>ban:ip:<address>``: a ban, ``PX`` ``ban_for``;
* ``<prefix>burst:key:<key_id>``: a key's requests in the current window;
* ``<prefix>block:key:<key_id>``: a block, ``PX`` ``block_for``.

Counting and banning (blocking) are one Lua script each, so one atomic round
trip: two processes never both miss the last straw. Reading a ban is one
``PTTL``. Expiry is relative (``PX``), so the processes' clocks do not matter.

When Redis cannot be reached, ``on_storage_error`` decides: ``"open"`` falls
back to this process's :class:`~sluiceway_guard.MemoryGuardStore` (a warning at
most every 10 s), ``"closed"`` refuses guarded requests with 503
``guard_unavailable``. Recording a failed authentication never refuses: it is
best effort.
"""

from __future__ import annotations

import logging
import math
from contextlib import AbstractAsyncContextManager
from typing import Any

from sluiceway.api import RedisConnection

from .options import GuardOptions
from .store import Burst, MemoryGuardStore

__all__ = ["RedisGuardStore"]

log = logging.getLogger("sluiceway.guard")


# KEYS: the address's failure counter, its ban. ARGV: window (ms), max failures,
# ban (ms). Returns 1 when this failure banned the address, else 0.
FAIL = """
local n = redis.call('INCR', KEYS[1])
if n == 1 or redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
if n >= tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
  return 1
end
return 0
"""

# KEYS: the key's request counter, its block. ARGV: window (ms), limit, block
# (ms). Returns {state, ms left}: 0 allowed, 1 blocked already, 2 blocked now.
BURST = """
local left = redis.call('PTTL', KEYS[2])
if left > 0 then
  return {1, left}
end
if left == -1 then
  return {1, tonumber(ARGV[3])}
end
local n = redis.call('INCR', KEYS[1])
if n == 1 or redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
if n > tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
  return {2, tonumber(ARGV[3])}
end
return {0, 0}
"""


def _ms(seconds: float) -> int:
    return max(math.ceil(seconds * 1000), 1)


class RedisGuardStore:
    """A :class:`~sluiceway_guard.GuardStore` in Redis. One client per store,
    created on first use in the serving event loop and closed by :meth:`aclose`
    (the middleware's ``lifespan``). Connect and command timeouts are 1 s, with
    one immediate retry (a pooled connection may be stale after a restart)."""

    def __init__(
        self,
        options: GuardOptions,
        *,
        fallback: MemoryGuardStore | None = None,
        timeout: float = 1.0,
    ) -> None:
        self.options = options
        self.fallback = fallback if fallback is not None else MemoryGuardStore(options)
        self.redis = RedisConnection(
            options.storage, what="guard", logger=log, key_prefix=options.key_prefix,
            on_storage_error=options.on_storage_error, unavailable_code="guard_unavailable",
            unavailable_message=("The abuse guard cannot check this request right now: "
                                 "its storage is unavailable."),
            timeout=timeout,
        )
        self.redis.add_script("fail", FAIL)
        self.redis.add_script("burst", BURST)
        self._fail_args: list[int | str] = [
            _ms(options.failed_auth_window), options.max_failed_auth, _ms(options.ban_for)]
        self._burst_args: list[int | str] = [
            _ms(options.burst_window), options.burst_limit, _ms(options.block_for)]

    # -- plumbing ------------------------------------------------------------

    @property
    def _client(self) -> Any:
        """The Redis client if one is open (for tests of its lifecycle)."""
        return self.redis._client

    def client(self) -> Any:
        return self.redis.client()

    async def aclose(self) -> None:
        await self.redis.aclose()

    def lifespan(self) -> AbstractAsyncContextManager[None]:
        return self.redis.lifespan()

    # The braces are a Redis Cluster hash tag: a script's two keys share a slot.
    def ban_key(self, address: str) -> str:
        return self.redis.key(f"ip:{address}") + ":ban"

    def fail_key(self, address: str) -> str:
        return self.redis.key(f"ip:{address}") + ":fail"

    def block_key(self, key: str) -> str:
        return self.redis.key(f"key:{key}") + ":block"

    def burst_key(self, key: str) -> str:
        return self.redis.key(f"key:{key}") + ":burst"

    # -- GuardStore ------------------------------------------------------------

    async def ban_left(self, address: str) -> float:
        # A ban made in memory while Redis was down still holds.
        local = self.fallback.ban_left_now(address)
        name = self.ban_key(address)
        reply = await self.redis.call(lambda: self.client().pttl(name))
        if reply is None:
            if self.redis.on_storage_error == "closed":
                raise self.redis.unavailable()
            return local
        millis = int(reply)
        if millis == -1:  # set by hand without an expiry
            return max(local, float(self.options.ban_for))
        return max(local, millis / 1000 if millis > 0 else 0.0)

    async def record_failure(self, address: str) -> float:
        keys = [self.fail_key(address), self.ban_key(address)]
        reply = await self.redis.call(lambda: self.redis.script("fail", keys, self._fail_args))
        if reply is None:
            if self.redis.on_storage_error == "open":
                return await self.fallback.record_failure(address)
            return 0.0
        return float(self.options.ban_for) if int(reply) else 0.0

    async def hit(self, key: str) -> Burst:
        local = self.fallback.block_left_now(key)
        if local > 0:
            return Burst(local)
        keys = [self.burst_key(key), self.block_key(key)]
        reply = await self.redis.call(lambda: self.redis.script("burst", keys, self._burst_args))
        if reply is None:
            if self.redis.on_storage_error == "closed":
                raise self.redis.unavailable()
            return await self.fallback.hit(key)
        state, millis = (int(value) for value in reply)
        if state == 0:
            return Burst(0.0)
        return Burst(millis / 1000, new=state == 2)
