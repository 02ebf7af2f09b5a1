"""A concurrency pool shared by every gateway instance, its slots leases in Redis.

:class:`SharedPool` has the interface of :class:`~sluiceway.calls.pools.Pool` (the
runner and the retry loop cannot tell them apart) but its ``concurrency`` counts
the requests of *all* instances: a slot is a lease in one Redis sorted set
(:data:`~sluiceway.redis_store.LEASE_ACQUIRE`), renewed while it is held and
lapsing ``lease_ttl`` after its holder died. A request that finds the pool full
waits, re-trying soon after any slot of this instance frees and at least every
``poll`` seconds, up to its queue timeout; a wait is local (each instance keeps
its own queue, bounded by ``buffer``), so the order across instances is not FIFO.

When Redis fails, the ``on_storage_error`` policy decides: ``"open"`` takes the
slot from a local pool of the same size (the cap is then per process until Redis
is back, with a warning), ``"closed"`` answers 503.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..calls.pools import Pool
from ..errors import ServiceUnavailable

if TYPE_CHECKING:
    from ..redis_store import RedisConnection

__all__ = ["SharedPool"]

# The longest a waiter sleeps between two tries when no local slot frees.
POLL = 0.05


class SharedPool:
    """``concurrency`` slots across every instance sharing ``connection``; ``key``
    names the pool in Redis (the same on every instance), ``name`` in errors."""

    def __init__(
        self,
        name: str,
        connection: RedisConnection,
        *,
        key: str,
        instance: str,
        concurrency: int,
        buffer: int,
        drop_excess: bool = False,
        queue_timeout: float = 10.0,
        lease_ttl: float = 30.0,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.name = name
        self.concurrency = concurrency
        self.buffer = buffer
        self.drop_excess = drop_excess
        self.queue_timeout = queue_timeout
        self.refused = 0
        self.waiting = 0
        self._connection = connection
        self._key = connection.key(f"pool:{key}")
        self._lease_ms = max(math.ceil(lease_ttl * 1000), 1)
        self._ids = (f"{instance}:{n}" for n in itertools.count())
        # The leases this instance holds; None: a slot of the local fallback.
        self.held: list[str | None] = []
        self._fallback = Pool(name, concurrency=concurrency, buffer=buffer,
                              drop_excess=drop_excess, queue_timeout=queue_timeout)
        self._freed = asyncio.Event()
        self._pending: set[asyncio.Task[None]] = set()

    @property
    def active(self) -> int:
        """Slots this instance holds."""
        return len(self.held)

    @property
    def available(self) -> int:
        """Free slots as this instance last saw them (a hint, not a promise)."""
        return max(self.concurrency - self.active, 0)

    def full(self) -> bool:
        return self.active >= self.concurrency or self.waiting > 0

    async def _try(self, lease: str) -> bool | None:
        """Take ``lease`` if the pool has room: ``True``, ``False``, or ``None`` when
        Redis failed."""
        connection = self._connection
        taken = await connection.call(lambda: connection.script(
            "lease_acquire", [self._key], [self.concurrency, lease, self._lease_ms]))
        return None if taken is None else bool(taken)

    async def acquire(self, max_wait: float | None = None) -> None:
        """Take a slot, waiting at most ``min(max_wait, queue_timeout)`` seconds;
        :class:`ServiceUnavailable` (kind ``busy``) when none comes free."""
        wait = self.queue_timeout if max_wait is None else min(max_wait, self.queue_timeout)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(wait, 0.0)
        queued = False
        try:
            while True:
                lease = next(self._ids)
                attempt = asyncio.ensure_future(self._try(lease))
                try:
                    taken = await asyncio.shield(attempt)
                except asyncio.CancelledError:
                    # Cancelled mid-try: a lease the try still takes is given back.
                    attempt.add_done_callback(self._give_back(lease))
                    raise
                if taken is None:
                    return await self._take_fallback(deadline - loop.time())
                if taken:
                    self.held.append(lease)
                    return
                left = deadline - loop.time()
                if left <= 0:
                    self.refused += 1
                    raise self._busy(f"no slot came free within {wait:.1f}s")
                if not queued:
                    if self.drop_excess and self.waiting >= self.buffer:
                        self.refused += 1
                        raise self._busy("its queue is full")
                    queued = True
                    self.waiting += 1
                self._freed.clear()
                # Soon after a slot of ours frees, or a little later for another's.
                pause = min(left, POLL * (0.5 + random.random()))
                try:
                    await asyncio.wait_for(self._freed.wait(), pause)
                except TimeoutError:
                    pass
        finally:
            if queued:
                self.waiting -= 1

    def _give_back(self, lease: str) -> Callable[[asyncio.Future[bool | None]], None]:
        def done(attempt: asyncio.Future[bool | None]) -> None:
            if not attempt.cancelled() and attempt.result():
                self._forget(lease)

        return done

    async def _take_fallback(self, left: float) -> None:
        if self._connection.on_storage_error == "closed":
            raise self._connection.unavailable()
        await self._fallback.acquire(max(left, 0.0))
        self.held.append(None)

    def release(self) -> None:
        """Give a slot back (the lease goes at once, in the background)."""
        lease = self.held.pop() if self.held else None
        if lease is None:
            self._fallback.release()
        else:
            self._forget(lease)
        self._freed.set()

    def _forget(self, lease: str) -> None:
        connection = self._connection

        async def remove() -> None:
            # On failure the lease lapses by itself within lease_ttl.
            await connection.call(lambda: connection.client().zrem(self._key, lease))

        task = asyncio.get_running_loop().create_task(remove())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def renew(self) -> None:
        """Extend the leases this instance holds (the heartbeat calls this)."""
        leases = [lease for lease in self.held if lease is not None]
        if leases:
            connection = self._connection
            await connection.call(lambda: connection.script(
                "lease_renew", [self._key], [self._lease_ms, *leases]))

    async def aclose(self) -> None:
        """Give back every lease still held, and wait for the releases under way."""
        leases = [lease for lease in self.held if lease is not None]
        self.held.clear()
        if leases:
            connection = self._connection
            await connection.call(lambda: connection.client().zrem(self._key, *leases))
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    def _busy(self, why: str) -> ServiceUnavailable:
        return ServiceUnavailable(f"{self.name} is busy: {why}. Retry shortly.",
                                  code="busy", retry_after=1.0)
