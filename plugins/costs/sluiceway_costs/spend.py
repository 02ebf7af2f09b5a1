"""Spend per key and period: in this process's memory, or in Redis.

Spend is counted in whole billionths of a dollar (:data:`UNITS_PER_DOLLAR`),
so that adding is exact and atomic (``INCRBY``). Periods are fixed windows
aligned to the clock: ``floor(now / period)``, in UTC since the epoch (so
``"1d"`` starts at midnight UTC); in Redis, to Redis ``TIME``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from sluiceway.api import OnStorageError, RedisConnection

__all__ = [
    "UNITS_PER_DOLLAR",
    "MemorySpend",
    "RedisSpend",
    "Spend",
    "SpendStore",
    "period_ms",
    "to_units",
]

log = logging.getLogger("sluiceway.costs")

# Spend is kept in billionths of a dollar: exact integer sums, in Redis too.
UNITS_PER_DOLLAR = 1_000_000_000


def to_units(dollars: float) -> int:
    """US dollars as whole spend units (rounded to the nearest)."""
    return round(dollars * UNITS_PER_DOLLAR)


def period_ms(period: float) -> int:
    """A period in whole milliseconds (at least 1)."""
    return max(round(period * 1000), 1)


@dataclass(frozen=True, slots=True)
class Spend:
    """A key's spend in the current period, and the seconds until that period ends."""

    units: int
    reset_after: float

    @property
    def dollars(self) -> float:
        return self.units / UNITS_PER_DOLLAR


@runtime_checkable
class SpendStore(Protocol):
    """Where spend is kept. ``read`` may raise
    :class:`sluiceway.ServiceUnavailable` (storage down, policy ``"closed"``);
    ``add`` never raises for a storage failure."""

    async def read(self, key: str, period: float) -> Spend: ...

    async def add(self, key: str, units: int, period: float) -> Spend: ...

    def lifespan(self) -> AbstractAsyncContextManager[None]: ...


class MemorySpend:
    """Spend per key in this process: the current period's total per key. A key's
    total from an earlier period is dropped when it is next touched, and swept
    out when the table has doubled since the last sweep."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        # key -> (start of its period in ms since the epoch, units)
        self._spend: dict[str, tuple[int, int]] = {}
        self._kept = 0

    def window(self, period: float) -> tuple[int, int]:
        """``(start, now)`` of the current period, in ms since the epoch."""
        length = period_ms(period)
        now = math.floor(self.clock() * 1000)
        return now - now % length, now

    def peek(self, key: str, period: float) -> Spend:
        start, now = self.window(period)
        entry = self._spend.get(key)
        units = entry[1] if entry is not None and entry[0] == start else 0
        return Spend(units, (start + period_ms(period) - now) / 1000)

    def charge(self, key: str, units: int, period: float) -> Spend:
        start, now = self.window(period)
        entry = self._spend.get(key)
        total = units + (entry[1] if entry is not None and entry[0] == start else 0)
        self._spend[key] = (start, total)
        if len(self._spend) > max(2 * self._kept, 1024):
            self._spend = {k: v for k, v in self._spend.items() if v[0] == start}
            self._kept = len(self._spend)
        return Spend(total, (start + period_ms(period) - now) / 1000)

    def take(self, key: str, period: float) -> int:
        """Remove and return the key's units of the current period."""
        start, _ = self.window(period)
        entry = self._spend.pop(key, None)
        return entry[1] if entry is not None and entry[0] == start else 0

    async def read(self, key: str, period: float) -> Spend:
        return self.peek(key, period)

    async def add(self, key: str, units: int, period: float) -> Spend:
        return self.charge(key, units, period)

    def lifespan(self) -> AbstractAsyncContextManager[None]:
        return contextlib.nullcontext()


