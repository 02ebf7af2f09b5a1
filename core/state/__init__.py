"""State that must hold across gateway instances (``[state] backend = "redis"``).

:class:`SharedState` owns one Redis connection for the core's own shared state:
the gateway-wide in-flight cap and each provider's pool as
:class:`~sluiceway.state.shared_pool.SharedPool` leases, and the deployments'
rests (:class:`SharedRests`): a breaker that opens on one instance rests that
deployment on every instance within ``sync_interval``. Its lifespan renews the
leases this instance holds (every third of ``lease_ttl``), reads the rests, and
gives every lease back at shutdown.

Needs the ``redis`` package (``sluiceway[redis]``); with the default memory
backend nothing here is imported.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from ..redis_store import LEASE_ACQUIRE, LEASE_RENEW, RedisConnection
from .shared_pool import SharedPool

if TYPE_CHECKING:
    from ..calls.health import DeploymentHealth
    from ..config.settings import StateSettings

__all__ = ["SharedPool", "SharedRests", "SharedState"]

log = logging.getLogger("sluiceway.state")

# KEYS[1]: the rests hash. ARGV: deployment, rest (ms), reason. The rest is kept as
# its end on the Redis clock, so instances with skewed clocks agree on it.
_PUBLISH_REST = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local until_ms = now + tonumber(ARGV[2])
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current and tonumber(string.match(current, '^(%d+)')) >= until_ms then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], until_ms .. '|' .. ARGV[3])
return 1
"""

# KEYS[1]: the rests hash. Returns {now, field, value, field, value...} of the rests
# still running, dropping those that ended.
_READ_RESTS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local found = {now}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local until_ms = tonumber(string.match(all[i + 1], '^(%d+)'))
  if until_ms and until_ms > now then
    table.insert(found, all[i])
    table.insert(found, all[i + 1])
  else
    redis.call('HDEL', KEYS[1], all[i])
  end
end
return found
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class SharedRests:
    """Deployments' rests, shared: published when a breaker opens here, applied
    here when another instance's is read."""

    def __init__(self, connection: RedisConnection, spawn: Callable[[Coroutine[Any, Any, Any]],
                                                                      None]) -> None:
        self._connection = connection
        self._key = connection.key("rests")
        self._watched: dict[str, DeploymentHealth] = {}
        self._spawn = spawn

    def watch(self, name: str, health: DeploymentHealth) -> None:
        """Share the rests of the deployment ``name`` (``provider/upstream``)."""
        self._watched[name] = health
        connection = self._connection

        def opened(seconds: float, reason: str | None) -> None:
            self._spawn(connection.call(lambda: connection.script(
                "publish_rest", [self._key],
                [name, max(math.ceil(seconds * 1000), 1), reason or ""])))

        health.on_open = opened

    async def sync(self) -> None:
        """Apply the rests other instances published."""
        if not self._watched:
            return
        connection = self._connection
        found = await connection.call(lambda: connection.script("read_rests", [self._key], []))
        if not found:
            return
        now = int(found[0])
        for index in range(1, len(found) - 1, 2):
            health = self._watched.get(_text(found[index]))
            if health is None:
                continue
            until, _, reason = _text(found[index + 1]).partition("|")
            health.rest((int(until) - now) / 1000, reason or None)


class SharedState:
    """The core's shared state on Redis: pools, rests, and their upkeep."""

    def __init__(self, settings: StateSettings) -> None:
        assert settings.url is not None
        self.settings = settings
        self.connection = RedisConnection(
            settings.url, what="shared state", logger=log, key_prefix=settings.key_prefix,
            on_storage_error=settings.on_storage_error, unavailable_code="state_unavailable",
            unavailable_message="The gateway's shared state is unavailable right now.",
        )
        for name, source in (("lease_acquire", LEASE_ACQUIRE), ("lease_renew", LEASE_RENEW),
                             ("publish_rest", _PUBLISH_REST), ("read_rests", _READ_RESTS)):
            self.connection.add_script(name, source)
        self.instance = uuid.uuid4().hex[:12]
        self.pools: list[SharedPool] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self.rests = SharedRests(self.connection, self._spawn)

    def pool(self, key: str, name: str, *, concurrency: int, buffer: int,
             drop_excess: bool = False, queue_timeout: float = 10.0) -> SharedPool:
        """A pool of ``concurrency`` slots across all instances: ``key`` in Redis,
        ``name`` in errors."""
        pool = SharedPool(name, self.connection, key=key, instance=self.instance,
                          concurrency=concurrency, buffer=buffer, drop_excess=drop_excess,
                          queue_timeout=queue_timeout,
                          lease_ttl=float(self.settings.lease_ttl))
        self.pools.append(pool)
        return pool

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _every(self, seconds: float, work: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await work()
            except Exception:  # upkeep must go on; Redis failures are already handled
                log.exception("shared state: upkeep failed")

    async def _renew(self) -> None:
        await asyncio.gather(*(pool.renew() for pool in self.pools))

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """Renews leases and reads rests while serving; gives leases back at the end."""
        upkeep = [
            asyncio.get_running_loop().create_task(
                self._every(float(self.settings.lease_ttl) / 3, self._renew)),
            asyncio.get_running_loop().create_task(
                self._every(float(self.settings.sync_interval), self.rests.sync)),
        ]
        try:
            yield
        finally:
            for task in upkeep:
                task.cancel()
            await asyncio.gather(*upkeep, return_exceptions=True)
            for pool in self.pools:
                await pool.aclose()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            await self.connection.aclose()
