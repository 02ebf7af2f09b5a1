"""The in-memory sliding-window counter and concurrency limiter, with an injected clock."""

from __future__ import annotations

import math

import pytest
from sluiceway_limits import (
    Decision,
    InMemoryConcurrency,
    Limiter,
    SlidingWindowCounter,
)


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def counter(clock: Clock) -> SlidingWindowCounter:
    limiter = SlidingWindowCounter(clock)
    assert isinstance(limiter, Limiter)
    return limiter


async def test_limits_window_counts_down_and_refuses_at_the_limit() -> None:
    clock = Clock(1000.0)  # the start of a 10 s window
    limiter = counter(clock)
    seen = [await limiter.reserve("k", 1, 3, 10) for _ in range(4)]
    assert [d.allowed for d in seen] == [True, True, True, False]
    assert [d.remaining for d in seen] == [2, 1, 0, 0]
    assert [d.retry_after for d in seen[:3]] == [0.0, 0.0, 0.0]
    refused = seen[3]
    assert 0 < refused.retry_after < math.inf
    assert refused.reset_after == pytest.approx(20.0)  # this window, then the next decays
    # A refusal counts nothing: a smaller amount later still fits as before.
    assert (await limiter.reserve("k", 0, 3, 10)).remaining == 0
    assert (await limiter.reserve("other", 1, 3, 10)).allowed


async def test_limits_window_weights_the_previous_window_by_its_overlap() -> None:
    clock = Clock(1000.0)
    limiter = counter(clock)
    assert (await limiter.reserve("k", 10, 10, 10)).allowed
    clock.now = 1015.0  # halfway through the next window: half of the 10 still counts
    assert (await limiter.reserve("k", 0, 10, 10)).remaining == 5
    assert not (await limiter.reserve("k", 6, 10, 10)).allowed
    assert (await limiter.reserve("k", 5, 10, 10)).allowed
    clock.now = 1030.0  # two windows later: nothing left
    assert (await limiter.reserve("k", 0, 10, 10)).remaining == 10


@pytest.mark.parametrize(("used", "start"), [(10, 1000.0), (10, 1007.5), (4, 1002.0)])
async def test_limits_window_retry_after_is_when_the_amount_fits(used: int, start: float) -> None:
    clock = Clock(start)
    limiter = counter(clock)
    assert (await limiter.reserve("k", used, 10, 10)).allowed
    clock.now += 3.0
    refused = await limiter.reserve("k", 8, 10, 10)
    assert not refused.allowed
    clock.now += refused.retry_after - 0.05
    assert not (await limiter.reserve("k", 8, 10, 10)).allowed
    clock.now += 0.05
    assert (await limiter.reserve("k", 8, 10, 10)).allowed


async def test_limits_window_amount_over_the_limit_never_fits() -> None:
    limiter = counter(Clock())
    decision = await limiter.reserve("k", 11, 10, 10)
    assert decision == Decision(False, 10, 0.0, math.inf)
    assert len(limiter) == 0
    assert (await limiter.reserve("k", 10, 10, 10)).allowed


async def test_limits_window_adjust_settles_both_ways() -> None:
    clock = Clock(1000.0)
    limiter = counter(clock)
    await limiter.reserve("k", 100, 1000, 10)
    await limiter.adjust("k", -80, 10)  # used 20 of the 100 reserved
    assert (await limiter.reserve("k", 0, 1000, 10)).remaining == 980
    await limiter.adjust("k", 30, 10)  # used more than reserved: counted, unchecked
    assert (await limiter.reserve("k", 0, 1000, 10)).remaining == 950
    clock.now = 1012.0  # the reservation is now in the previous window
    await limiter.adjust("k", -40, 10)
    remaining = (await limiter.reserve("k", 0, 1000, 10)).remaining
    assert remaining > 950
    await limiter.adjust("k", -10_000, 10)  # never below zero
    assert (await limiter.reserve("k", 0, 1000, 10)).remaining == 1000
    await limiter.adjust("gone", -5, 10)  # an evicted key: nothing to give back
    assert (await limiter.reserve("gone", 0, 1000, 10)).remaining == 1000


async def test_limits_window_peeks_create_nothing_and_idle_keys_are_evicted() -> None:
    clock = Clock(1000.0)
    limiter = counter(clock)
    assert (await limiter.reserve("peek", 0, 5, 10)) == Decision(True, 5, 0.0, 0.0)
    assert len(limiter) == 0
    for index in range(100):
        await limiter.reserve(f"key-{index}", 1, 5, 10)
    assert len(limiter) == 100
    clock.now = 1020.0  # two windows later every key is idle
    for _ in range(30):
        await limiter.reserve("busy", 1, 1000, 10)
    assert len(limiter) == 1  # only "busy": a few idle keys go per call


async def test_limits_concurrency_acquire_and_release() -> None:
    slots = InMemoryConcurrency()
    assert await slots.acquire("k", 2)
    assert await slots.acquire("k", 2)
    assert not await slots.acquire("k", 2)
    assert slots.in_flight("k") == 2
    await slots.release("k")
    assert await slots.acquire("k", 2)
    await slots.release("k")
    await slots.release("k")
    assert slots.in_flight("k") == 0
