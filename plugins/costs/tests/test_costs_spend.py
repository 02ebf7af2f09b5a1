"""Spend in memory, with an injected clock: fixed periods aligned to the epoch,
exact integer sums, and nothing kept from a period that ended."""

from __future__ import annotations

import pytest
from sluiceway_costs import UNITS_PER_DOLLAR, MemorySpend, SpendStore, to_units

DAY = 86400.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_costs_memory_spend_sums_exactly_within_a_period() -> None:
    # 2025-01-01T23:00:00Z: an hour before the day's period ends.
    clock = Clock(1735772400.0)
    spend = MemorySpend(clock)
    assert isinstance(spend, SpendStore)
    assert (await spend.read("k", DAY)).units == 0
    for _ in range(10):
        await spend.add("k", to_units(0.1), DAY)
    total = await spend.read("k", DAY)
    # Ten dimes are exactly one dollar here, as they are not in floating point.
    assert total.units == UNITS_PER_DOLLAR and total.dollars == 1.0
    assert total.reset_after == pytest.approx(3600.0)
    assert (await spend.read("other", DAY)).units == 0  # per key

    # Midnight UTC: a new period, the spend starts again.
    clock.now = 1735776000.0
    fresh = await spend.read("k", DAY)
    assert (fresh.units, fresh.reset_after) == (0, DAY)
    assert (await spend.add("k", 5, DAY)).units == 5


async def test_costs_memory_spend_periods_are_aligned_to_the_clock() -> None:
    clock = Clock(1000.25)
    spend = MemorySpend(clock)
    assert (await spend.add("k", 7, 60.0)).reset_after == pytest.approx(19.75)  # 1020
    clock.now = 1019.999
    assert (await spend.read("k", 60.0)).units == 7
    clock.now = 1020.0
    assert (await spend.read("k", 60.0)).units == 0


async def test_costs_memory_spend_forgets_ended_periods() -> None:
    clock = Clock(0.0)
    spend = MemorySpend(clock)
    for n in range(1500):
        await spend.add(f"key-{n}", 1, 10.0)
    clock.now = 10.0  # every key's period has ended
    for n in range(1100):
        await spend.add(f"new-{n}", 1, 10.0)
    # The table was swept when it doubled: only keys of the current period are left.
    assert len(spend._spend) < 1500 + 1100
    assert all(start == 10_000 for start, _ in spend._spend.values())
    assert spend.take("new-0", 10.0) == 1 and spend.take("new-0", 10.0) == 0


def test_costs_to_units_rounds_to_billionths() -> None:
    assert to_units(1.0) == 1_000_000_000
    assert to_units(0.1 + 0.2) == 300_000_000
    assert to_units(4e-10) == 0 and to_units(6e-10) == 1
