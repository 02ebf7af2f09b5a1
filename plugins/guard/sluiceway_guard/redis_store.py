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

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from sluiceway import ServiceUnavailable

from .options import GuardOptions
from .store import Burst, MemoryGuardStore

__all__ = ["RedisGuardStore"]

log = logging.getLogger("sluiceway.guard")

T = TypeVar("T")

# After a failure, Redis is not tried again for this long: requests neither
# wait for a refused connection nor pile up on a dead server.
_RETRY_AFTER_FAILURE = 1.0
_WARN_EVERY = 10.0
_ERRORS = (RedisError, OSError, asyncio.TimeoutError)

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


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.rsplit("@", 1)[1]
    return scheme + sep + rest


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
        self.url = options.storage
        self.prefix = options.key_prefix
        self.on_storage_error = options.on_storage_error
        self.fallback = fallback if fallback is not None else MemoryGuardStore(options)
        self.timeout = timeout
        self._client: aredis.Redis | None = None
        self._scripts: dict[str, Any] = {}
        self._down_until = 0.0
        self._warned_at = -math.inf
        self._fail_args = [_ms(options.failed_auth_window), options.max_failed_auth,
                           _ms(options.ban_for)]
        self._burst_args = [_ms(options.burst_window), options.burst_limit,
                            _ms(options.block_for)]

    # -- plumbing ------------------------------------------------------------

    def client(self) -> aredis.Redis:
        if self._client is None:
            self._client = aredis.Redis.from_url(
                self.url,
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
                retry=Retry(NoBackoff(), 1),
            )
            self._scripts = {
                name: self._client.register_script(source)
                for name, source in (("fail", FAIL), ("burst", BURST))
            }
        return self._client

    async def _script(self, name: str, keys: list[str], args: list[int]) -> Any:
        self.client()
        return await self._scripts[name](keys=keys, args=args)

    async def aclose(self) -> None:
        client, self._client = self._client, None
        self._scripts = {}
        if client is not None:
            with contextlib.suppress(*_ERRORS):
                await client.aclose()

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await self.aclose()

    async def call(self, operation: Callable[[], Awaitable[T]]) -> T | None:
        """``operation``'s result, or None when Redis failed (or failed just now)."""
        if time.monotonic() < self._down_until:
            return None
        try:
            return await operation()
        except _ERRORS as exc:
            self._down_until = time.monotonic() + _RETRY_AFTER_FAILURE
            self._warn(exc)
            return None

    def _warn(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY:
            self._warned_at = now
            fallback = ("falling back to this process's in-memory guard"
                        if self.on_storage_error == "open" else "refusing guarded requests")
            log.warning("guard: Redis storage %s failed (%s: %s); %s",
                        _redact(self.url), type(exc).__name__, exc, fallback)

    def unavailable(self) -> ServiceUnavailable:
        return ServiceUnavailable(
            "The abuse guard cannot check this request right now: its storage is unavailable.",
            code="guard_unavailable", retry_after=1,
        )

    def ban_key(self, address: str) -> str:
        return f"{self.prefix}ban:ip:{address}"

    def fail_key(self, address: str) -> str:
        return f"{self.prefix}fail:ip:{address}"

    def block_key(self, key: str) -> str:
        return f"{self.prefix}block:key:{key}"

    def burst_key(self, key: str) -> str:
        return f"{self.prefix}burst:key:{key}"

    # -- GuardStore ------------------------------------------------------------

    async def ban_left(self, address: str) -> float:
        # A ban made in memory while Redis was down still holds.
        local = self.fallback.ban_left_now(address)
        name = self.ban_key(address)
        reply = await self.call(lambda: self.client().pttl(name))
        if reply is None:
            if self.on_storage_error == "closed":
                raise self.unavailable()
            return local
        millis = int(reply)
        if millis == -1:  # set by hand without an expiry
            return max(local, float(self.options.ban_for))
        return max(local, millis / 1000 if millis > 0 else 0.0)

    async def record_failure(self, address: str) -> float:
        keys = [self.fail_key(address), self.ban_key(address)]
        reply = await self.call(lambda: self._script("fail", keys, self._fail_args))
        if reply is None:
            if self.on_storage_error == "open":
                return await self.fallback.record_failure(address)
            return 0.0
        return float(self.options.ban_for) if int(reply) else 0.0

    async def hit(self, key: str) -> Burst:
        local = self.fallback.block_left_now(key)
        if local > 0:
            return Burst(local)
        keys = [self.burst_key(key), self.block_key(key)]
        reply = await self.call(lambda: self._script("burst", keys, self._burst_args))
        if reply is None:
            if self.on_storage_error == "closed":
                raise self.unavailable()
            return await self.fallback.hit(key)
        state, millis = (int(value) for value in reply)
        if state == 0:
            return Burst(0.0)
        return Burst(millis / 1000, new=state == 2)
