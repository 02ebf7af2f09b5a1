"""The Redis backend against a real redis-server: the counter script matches the
in-memory counter, leases expire, two gateway processes share exact limits, and
a Redis that dies mid-run fails open (per-process limits) or closed (503)."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import redis
from sluiceway_api_keys import KeyStore
from sluiceway_limits import (
    Admission,
    ConcurrencyLimiter,
    Decision,
    InMemoryConcurrency,
    Ledger,
    Limiter,
    LimiterLedger,
    LimitsOptions,
    RedisConcurrency,
    RedisLedger,
    RedisLimiter,
    RedisMovingWindow,
    RedisStore,
    SlidingWindowCounter,
)

from sluiceway import ServiceUnavailable
from sluiceway.api import estimate_tokens
from sluiceway.config import validate_options
from sluiceway.testing import GatewayProcess, RedisServer, RunningServer

Start = Callable[..., RunningServer]
Processes = Callable[..., list[GatewayProcess]]
BODY: dict[str, Any] = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}


# --------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------


def test_limits_redis_options_validate_the_storage_scheme() -> None:
    def parse(**options: Any) -> LimitsOptions:
        return validate_options(options, LimitsOptions, source="test", key="plugin.limits")

    assert parse().storage == "memory://"
    options = parse(storage="redis://127.0.0.1:6379/2", lease_ttl="30s",
                    on_storage_error="closed")
    assert (float(options.lease_ttl), options.on_storage_error) == (30.0, "closed")
    for bad in ("mysql://x", "127.0.0.1:6379", "memory://x", "redis://"):
        with pytest.raises(Exception, match="storage"):
            parse(storage=bad)
    with pytest.raises(Exception, match="on_storage_error"):
        parse(on_storage_error="maybe")


# --------------------------------------------------------------------------
# Units against a real Redis
# --------------------------------------------------------------------------


async def test_limits_redis_reserve_and_adjust_match_the_memory_counter(
    redis_server: RedisServer,
) -> None:
    store = RedisStore(redis_server.url, key_prefix="test:")
    try:
        seconds, micros = await store.client().time()
        now = seconds + micros / 1e6
        redis_limiter = RedisLimiter(store)
        memory_limiter = SlidingWindowCounter(lambda: now)  # the same instant as Redis
        assert isinstance(redis_limiter, Limiter)
        window = 3600.0
        script: list[tuple[str, str, int, int]] = [
            *[("reserve", "rpm:k", 1, 3)] * 4,
            ("reserve", "tpm:k", 400, 1000),
            ("reserve", "tpm:k", 500, 1000),
            ("reserve", "tpm:k", 200, 1000),  # 1100 > 1000: refused, nothing counted
            ("adjust", "tpm:k", -300, 0),
            ("reserve", "tpm:k", 200, 1000),  # 600 + 200 fits
            ("reserve", "tpm:k", 0, 1000),  # a read
            ("reserve", "tpm:k", 2000, 1000),  # more than the limit on its own
            ("adjust", "tpm:k", 50, 0),
            ("reserve", "tpm:k", 0, 1000),
            ("adjust", "tpm:k", -5000, 0),  # never below zero
            ("reserve", "tpm:k", 0, 1000),
            ("adjust", "tpm:gone", -10, 0),  # nothing to give back: no key created
            ("reserve", "tpm:gone", 0, 1000),
        ]
        seen: list[tuple[Decision | None, Decision | None]] = []
        for op, key, amount, limit in script:
            if op == "reserve":
                seen.append((await redis_limiter.reserve(key, amount, limit, window),
                             await memory_limiter.reserve(key, amount, limit, window)))
            else:
                await redis_limiter.adjust(key, amount, window)
                await memory_limiter.adjust(key, amount, window)
        for ours, theirs in seen:
            assert ours is not None and theirs is not None
            assert (ours.allowed, ours.remaining) == (theirs.allowed, theirs.remaining)
            assert math.isinf(ours.retry_after) == math.isinf(theirs.retry_after)
            if math.isfinite(ours.retry_after):
                assert ours.retry_after == pytest.approx(theirs.retry_after, abs=1.0)
            assert ours.reset_after == pytest.approx(theirs.reset_after, abs=1.0)
        decisions = [ours for ours, _ in seen if ours is not None]
        assert [d.allowed for d in decisions[:4]] == [True, True, True, False]
        assert [d.remaining for d in decisions[4:]] == [600, 100, 100, 200, 200, 200, 150,
                                                        1000, 1000]
        keys = sorted(k.decode() if isinstance(k, bytes) else k
                      for k in await store.client().keys("test:*"))
        assert len(keys) == 2 and all(k.startswith(("test:{rpm:k}:", "test:{tpm:k}:"))
                                      for k in keys)
        start = int(keys[0].rsplit(":", 1)[1])
        assert start % 3_600_000 == 0  # the window's start in ms, aligned to Redis TIME
        ttl = await store.client().pttl(keys[0])
        assert 0 < ttl <= 7_200_000  # two windows
    finally:
        await store.aclose()


async def test_limits_redis_window_decays_and_frees_up(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url)
    try:
        limiter = RedisLimiter(store)
        window = 0.5
        while [await limiter.reserve("rpm:d", 1, 2, window) for _ in range(3)][-1].allowed:
            pass  # pragma: no cover - only if the three calls straddled a boundary
        refused = await limiter.reserve("rpm:d", 1, 2, window)
        assert not refused.allowed and 0 < refused.retry_after <= 2 * window + 0.01
        await asyncio.sleep(refused.retry_after)
        assert (await limiter.reserve("rpm:d", 1, 2, window)).allowed
    finally:
        await store.aclose()


async def test_limits_redis_leases_are_exact_and_expire(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url, lease_ttl=0.3)
    try:
        crashed = RedisConcurrency(store)
        assert isinstance(crashed, ConcurrencyLimiter)
        assert [await crashed.acquire("k", 2) for _ in range(3)] == [True, True, False]
        survivor = RedisConcurrency(store)  # another process: sees the same slots
        assert not await survivor.acquire("k", 2)
        # "crashed" never releases: its leases expire after lease_ttl.
        await asyncio.sleep(0.4)
        assert await survivor.acquire("k", 2)
        assert await survivor.acquire("k", 2)
        assert not await survivor.acquire("k", 2)
        await survivor.release("k")
        assert await survivor.acquire("k", 2)
        await survivor.release("k")
        await survivor.release("k")
        assert await store.client().zcard("sluiceway:limits:{concurrency:k}") == 0
        await survivor.release("k")  # more releases than acquires: ignored
    finally:
        await store.aclose()


async def test_limits_redis_down_refuses_or_falls_back_but_settles_quietly(
    redis_server: RedisServer,
) -> None:
    closed = RedisStore(redis_server.url, on_storage_error="closed")
    opened = RedisStore(redis_server.url, on_storage_error="open")
    try:
        limiter, slots = RedisLimiter(closed), RedisConcurrency(closed)
        assert (await limiter.reserve("tpm:q", 10, 100, 60)).allowed
        assert await slots.acquire("q", 1)
        fallback_limiter, fallback_slots = RedisLimiter(opened), RedisConcurrency(opened)
        assert (await fallback_limiter.reserve("rpm:q", 1, 1, 60)).allowed
        redis_server.kill()
        # Settling and releasing are best effort: never an error.
        await limiter.adjust("tpm:q", -5, 60)
        await slots.release("q")
        with pytest.raises(ServiceUnavailable) as refused:
            await limiter.reserve("tpm:q", 1, 100, 60)
        assert (refused.value.code, refused.value.status) == ("limits_unavailable", 503)
        with pytest.raises(ServiceUnavailable):
            await slots.acquire("q", 1)
        # Open: this process's memory takes over, and still limits.
        assert [(await fallback_limiter.reserve("rpm:q", 1, 1, 60)).allowed
                for _ in range(2)] == [True, False]
        assert [await fallback_slots.acquire("q", 1) for _ in range(2)] == [True, False]
        await fallback_slots.release("q")
        assert await fallback_slots.acquire("q", 1)
    finally:
        await closed.aclose()
        await opened.aclose()


# --------------------------------------------------------------------------
# Two gateway processes sharing one Redis
# --------------------------------------------------------------------------


def write_config(
    path: Path, redis_url: str, keys_file: Path, ttft: str,
    rpm_strategy: str = "sliding-window-counter",
) -> None:
    path.write_text(
        f"""
