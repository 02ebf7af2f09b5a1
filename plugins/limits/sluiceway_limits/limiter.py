"""The limiter interface and its in-memory implementations.

:class:`Limiter` is the whole contract between the middleware and a backend:
``reserve`` takes capacity up front (all or nothing), ``adjust`` settles it later
by the difference between what was used and what was reserved. The in-memory
:class:`SlidingWindowCounter` serves one process; a Redis backend implements the
same two calls (one Lua script each) to share limits between processes.

:class:`ConcurrencyLimiter` counts requests in flight per key the same way.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = [
    "ConcurrencyLimiter",
    "Decision",
    "InMemoryConcurrency",
    "Limiter",
    "SlidingWindowCounter",
]

# A client told to come back at the exact instant would sometimes be a hair
# early (float rounding, truncated retry-after-ms): add a millisecond.
_MARGIN = 0.001
# The weighted count is a float: 10 x 0.7 may come out as 7.000000000000001,
# which must not refuse the request that makes it exactly 10.
_EPSILON = 1e-9
# Idle keys checked for eviction per call: keeps every call O(1).
_SWEEP = 4


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to a reservation.

    ``remaining`` is the capacity left after it (whole units, never negative);
    ``reset_after`` the seconds until the key's usage is back to zero;
    ``retry_after`` the seconds until this ``amount`` would fit (0 when allowed,
    ``math.inf`` when it exceeds the limit on its own, so waiting cannot help).
    """

    allowed: bool
    remaining: int
    reset_after: float
    retry_after: float


@runtime_checkable
class Limiter(Protocol):
    """A windowed counter per key that supports reserve-then-settle.

    ``reserve`` is atomic: it counts ``amount`` only if it fits under ``limit``
    in the current ``window`` (seconds), otherwise it counts nothing. ``amount``
    0 reads the state without changing it. ``adjust`` adds ``delta`` (negative
    to give capacity back) without checking the limit.
    """

    async def reserve(self, key: str, amount: int, limit: int, window: float) -> Decision: ...

    async def adjust(self, key: str, delta: int, window: float) -> None: ...


@runtime_checkable
class ConcurrencyLimiter(Protocol):
    """Requests in flight per key: ``acquire`` is all or nothing; every successful
    ``acquire`` is paired with one ``release``."""

    async def acquire(self, key: str, limit: int) -> bool: ...

    async def release(self, key: str) -> None: ...


class _Counter:
    """Two fixed buckets of one key: the current window and the one before."""

    __slots__ = ("current", "expires", "index", "previous", "window")

    def __init__(self, window: float, index: int) -> None:
        self.window = window
        self.index = index
        self.current = 0
        self.previous = 0
        self.expires = (index + 2) * window

    def roll(self, now: float) -> float:
        """Move to the window containing ``now``; the fraction of it elapsed."""
        index = math.floor(now / self.window)
        if index != self.index:
            self.previous = self.current if index == self.index + 1 else 0
            self.current = 0
            self.index = index
        # Both buckets are empty two windows after the last touch.
        self.expires = (index + 2) * self.window
        return now / self.window - index

    def used(self, elapsed: float) -> float:
        """The standard approximation: the previous window weighted by how much
        of it still overlaps the sliding window, plus the current one."""
        return self.previous * (1.0 - elapsed) + self.current

    def reset_after(self, elapsed: float) -> float:
        left = (1.0 - elapsed) * self.window
        if self.current > 0:
            return left + self.window
        return left if self.previous > 0 else 0.0

    def wait_for(self, amount: int, limit: int, elapsed: float) -> float:
        """Seconds until ``amount`` fits, with no other traffic meanwhile."""
        room = limit - amount  # the usage that must not be exceeded beforehand
        if self.current <= room:
            # Fits within this window, once the previous one has decayed enough.
            target = 1.0 - (room - self.current) / self.previous
            return max(target - elapsed, 0.0) * self.window + _MARGIN
        # The current bucket becomes the previous one and has to decay.
        target = 1.0 - room / self.current
        return ((1.0 - elapsed) + target) * self.window + _MARGIN


class SlidingWindowCounter:
    """In-memory sliding-window counter: O(1) per call, about 100 bytes per key.

    Windows are aligned to the clock (``floor(now / window)``), as in the
    ``limits`` library. Keys idle for two windows hold nothing and are evicted
    a few at a time, so memory is bounded by the keys active recently. One
    process only: calls never await, so each one is atomic on the event loop.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._counters: OrderedDict[str, _Counter] = OrderedDict()

    def __len__(self) -> int:
        return len(self._counters)

    def _counter(self, key: str, window: float, now: float, create: bool) -> _Counter | None:
        self._evict(now)  # first: a key found after this holds live counts
        counter = self._counters.get(key)
        if counter is not None and counter.window != window:
            counter = None  # the window changed: start over
        if counter is None:
            if not create:
                return None
            counter = _Counter(window, math.floor(now / window))
            self._counters[key] = counter
        self._counters.move_to_end(key)
        return counter

    def _evict(self, now: float) -> None:
        for _ in range(_SWEEP):
            if not self._counters:
                return
            key, oldest = next(iter(self._counters.items()))
            if oldest.expires > now:
                return
            del self._counters[key]

    async def reserve(self, key: str, amount: int, limit: int, window: float) -> Decision:
        now = self._clock()
        counter = self._counter(key, window, now, create=0 < amount <= limit)
        if counter is None:  # nothing counted: all the capacity is there
            fits = amount <= limit
            return Decision(fits, max(limit - amount, 0) if fits else limit, 0.0,
                            0.0 if fits else math.inf)
        elapsed = counter.roll(now)
        used = counter.used(elapsed)
        if amount > limit:
            allowed, retry = False, math.inf
        elif used + amount <= limit + _EPSILON:
            counter.current += amount
            used += amount
            allowed, retry = True, 0.0
        else:
            allowed, retry = False, counter.wait_for(amount, limit, elapsed)
        remaining = max(math.floor(limit - used + _EPSILON), 0)
        return Decision(allowed, remaining, counter.reset_after(elapsed), retry)

    async def adjust(self, key: str, delta: int, window: float) -> None:
        if delta == 0:
            return
        now = self._clock()
        counter = self._counter(key, window, now, create=delta > 0)
        if counter is None:  # expired meanwhile: nothing left to give back
            return
        counter.roll(now)
        counter.current += delta
        if counter.current < 0:  # the reservation was counted in the previous window
            counter.previous = max(counter.previous + counter.current, 0)
            counter.current = 0


class InMemoryConcurrency:
    """Requests in flight per key, in this process; keys at zero are dropped."""

    def __init__(self) -> None:
        self._in_flight: dict[str, int] = {}

    def in_flight(self, key: str) -> int:
        return self._in_flight.get(key, 0)

    async def acquire(self, key: str, limit: int) -> bool:
        count = self._in_flight.get(key, 0)
        if count >= limit:
            return False
        self._in_flight[key] = count + 1
        return True

    async def release(self, key: str) -> None:
        count = self._in_flight.get(key, 0) - 1
        if count > 0:
            self._in_flight[key] = count
        else:
            self._in_flight.pop(key, None)