# KEYS[1]: the key's prefix, ``<prefix>{<key_id>}``. ARGV[1]: the period (ms).
# Returns {units spent this period, period start (ms), now (ms)} on Redis's clock.
_WINDOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local period = tonumber(ARGV[1])
local start = now - (now % period)
local key = KEYS[1] .. ':' .. ARGV[1] .. ':' .. string.format('%d', start)
"""

READ = _WINDOW + """
return {tonumber(redis.call('GET', key) or '0'), start, now}
"""

# ARGV[2]: the units to add. The total is kept one period after its own ends.
ADD = _WINDOW + """
local spent = redis.call('INCRBY', key, ARGV[2])
redis.call('PEXPIRE', key, start + 2 * period - now)
return {spent, start, now}
"""


class RedisSpend:
    """Spend in Redis, shared by every process that uses it: one string per key
    and period, ``<key_prefix>{<key_id>}:<period ms>:<period start ms>``,
    read by one script and added to by another (one round trip each).

    When Redis fails, ``read`` raises 503 (``"closed"``) or answers from what
    this process knows (``"open"``): the total it last saw in Redis for the
    period, plus what it charged since. A charge that fails is kept in the
    process and added to Redis with the key's next charge of the same period,
    so an outage loses nothing unless the process stops before Redis is back.
    """

    def __init__(
        self,
        url: str,
        *,
        key_prefix: str = "sluiceway:costs:",
        on_storage_error: OnStorageError = "open",
        timeout: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.connection = RedisConnection(
            url, what="costs", logger=log, key_prefix=key_prefix,
            on_storage_error=on_storage_error, unavailable_code="costs_unavailable",
            unavailable_message=(
                "Budgets cannot be checked right now: their storage is unavailable."),
            timeout=timeout,
        )
        self.connection.add_script("read", READ)
        self.connection.add_script("add", ADD)
        # Charges not in Redis yet (it failed when they were made).
        self.pending = MemorySpend(clock)
        # key -> (period start ms, units): the total last seen in Redis.
        self._seen: dict[str, tuple[int, int]] = {}

    def lifespan(self) -> AbstractAsyncContextManager[None]:
        """Closes the client (created on first use) at shutdown."""
        return self.connection.lifespan()

    async def aclose(self) -> None:
        await self.connection.aclose()

    def _offline(self, key: str, period: float) -> Spend:
        local = self.pending.peek(key, period)
        start, _ = self.pending.window(period)
        seen = self._seen.get(key)
        base = seen[1] if seen is not None and seen[0] == start else 0
        return Spend(base + local.units, local.reset_after)

    def _online(self, key: str, period: float, reply: list[object]) -> Spend:
        units, start, now = (int(value) for value in reply)  # type: ignore[call-overload]
        self._seen[key] = (start, units)
        pending = self.pending.peek(key, period).units
        return Spend(units + pending, (start + period_ms(period) - now) / 1000)

    async def read(self, key: str, period: float) -> Spend:
        connection = self.connection
        reply = await connection.call(lambda: connection.script(
            "read", [connection.key(key)], [period_ms(period)]))
        if reply is None:
            if connection.on_storage_error == "closed":
                raise connection.unavailable()
            return self._offline(key, period)
        return self._online(key, period, reply)

    async def add(self, key: str, units: int, period: float) -> Spend:
        # Finishes even if the request is cancelled meanwhile.
        return await asyncio.shield(self._add(key, units, period))

    async def _add(self, key: str, units: int, period: float) -> Spend:
        total = units + self.pending.take(key, period)
        if total == 0:
            return await self._read_quietly(key, period)
        connection = self.connection
        reply = await connection.call(lambda: connection.script(
            "add", [connection.key(key)], [period_ms(period), total]))
        if reply is None:
            self.pending.charge(key, total, period)
            return self._offline(key, period)
        return self._online(key, period, reply)

    async def _read_quietly(self, key: str, period: float) -> Spend:
        connection = self.connection
        reply = await connection.call(lambda: connection.script(
            "read", [connection.key(key)], [period_ms(period)]))
        if reply is None:
            return self._offline(key, period)
        return self._online(key, period, reply)