[gateway]
plugins = ["mock", "api-keys", "limits"]

[[providers]]
name = "mock"
type = "mock"
models = ["mock-gpt"]
ttft = "{ttft}"

[auth]
chain = ["api-keys"]

[auth.api-keys]
keys_file = "{keys_file}"

[plugin.limits]
storage = "{redis_url}"
window = "1h"
rpm_strategy = "{rpm_strategy}"
""",
        encoding="utf-8",
    )


async def burst(
    gateways: list[GatewayProcess], secret: str, each: int, body: dict[str, Any]
) -> list[httpx.Response]:
    """``each`` requests to every gateway, all at once."""
    headers = {"authorization": f"Bearer {secret}"}
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=200)) as client:
        return await asyncio.gather(*(
            client.post(gateway.base_url + "/chat/completions", json=body, headers=headers)
            for _ in range(each) for gateway in gateways
        ))


def codes(responses: list[httpx.Response]) -> list[str]:
    return [msgspec.json.decode(r.content)["error"]["code"] for r in responses]


async def test_limits_redis_two_processes_share_exact_limits(
    redis_server: RedisServer, tmp_path: Path,
    gateway_processes: Processes,
) -> None:
    keys = KeyStore(tmp_path / "keys.toml")
    rpm_key = keys.create("rpm", rpm=10)
    tpm_key = keys.create("tpm", tpm=3000)
    busy_key = keys.create("busy", max_concurrent=3)
    config = tmp_path / "plugins.toml"
    write_config(config, redis_server.url, tmp_path / "keys.toml", ttft="1500ms")
    gateways = gateway_processes(config, 2)

    responses = await burst(gateways, rpm_key.secret, 20, BODY)
    accepted = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code != 200]
    # Each process alone would admit 10 of its 20: together they admit 10.
    assert len(accepted) == 10
    assert {r.status_code for r in refused} == {429}
    assert set(codes(refused)) == {"rate_limit_exceeded"}
    assert {r.request.url.port for r in refused} == {g.port for g in gateways}

    big = {**BODY, "max_tokens": 1000}
    estimate = estimate_tokens(big, 1024)
    responses = await burst(gateways, tpm_key.secret, 10, big)
    accepted = [r for r in responses if r.status_code == 200]
    assert 1 <= len(accepted) and len(accepted) * estimate <= 3000
    assert len(accepted) == 3000 // estimate  # reserved up front: exactly what fits
    assert set(codes([r for r in responses if r.status_code != 200])) == {
        "rate_limit_exceeded"
    }

    responses = await burst(gateways, busy_key.secret, 10, BODY)
    accepted = [r for r in responses if r.status_code == 200]
    assert len(accepted) == 3
    assert set(codes([r for r in responses if r.status_code != 200])) == {
        "concurrency_limit_exceeded"
    }
    # Every slot was released: a new burst gets three again.
    responses = await burst(gateways, busy_key.secret, 3, BODY)
    assert sum(r.status_code == 200 for r in responses) == 3

    for gateway in gateways:
        assert gateway.stop() == 0, gateway.log.read_text()
        assert "Traceback" not in gateway.log.read_text()


async def test_limits_redis_two_processes_share_an_exact_moving_window(
    redis_server: RedisServer, tmp_path: Path, gateway_processes: Processes,
) -> None:
    keys = KeyStore(tmp_path / "keys.toml")
    rpm_key = keys.create("rpm", rpm=7)
    config = tmp_path / "plugins.toml"
    write_config(config, redis_server.url, tmp_path / "keys.toml", ttft="0ms",
                 rpm_strategy="moving-window")
    gateways = gateway_processes(config, 2)
    responses = await burst(gateways, rpm_key.secret, 15, BODY)
    assert sum(r.status_code == 200 for r in responses) == 7
    refused = [r for r in responses if r.status_code != 200]
    assert set(codes(refused)) == {"rate_limit_exceeded"}
    assert {r.headers["x-ratelimit-remaining-requests"] for r in refused} == {"0"}
    # One sorted set of seven reservations, on Redis's clock.
    client = redis.Redis.from_url(redis_server.url)
    try:
        names = [k.decode() for k in client.keys("sluiceway:limits:{mw:*")]
        assert len(names) == 1 and client.zcard(names[0]) == 7
    finally:
        client.close()


# --------------------------------------------------------------------------
# Redis dies mid-run
# --------------------------------------------------------------------------


def post(server: RunningServer) -> httpx.Response:
    return httpx.post(server.base_url + "/chat/completions", json=BODY, timeout=30)


def test_limits_redis_down_fails_open_to_per_process_limits(
    start: Start, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = start(auth=False, limits={
        "default_rpm": 3, "storage": redis_server.url, "window": "1h",
    })
    assert [post(server).status_code for _ in range(4)] == [200, 200, 200, 429]
    redis_server.kill()
    with caplog.at_level(logging.WARNING, logger="sluiceway.limits"):
        after = [post(server) for _ in range(5)]
    # Still answered, and still limited, by this process's memory.
    assert [r.status_code for r in after] == [200, 200, 200, 429, 429]
    assert codes(after[3:]) == ["rate_limit_exceeded"] * 2
    assert all("Traceback" not in r.text for r in after)
    warnings = [r for r in caplog.records if "Redis storage" in r.getMessage()]
    assert len(warnings) == 1  # at most once per 10 s
    assert "in-memory" in warnings[0].getMessage()


def test_limits_redis_down_fails_closed_with_503(
    start: Start, store: KeyStore, redis_server: RedisServer
) -> None:
    created = store.create("crm", rpm=5, max_concurrent=2)
    server = start(limits={
        "storage": redis_server.url, "on_storage_error": "closed", "lease_ttl": "10s",
    })
    headers = {"authorization": f"Bearer {created.secret}"}

    def call() -> httpx.Response:
        return httpx.post(server.base_url + "/chat/completions", json=BODY, headers=headers,
                          timeout=30)

    assert call().status_code == 200
    redis_server.kill()
    refused = [call() for _ in range(3)]
    for response in refused:
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert "Traceback" not in response.text
    assert codes(refused) == ["limits_unavailable"] * 3


# --------------------------------------------------------------------------
# Sentinel and cluster
# --------------------------------------------------------------------------


@pytest.mark.parametrize("deployment", ["redis_sentinel", "redis_cluster"])
async def test_limits_redis_sentinel_and_cluster_share_exact_limits(
    deployment: str, request: pytest.FixtureRequest
) -> None:
    server: RedisServer = request.getfixturevalue(deployment)
    assert server.url.startswith(("redis+sentinel://", "redis+cluster://"))
    options = validate_options({"storage": server.url}, LimitsOptions, source="test",
                               key="plugin.limits")
    # A generous timeout: the cluster may still be settling on a busy machine.
    stores = [RedisStore(options.storage, on_storage_error="closed", timeout=5.0)
              for _ in range(2)]
    try:
        counters = [RedisLimiter(store) for store in stores]
        windows = [RedisMovingWindow(store) for store in stores]
        slots = [RedisConcurrency(store) for store in stores]
        # Two "processes" at once: exactly the limit between them, for each kind.
        decisions = await asyncio.gather(*(
            counters[n % 2].reserve("tpm:c", 100, 500, 60) for n in range(10)))
        assert sum(d.allowed for d in decisions) == 5
        decisions = await asyncio.gather(*(
            windows[n % 2].reserve("rpm:c", 1, 4, 60) for n in range(10)))
        assert sum(d.allowed for d in decisions) == 4
        acquired = await asyncio.gather(*(slots[n % 2].acquire("c", 3) for n in range(10)))
        assert sum(acquired) == 3
        await counters[0].adjust("tpm:c", -200, 60)
        assert (await counters[1].reserve("tpm:c", 0, 500, 60)).remaining == 200
        for n, got in enumerate(acquired):
            if got:
                await slots[n % 2].release("c")
        assert await slots[1].acquire("c", 1)
    finally:
        for store in stores:
            await store.aclose()


# --------------------------------------------------------------------------
# The ledger: admission and settlement in one script each
# --------------------------------------------------------------------------


@pytest.mark.parametrize("deployment", ["redis_server", "redis_cluster"])
async def test_limits_redis_ledger_matches_the_memory_ledger(
    deployment: str, request: pytest.FixtureRequest
) -> None:
    server: RedisServer = request.getfixturevalue(deployment)
    store = RedisStore(server.url, key_prefix="ledger:", timeout=5.0)
    try:
        ours = RedisLedger(store)
        theirs = LimiterLedger(SlidingWindowCounter(), SlidingWindowCounter(),
                               InMemoryConcurrency())
        assert isinstance(ours, Ledger) and isinstance(theirs, Ledger)
        limits: dict[str, Any] = {"rpm": 3, "tpm": 1000, "max_concurrent": 2, "window": 3600}
        held: list[tuple[Admission, Admission]] = []
        outcomes = []
        for estimate in (400, 300, 100):  # the third: two in flight already
            pair = (await ours.admit("k", estimate=estimate, **limits),
                    await theirs.admit("k", estimate=estimate, **limits))
            outcomes.append(pair)
            if pair[0].refused is None:
                held.append(pair)
        for a, b in outcomes:
            assert a.refused == b.refused
            for x, y in ((a.requests, b.requests), (a.tokens, b.tokens)):
                assert x is not None and y is not None
                assert (x.allowed, x.remaining) == (y.allowed, y.remaining)
                assert math.isinf(x.retry_after) == math.isinf(y.retry_after)
        assert [a.refused for a, _ in outcomes] == [None, None, "concurrency"]
        # Settle the first with less than it reserved, release both.
        first, second = held
        settled = [await ours.finish("k", first[0], tokens_delta=-350, tpm=1000,
                                     window=3600, release=True),
                   await theirs.finish("k", first[1], tokens_delta=-350, tpm=1000,
                                       window=3600, release=True)]
        assert settled[0] is not None and settled[1] is not None
        assert settled[0].remaining == settled[1].remaining == 1000 - 50 - 300
        for mine, other in (second,):
            await ours.finish("k", mine, tokens_delta=0, tpm=None, window=3600, release=True)
            await theirs.finish("k", other, tokens_delta=0, tpm=None, window=3600,
                                release=True)
        # Slots are free again; a request larger than the limit can never fit.
        too_big = await ours.admit("k", estimate=2000, **limits)
        assert too_big.refused == "tokens_exceed"
        # The third request (rpm) fits, the fourth does not.
        third = await ours.admit("k", estimate=10, **limits)
        assert third.refused is None and third.requests is not None
        assert third.requests.remaining == 0
        fourth = await ours.admit("k", estimate=10, **limits)
        assert fourth.refused == "requests" and fourth.requests is not None
        assert 0 < fourth.requests.retry_after < math.inf
        # Refused: nothing taken, so the tokens are as the third left them.
        assert fourth.tokens is not None and fourth.tokens.remaining == 1000 - 50 - 300 - 10
        # One hash tag for all of a key's state: one cluster slot per script.
        client: Any = store.client()
        everywhere = ({"target_nodes": client.get_primaries()} if deployment == "redis_cluster"
                      else {})
        names = sorted(k.decode() for k in await client.keys("ledger:*", **everywhere))
        assert names and all(name.startswith("ledger:{k}:") for name in names)
    finally:
        await store.aclose()
