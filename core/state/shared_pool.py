"""A concurrency pool shared by every gateway instance, its slots leases in Redis.

:class:`SharedPool` has the interface of :class:`~sluiceway.calls.pools.Pool` (the
runner and the retry loop cannot tell them apart) but its ``concurrency`` counts
the requests of *all* instances: a slot is a lease in one Redis sorted set
(:data:`~sluiceway.redis_store.LEASE_ACQUIRE`), renewed while it is held and
lapsing ``lease_ttl`` after its holder died. A request that finds the pool full
waits in this instance's queue (bounded by ``buffer``, in order); only the first
in it asks Redis again, soon after a slot of this instance frees and about every
:data:`POLL` seconds otherwise, up to its queue timeout. Across instances the
order is not FIFO.

When Redis fails, the ``on_storage_error`` policy decides: ``"open"`` takes the
slot from a local pool of the same size (the cap is then per process until Redis
is back, with a warning), ``"closed"`` answers 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import random
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..calls.pools import Pool
from ..errors import ServiceUnavailable

if TYPE_CHECKING:
    from ..redis_store import RedisConnection

__all__ = ["SharedPool"]

log = logging.getLogger("sluiceway.state")

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
        self.closed = False
        self._connection = connection
        self._key = connection.key(f"pool:{key}")
        self._lease_ms = max(math.ceil(lease_ttl * 1000), 1)
        self._ids = (f"{instance}:{n}" for n in itertools.count())
        # The leases this instance holds, and the slots it took from the local
        # fallback while Redis was down (slots are alike: any may be given back).
        self.held: list[str] = []
        self.fallback_held = 0
        # Leases whose removal failed (Redis down): removed again at each renewal.
        self._unreleased: set[str] = set()
        # One waiter at a time asks Redis; the others wait their turn, in order.
        self._turn = asyncio.Lock()
        self._fallback = Pool(name, concurrency=concurrency, buffer=buffer,
                              drop_excess=drop_excess, queue_timeout=queue_timeout)
        self._freed = asyncio.Event()
        self._pending: set[asyncio.Task[None]] = set()

    @property
    def active(self) -> int:
        """Slots this instance holds."""
        return len(self.held) + self.fallback_held

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
        if not self._turn.locked() and await self._take(deadline):
            return
        if self.drop_excess and self.waiting >= self.buffer:
            self.refused += 1
            raise self._busy("its queue is full")
        self.waiting += 1
        try:
            async with asyncio.timeout(max(deadline - loop.time(), 0.0)):
                async with self._turn:
                    while not await self._take(deadline):
                        self._freed.clear()
                        # Soon after a slot of ours frees, or a little later for another's.
                        pause = POLL * (0.5 + random.random())
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._freed.wait(), pause)
        except TimeoutError:
            self.refused += 1
            raise self._busy(f"no slot came free within {wait:.1f}s") from None
        finally:
            self.waiting -= 1

    async def _take(self, deadline: float) -> bool:
        """One try: a lease, or (Redis down) a fallback slot; ``False`` when full."""
        lease = next(self._ids)
        attempt = asyncio.ensure_future(self._try(lease))
        try:
            taken = await asyncio.shield(attempt)
        except asyncio.CancelledError:
            # Cancelled mid-try: a lease the try still takes is given back.
            attempt.add_done_callback(self._give_back(lease))
            raise
        if taken is None:
            await self._take_fallback(deadline - asyncio.get_running_loop().time())
            return True
        if taken:
            self.held.append(lease)
        return taken

    def _give_back(self, lease: str) -> Callable[[asyncio.Future[bool | None]], None]:
        def done(attempt: asyncio.Future[bool | None]) -> None:
            if not attempt.cancelled() and attempt.result():
                self._forget(lease)

        return done

    async def _take_fallback(self, left: float) -> None:
        if self._connection.on_storage_error == "closed":
            raise self._connection.unavailable()
        await self._fallback.acquire(max(left, 0.0))
        self.fallback_held += 1

    def release(self) -> None:
        """Give a slot back (the lease goes at once, in the background)."""
        if self.closed:
            return  # closed: every lease was given back already
        if self.fallback_held:
            self.fallback_held -= 1
            self._fallback.release()
        elif self.held:
            self._forget(self.held.pop())
        self._freed.set()

    def _forget(self, lease: str) -> None:
        connection = self._connection

        async def remove() -> None:
            # On failure, tried again at the next renewal (and lapses by itself anyway).
            if await connection.call(lambda: connection.client().zrem(self._key, lease)) is None:
                self._unreleased.add(lease)

        task = asyncio.get_running_loop().create_task(remove())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def renew(self) -> None:
        """Extend the leases this instance holds, and remove those whose release
        failed (the heartbeat calls this)."""
        connection = self._connection
        if self._unreleased:
            stale = list(self._unreleased)
            if await connection.call(lambda: connection.client().zrem(self._key, *stale)) \
                    is not None:
                self._unreleased.difference_update(stale)
        leases = list(self.held)
        if not leases:
            return
        renewed = await connection.call(lambda: connection.script(
            "lease_renew", [self._key], [self._lease_ms, *leases]))
        if renewed is not None and int(renewed) < len(leases):
            # Redis was out of reach for longer than lease_ttl: other instances may
            # have taken these slots meanwhile, so the cap may be briefly exceeded.
            log.warning("%s: %d of %d leases had lapsed before they were renewed", self.name,
                        len(leases) - int(renewed), len(leases))

    async def aclose(self) -> None:
        """Give back every lease still held, and wait for the releases under way."""
        self.closed = True
        leases = [*self.held, *self._unreleased]
        self.held.clear()
        self._unreleased.clear()
        if leases:
            connection = self._connection
            await connection.call(lambda: connection.client().zrem(self._key, *leases))
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    def _busy(self, why: str) -> ServiceUnavailable:
        return ServiceUnavailable(f"{self.name} is busy: {why}. Retry shortly.",
                                  code="busy", retry_after=1.0)
