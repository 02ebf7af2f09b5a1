"""Concurrency pools: a provider's workers and buffer, and the gateway-wide cap.

A :class:`Pool` admits ``concurrency`` requests at once. Up to ``buffer`` more
wait in FIFO order; past that a pool with ``drop_excess`` refuses at once (503
with Retry-After, bounded memory under spikes) and one without queues anyway.
Every wait is bounded by ``queue_timeout`` (and by the request's deadline): a
request never queues silently for minutes. Waiting for a slot is not an
upstream failure and never counts against a provider's health.

The fast path (a free slot, nobody waiting) takes no lock and creates no
future. A :class:`Pool` lives in one process; with ``[state] backend = "redis"``
the gateway uses :class:`~sluiceway.state.SharedPool` instead, whose slots every
instance shares.
"""

from __future__ import annotations

import asyncio
import collections
import math
from typing import Protocol

from ..errors import ServiceUnavailable

__all__ = ["Pool", "SlotPool"]


class SlotPool(Protocol):
    """What the runner and the retry loop need of a pool: :class:`Pool` in one
    process, :class:`~sluiceway.state.SharedPool` across instances."""

    name: str
    concurrency: int

    @property
    def active(self) -> int: ...

    @property
    def waiting(self) -> int: ...

    @property
    def available(self) -> int: ...

    def full(self) -> bool: ...

    async def acquire(self, max_wait: float | None = None) -> None: ...

    def release(self) -> None: ...


class Pool:
    """``concurrency`` slots, a FIFO of waiters bounded by ``buffer``."""

    __slots__ = (
        "_waiters",
        "active",
        "buffer",
        "concurrency",
        "drop_excess",
        "name",
        "queue_timeout",
        "refused",
    )

    def __init__(
        self,
        name: str,
        *,
        concurrency: int,
        buffer: int,
        drop_excess: bool = False,
        queue_timeout: float = 10.0,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.name = name
        self.concurrency = concurrency
        self.buffer = buffer
        self.drop_excess = drop_excess
        self.queue_timeout = queue_timeout
        self.active = 0
        self.refused = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @property
    def available(self) -> int:
        """Free slots right now."""
        return max(self.concurrency - self.active, 0)

    def full(self) -> bool:
        """True when a new request would have to wait."""
        return self.active >= self.concurrency or bool(self._waiters)

    async def acquire(self, max_wait: float | None = None) -> None:
        """Take a slot, waiting at most ``min(max_wait, queue_timeout)`` seconds.

        Raises :class:`ServiceUnavailable` (kind ``busy``) when the buffer is
        full and excess is dropped, or when the wait runs out.
        """
        if self.active < self.concurrency and not self._waiters:
            self.active += 1
            return
        if self.drop_excess and len(self._waiters) >= self.buffer:
            self.refused += 1
            raise self._busy("its queue is full")
        wait = self.queue_timeout if max_wait is None else min(max_wait, self.queue_timeout)
        if wait <= 0:
            self.refused += 1
            raise self._busy("no slot is free")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for returns normally when
            # the slot arrives in the same tick as a cancel, and the cancel is lost.
            async with asyncio.timeout(wait):
                await asyncio.shield(waiter)
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                # The slot was handed over just as we gave up: pass it on.
                self.release()
            else:
                waiter.cancel()
                self._remove(waiter)
            if isinstance(exc, TimeoutError):
                self.refused += 1
                raise self._busy(f"no slot came free within {wait:.1f}s") from None
            raise

    def release(self) -> None:
        """Give a slot back: to the first live waiter if there is one."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.active -= 1

    def _remove(self, waiter: asyncio.Future[None]) -> None:
        try:
            self._waiters.remove(waiter)
        except ValueError:
            pass

    def _busy(self, why: str) -> ServiceUnavailable:
        # Advise a retry after roughly one slot's worth of queue, at least 1 s.
        retry_after = max(1.0, math.ceil(len(self._waiters) / max(self.concurrency, 1)))
        return ServiceUnavailable(
            f"{self.name} is busy: {why}. Retry shortly.",
            code="busy",
            retry_after=retry_after,
        )
