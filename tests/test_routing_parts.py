"""Pools, breakers and routing strategies, each on its own."""

from __future__ import annotations

import asyncio
import math
import random
from collections import Counter
from typing import Any

import pytest

import sluiceway
from sluiceway.calls.health import BreakerSettings, DeploymentHealth
from sluiceway.calls.pools import Pool
from sluiceway.calls.router import Deployment
from sluiceway.calls.strategies import make_strategy, prompt_prefix


def _request(text: str, system: str = "You are helpful.") -> sluiceway.ChatRequest:
    messages = [{"role": "system", "content": system}, {"role": "user", "content": text}]
    return sluiceway.ChatRequest({"model": "m", "messages": messages}, model="m", messages=messages)


def _deployments(*weights: float, provider: Any = None) -> list[Deployment]:
    pool = Pool("p", concurrency=10, buffer=10)
    return [
        Deployment(f"p{i}", provider, f"model-{i}", pool, DeploymentHealth(), weight)
        for i, weight in enumerate(weights)
    ]


# --- pools -------------------------------------------------------------------------


async def test_pool_admits_up_to_concurrency_then_queues_in_order() -> None:
    pool = Pool("p", concurrency=2, buffer=10)
    await pool.acquire()
    await pool.acquire()
    assert pool.available == 0
    order: list[int] = []

    async def wait(i: int) -> None:
        await pool.acquire()
        order.append(i)

    waiters = [asyncio.create_task(wait(i)) for i in range(3)]
    await asyncio.sleep(0)
    assert pool.waiting == 3
    pool.release()
    pool.release()
    for _ in range(20):  # a handed-over slot takes a few loop turns to reach its task
        await asyncio.sleep(0)
    assert order == [0, 1]
    pool.release()
    await asyncio.gather(*waiters)
    assert order == [0, 1, 2]
    assert pool.active == 2


async def test_pool_drops_excess_at_once_when_asked() -> None:
    pool = Pool("provider 'x'", concurrency=1, buffer=1, drop_excess=True)
    await pool.acquire()
    queued = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0)
    with pytest.raises(sluiceway.ServiceUnavailable) as info:
        await pool.acquire()
    assert info.value.code == "busy"
    assert info.value.kind == "busy"
    assert info.value.headers["retry-after"] == "1"
    assert "provider 'x' is busy: its queue is full" in info.value.message
    pool.release()
    await queued
    assert pool.refused == 1


async def test_pool_wait_is_bounded_and_a_timed_out_waiter_leaves_no_trace() -> None:
    pool = Pool("p", concurrency=1, buffer=10, queue_timeout=0.05)
    await pool.acquire()
    with pytest.raises(sluiceway.ServiceUnavailable) as info:
        await pool.acquire()
    assert "no slot came free within 0.1s" in info.value.message
    assert pool.waiting == 0
    pool.release()
    assert pool.active == 0


async def test_a_cancelled_waiter_does_not_leak_a_slot() -> None:
    pool = Pool("p", concurrency=1, buffer=10)
    await pool.acquire()
    waiter = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    pool.release()  # handed to the cancelled waiter, which must pass it on
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert pool.active == 0 and pool.waiting == 0
    await pool.acquire()
    assert pool.active == 1


async def test_a_cancel_in_the_tick_a_slot_is_handed_over_is_not_lost() -> None:
    pool = Pool("p", concurrency=1, buffer=10)
    await pool.acquire()
    waiter = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0)
    pool.release()  # hands the slot to the waiter...
    waiter.cancel()  # ...and the client hangs up in the same tick
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert pool.active == 0  # the slot was passed on, not kept by a cancelled task


# --- breaker -----------------------------------------------------------------------


def test_breaker_opens_after_failures_in_the_window_and_probes_once() -> None:
    health = DeploymentHealth(BreakerSettings(failures=3, window=10, cooldown=5))
    for at in (0.0, 1.0):
        health.claim()
        health.finish()
        health.record_failure(now=at)
    assert health.available(now=2.0)
    health.record_failure(now=2.0)
    assert health.state == "open"
    assert not health.admit(now=6.9)
    assert health.admit(now=7.1)  # half-open: this request is the one probe
    assert not health.admit(now=7.1)  # a second one in the same instant is refused
    health.claim()
    health.record_success(0.5)
    health.finish()
    assert health.state == "closed" and health.available(now=7.3)


def test_failures_outside_the_window_do_not_count() -> None:
    health = DeploymentHealth(BreakerSettings(failures=2, window=10, cooldown=5))
    health.record_failure(now=0.0)
    health.record_failure(now=11.0)
    assert health.state == "closed"


def test_a_failed_probe_doubles_the_rest() -> None:
    health = DeploymentHealth(BreakerSettings(failures=1, window=10, cooldown=5, max_cooldown=60))
    health.record_failure(now=0.0)
    assert health.open_until == 5.0
    assert health.admit(now=5.0)
    health.claim()
    health.record_failure(now=5.0)
    assert health.open_until == 15.0  # 5 s doubled


