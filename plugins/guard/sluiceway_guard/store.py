"""The guard's storage interface and its in-memory implementation.

:class:`GuardStore` is the whole contract between the middleware and a backend:
read an address's ban, record a failed authentication (banning on the last
straw), and count a key's request (blocking it past the burst limit). The
in-memory :class:`MemoryGuardStore` serves one process; the Redis backend
(:mod:`sluiceway_guard.redis_store`) shares bans and blocks between processes.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from .options import GuardOptions

__all__ = ["Burst", "GuardStore", "MemoryGuardStore"]

# Expired entries removed per call: keeps every call O(1).
_SWEEP = 8


@dataclass(frozen=True, slots=True)
class Burst:
    """A key's request counted: ``blocked_for`` the seconds its block has left
    (0: the request may go on); ``new`` when this very request caused the block."""

    blocked_for: float
    new: bool = False


@runtime_checkable
class GuardStore(Protocol):
    """Where bans, blocks and their counters live."""

    async def ban_left(self, address: str) -> float:
        """Seconds left of ``address``'s ban; 0 when it is not banned."""
        ...

    async def record_failure(self, address: str) -> float:
        """Count a failed authentication from ``address``; the length of the ban
        it caused (the last straw), else 0."""
        ...

    async def hit(self, key: str) -> Burst:
        """Count one request of ``key``, unless it is blocked already."""
        ...

    async def aclose(self) -> None: ...


class _Expiring:
    """``key -> [expires, count]``, in order of expiry, at most ``max_entries``.

    Every entry of one table lives equally long from when it is (re)set, so
    insertion order is expiry order: the oldest entry is always first, and a
    few expired ones are dropped from the front on every call."""

    __slots__ = ("_items", "max_entries")

    def __init__(self, max_entries: int) -> None:
        self._items: OrderedDict[str, list[float]] = OrderedDict()
        self.max_entries = max_entries

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str, now: float) -> list[float] | None:
        item = self._items.get(key)
        if item is not None and item[0] <= now:
            del self._items[key]
            return None
        return item

    def put(self, key: str, expires: float) -> list[float]:
        self._items.pop(key, None)  # to the end: expiries stay in order
        item = self._items[key] = [expires, 0.0]
        if len(self._items) > self.max_entries:  # full: forget the oldest
            self._items.popitem(last=False)
        return item

    def pop(self, key: str) -> None:
        self._items.pop(key, None)

    def sweep(self, now: float) -> None:
        items = self._items
        for _ in range(_SWEEP):
            if not items:
                return
            key, item = next(iter(items.items()))
            if item[0] > now:
                return
            del items[key]


class MemoryGuardStore:
    """Bans, blocks and counters in this process's memory.

    Counting windows are fixed: one starts at the first failure (or request)
    counted and lasts ``failed_auth_window`` (``burst_window``). Calls never
    await, so each one is atomic on the event loop. Memory is bounded by
    ``max_entries`` per table, and expired entries are dropped as they age.
    """

    def __init__(self, options: GuardOptions, clock: Callable[[], float] = time.monotonic) -> None:
        self.options = options
        self._clock = clock
        size = options.max_entries
        self.failures = _Expiring(size)
        self.bans = _Expiring(size)
        self.bursts = _Expiring(size)
        self.blocks = _Expiring(size)

    def _now(self, *tables: _Expiring) -> float:
        now = self._clock()
        for table in tables:
            table.sweep(now)
        return now

    async def ban_left(self, address: str) -> float:
        return self.ban_left_now(address)

    def ban_left_now(self, address: str) -> float:
        now = self._now(self.bans)
        ban = self.bans.get(address, now)
        return ban[0] - now if ban is not None else 0.0

    async def record_failure(self, address: str) -> float:
        options = self.options
        now = self._now(self.failures, self.bans)
        window = self.failures.get(address, now)
        if window is None:
            window = self.failures.put(address, now + options.failed_auth_window)
        window[1] += 1
        if window[1] < options.max_failed_auth:
            return 0.0
        self.failures.pop(address)
        self.bans.put(address, now + options.ban_for)
        return float(options.ban_for)

    async def hit(self, key: str) -> Burst:
        return self.hit_now(key)

    def hit_now(self, key: str) -> Burst:
        options = self.options
        now = self._now(self.bursts, self.blocks)
        block = self.blocks.get(key, now)
        if block is not None:
            return Burst(block[0] - now)
        window = self.bursts.get(key, now)
        if window is None:
            window = self.bursts.put(key, now + options.burst_window)
        window[1] += 1
        if window[1] <= options.burst_limit:
            return Burst(0.0)
        self.bursts.pop(key)
        self.blocks.put(key, now + options.block_for)
        return Burst(float(options.block_for), new=True)

    def block_left_now(self, key: str) -> float:
        now = self._now(self.blocks)
        block = self.blocks.get(key, now)
        return block[0] - now if block is not None else 0.0

    async def aclose(self) -> None:
        pass