def test_failures_that_land_while_resting_do_not_lengthen_the_rest() -> None:
    health = DeploymentHealth(BreakerSettings(failures=2, window=10, cooldown=5))
    for at in range(100):  # a burst of in-flight requests failing one after another
        health.record_failure(now=at * 0.01)
    assert health.state == "open"
    assert health.open_until == pytest.approx(5.01)


def test_an_admitted_request_that_is_not_sent_frees_the_probe() -> None:
    health = DeploymentHealth(BreakerSettings(failures=1, window=10, cooldown=5))
    health.record_failure(now=0.0)
    assert health.admit(now=6.0)
    health.record_neutral()  # e.g. the pool was full
    assert health.admit(now=6.0)


def test_a_rest_is_never_longer_than_max_cooldown() -> None:
    health = DeploymentHealth(BreakerSettings(failures=1, window=10, cooldown=5, max_cooldown=60))
    health.record_failure("rate_limit", rest_for=86400.0, now=0.0)
    assert health.open_until == 60.0


def test_a_rate_limit_rests_at_least_as_long_as_retry_after() -> None:
    health = DeploymentHealth(BreakerSettings(failures=1, window=10, cooldown=5))
    health.record_failure("rate_limit", rest_for=20.0, now=0.0)
    assert health.open_until == 20.0
    assert health.open_reason == "rate_limit"


def test_latency_is_a_moving_average() -> None:
    health = DeploymentHealth()
    health.record_success(1.0)
    health.record_success(2.0)
    assert health.latency == pytest.approx(1.2)


# --- strategies --------------------------------------------------------------------


def test_fallback_keeps_the_configured_order() -> None:
    items = _deployments(1, 1, 1)
    assert make_strategy("fallback", items)(_request("x")) == items


def test_weighted_spreads_by_weight_within_tolerance() -> None:
    items = _deployments(1, 3, 6)
    strategy = make_strategy("weighted", items, random.Random(1234))
    n = 1000
    firsts = Counter(strategy(_request("x"))[0].provider_name for _ in range(n))
    for item in items:
        p = item.weight / 10
        expected, sigma = n * p, math.sqrt(n * p * (1 - p))
        # Four standard deviations: fails about once in 16,000 runs by chance.
        assert abs(firsts[item.provider_name] - expected) < 4 * sigma, firsts
    order = strategy(_request("x"))
    assert sorted(d.provider_name for d in order) == ["p0", "p1", "p2"]


def test_least_busy_and_lowest_latency() -> None:
    items = _deployments(1, 1, 1)
    items[0].health.inflight, items[1].health.inflight, items[2].health.inflight = 5, 1, 3
    assert [d.provider_name for d in make_strategy("least-busy", items)(_request("x"))] == [
        "p1",
        "p2",
        "p0",
    ]
    items[0].health.latency, items[2].health.latency = 0.9, 0.2
    # p1 has no measurement yet: it goes first, so that it gets one.
    assert [d.provider_name for d in make_strategy("lowest-latency", items)(_request("x"))] == [
        "p1",
        "p2",
        "p0",
    ]


def test_prefix_affinity_sends_equal_prefixes_to_one_deployment() -> None:
    items = _deployments(1, 1, 1, 1)
    strategy = make_strategy("prefix-affinity", items)
    shared = "You are a code reviewer. " * 200  # longer than the prefix that counts
    owners = {
        strategy(_request(f"question {i}", system=shared))[0].provider_name for i in range(50)
    }
    assert len(owners) == 1
    spread = Counter(
        strategy(_request("q", system=f"tenant {i}"))[0].provider_name for i in range(2000)
    )
    assert len(spread) == 4 and min(spread.values()) > 300  # different prefixes spread out


def test_prefix_affinity_moves_few_prefixes_when_a_replica_is_added() -> None:
    four = _deployments(1, 1, 1, 1)
    five = [*four, *_deployments(1)[:0]]
    pool = four[0].pool
    five.append(Deployment("p4", None, "model-4", pool, DeploymentHealth()))  # type: ignore[arg-type]
    before = make_strategy("prefix-affinity", four)
    after = make_strategy("prefix-affinity", five)
    prompts = [_request("q", system=f"tenant {i}") for i in range(2000)]
    moved = sum(before(r)[0].provider_name != after(r)[0].provider_name for r in prompts)
    # Ideal consistent hashing moves 1/5 of the keys; modulo hashing would move ~4/5.
    assert moved < 0.3 * len(prompts)
    assert all(
        before(r)[0].provider_name == after(r)[0].provider_name
        for r in prompts
        if after(r)[0].provider_name != "p4"
    )


def test_prompt_prefix_reads_text_parts_and_stops_early() -> None:
    request = sluiceway.ChatRequest(
        {},
        model="m",
        messages=[{"role": "user", "content": [{"type": "text", "text": "a" * 5000}]}],
    )
    assert prompt_prefix(request) == ("user:" + "a" * 5000)[:2048].encode()
