"""The Redis backend against a real redis-server: the keys it writes, two gateway
processes sharing bans and blocks, and a Redis that dies mid-run failing open
(per-process guard) or closed (503)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sluiceway_api_keys import KeyStore
from sluiceway_guard import GuardOptions, GuardStore, MemoryGuardStore, RedisGuardStore

from sluiceway import ServiceUnavailable
from sluiceway.config import validate_options
from sluiceway.testing import GatewayProcess, RedisServer, RunningServer

Start = Callable[..., RunningServer]
Processes = Callable[..., list[GatewayProcess]]
WriteConfig = Callable[..., Path]
BODY: dict[str, Any] = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}
BAD_KEY = "sk-not-a-real-key-0123456789abcdef"


def options(**values: Any) -> GuardOptions:
    return validate_options(values, GuardOptions, source="test", key="plugin.guard")


def headers(key: str | None, forwarded_for: str | None = None) -> dict[str, str]:
    # One connection per request: see client_headers in test_guard_gateway.py.
    found = {"connection": "close"}
    if key is not None:
        found["authorization"] = f"Bearer {key}"
    if forwarded_for is not None:
        found["x-forwarded-for"] = forwarded_for
    return found


def post(base_url: str, key: str | None, forwarded_for: str | None = None) -> httpx.Response:
    return httpx.post(base_url + "/chat/completions", json=BODY,
                      headers=headers(key, forwarded_for), timeout=30)


def code(response: httpx.Response) -> str:
    error: str = response.json()["error"]["code"]
    return error


# --------------------------------------------------------------------------
# The store against a real Redis
# --------------------------------------------------------------------------


async def test_guard_redis_store_bans_and_blocks_with_expiring_keys(
    redis_server: RedisServer,
) -> None:
    store = RedisGuardStore(options(
        storage=redis_server.url, key_prefix="test:", max_failed_auth=3,
        failed_auth_window="5m", ban_for="15m", burst_rps=2, burst_window="1m", block_for="5m",
    ))
    assert isinstance(store, GuardStore)
    redis = store.client()
    try:
        assert [await store.record_failure("203.0.113.7") for _ in range(2)] == [0.0, 0.0]
        assert await redis.get("test:{ip:203.0.113.7}:fail") == b"2"
        assert 0 < await redis.pttl("test:{ip:203.0.113.7}:fail") <= 300_000
        assert await store.ban_left("203.0.113.7") == 0.0
        assert await store.record_failure("203.0.113.7") == 900.0
        assert await redis.exists("test:{ip:203.0.113.7}:fail") == 0  # the count starts over
        assert 899_000 < await redis.pttl("test:{ip:203.0.113.7}:ban") <= 900_000
        assert 899 < await store.ban_left("203.0.113.7") <= 900
        assert await store.ban_left("203.0.113.8") == 0.0

        hits = [await store.hit("key_a") for _ in range(130)]
        assert [h.blocked_for for h in hits[:120]] == [0.0] * 120  # 2 rps x 60 s
        assert (hits[120].blocked_for, hits[120].new) == (300.0, True)
        assert all(0 < h.blocked_for <= 300 and not h.new for h in hits[121:])
        assert 0 < await redis.pttl("test:{key:key_a}:block") <= 300_000
        assert (await store.hit("key_b")).blocked_for == 0.0

        # An operator bans by hand (no expiry: as long as it stays), and unbans.
        await redis.set("test:{ip:198.51.100.1}:ban", "1")
        assert await store.ban_left("198.51.100.1") == 900.0
        await redis.delete("test:{ip:203.0.113.7}:ban")
        assert await store.ban_left("203.0.113.7") == 0.0
        keys = sorted(k.decode() for k in await redis.keys("test:*"))
        assert keys == ["test:{ip:198.51.100.1}:ban", "test:{key:key_a}:block",
                        "test:{key:key_b}:burst"]
    finally:
        await store.aclose()


async def test_guard_redis_store_down_falls_back_or_refuses(redis_server: RedisServer) -> None:
    opened = RedisGuardStore(options(storage=redis_server.url, max_failed_auth=2, burst_rps=1))
    closed = RedisGuardStore(options(storage=redis_server.url, max_failed_auth=2, burst_rps=1,
                                     on_storage_error="closed"))
    try:
        assert await opened.record_failure("a") == 0.0
        assert await closed.ban_left("a") == 0.0
        redis_server.kill()
        # Closed: checks refuse; recording a failure is best effort, never an error.
        with pytest.raises(ServiceUnavailable) as refused:
            await closed.ban_left("a")
        assert (refused.value.status, refused.value.code) == (503, "guard_unavailable")
        assert refused.value.headers["retry-after"] == "1"
        with pytest.raises(ServiceUnavailable):
            await closed.hit("k")
        assert await closed.record_failure("a") == 0.0
        # Open: this process's memory takes over, and still bans and blocks.
        assert await opened.ban_left("a") == 0.0
        assert [await opened.record_failure("a") for _ in range(2)] == [0.0, 900.0]
        assert await opened.ban_left("a") == pytest.approx(900.0)
        assert [(await opened.hit("k")).blocked_for for _ in range(2)] == [0.0, 300.0]
    finally:
        await opened.aclose()
        await closed.aclose()


async def test_guard_redis_store_keeps_bans_made_in_memory_during_an_outage(
    redis_server: RedisServer,
) -> None:
    settings = options(storage=redis_server.url, max_failed_auth=1, burst_rps=1)
    fallback = MemoryGuardStore(settings)
    store = RedisGuardStore(settings, fallback=fallback)
    try:
        # What the fallback recorded while Redis was away (as the store does then).
        assert await fallback.record_failure("a") == 900.0
        assert (await fallback.hit("k")).blocked_for == 0.0
        assert (await fallback.hit("k")).new
        # Redis answers again and knows nothing of them: they still hold.
        assert await store.ban_left("a") == pytest.approx(900.0)
        assert await store.ban_left("b") == 0.0
        held = await store.hit("k")
        assert 299 < held.blocked_for <= 300 and not held.new
        assert (await store.hit("other")).blocked_for == 0.0
    finally:
        await store.aclose()


# --------------------------------------------------------------------------
# Gateway processes sharing one Redis
# --------------------------------------------------------------------------


async def burst(gateways: list[GatewayProcess], key: str, each: int) -> list[httpx.Response]:
    """``each`` requests of ``key`` to every gateway, all at once."""
    async with httpx.AsyncClient(timeout=30) as client:
        return await asyncio.gather(*(
            client.post(gateway.base_url + "/chat/completions", json=BODY, headers=headers(key))
            for _ in range(each) for gateway in gateways
        ))


def test_guard_redis_processes_share_bans_and_blocks_and_survive_redis_dying(
    redis_server: RedisServer, keys: KeyStore, write_config: WriteConfig,
    gateway_processes: Processes,
) -> None:
    good, noisy = keys.create("good"), keys.create("noisy")
    guard = {"storage": redis_server.url, "trusted_proxies": ["127.0.0.1"],
             "max_failed_auth": 3, "burst_rps": 0.5, "burst_window": "10s"}
    shared = write_config("plugins.toml", **guard)
    strict = write_config("strict.toml", **guard, on_storage_error="closed")
    first, second = gateway_processes(shared, 2)
    (closed,) = gateway_processes(strict, 1)

    # A ban made through one process holds in the other.
    attacker, neighbour = "203.0.113.7", "203.0.113.8"
    assert [post(first.base_url, BAD_KEY, attacker).status_code for _ in range(3)] == [401] * 3
    for gateway in (second, first, closed):
        refused = post(gateway.base_url, good.secret, attacker)
        assert (refused.status_code, code(refused)) == (403, "ip_banned")
        assert 890 <= int(refused.headers["retry-after"]) <= 900
    assert post(second.base_url, good.secret, neighbour).status_code == 200

    # A burst split between the processes: exactly the limit gets through.
    responses = asyncio.run(burst([first, second], noisy.secret, 10))
    assert sum(r.status_code == 200 for r in responses) == 5
    blocked = [r for r in responses if r.status_code != 200]
    assert {r.status_code for r in blocked} == {429}
    assert {code(r) for r in blocked} == {"burst_limit_exceeded"}
    assert {r.request.url.port for r in blocked} == {first.port, second.port}
    assert post(closed.base_url, noisy.secret).status_code == 429

    redis_server.kill()
    # Open: requests go on, guarded by each process's memory.
    assert post(first.base_url, good.secret, "198.51.100.1").status_code == 200
    scanner = "198.51.100.66"
    assert [post(first.base_url, BAD_KEY, scanner).status_code for _ in range(4)] == [
        401, 401, 401, 403]
    assert post(second.base_url, good.secret, scanner).status_code == 200  # per process now
    # Closed: refused with 503, except health checks.
    for key in (good.secret, BAD_KEY, noisy.secret):
        refused = post(closed.base_url, key, "198.51.100.2")
        assert (refused.status_code, code(refused)) == (503, "guard_unavailable")
        assert refused.headers["retry-after"] == "1"
    assert httpx.get(closed.url + "/healthz").status_code == 200

    for gateway in (first, second, closed):
        assert gateway.stop() == 0, gateway.log.read_text()
        log = gateway.log.read_text()
        assert "Traceback" not in log, log
        assert good.secret not in log and BAD_KEY not in log
    assert "falling back to this process's in-memory state" in first.log.read_text()
    assert "refusing the requests it guards" in closed.log.read_text()
    assert f"guard: banned {attacker}" in first.log.read_text()


# --------------------------------------------------------------------------
# In process: the warning, and closed mode
# --------------------------------------------------------------------------


def test_guard_redis_down_warns_once_and_falls_back(
    start: Start, keys: KeyStore, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    good = keys.create("good")
    server = start(storage=redis_server.url, max_failed_auth=2, burst_rps=0.5,
                   burst_window="10s")
    assert post(server.base_url, good.secret).status_code == 200
    redis_server.kill()
    with caplog.at_level(logging.WARNING, logger="sluiceway.guard"):
        statuses = [post(server.base_url, good.secret).status_code for _ in range(6)]
        failures = [post(server.base_url, BAD_KEY).status_code for _ in range(3)]
    # The memory fallback counts from zero: 5 more requests, then the key is blocked.
    assert statuses == [200] * 5 + [429]
    assert failures == [401, 401, 403]
    warnings = [r.getMessage() for r in caplog.records if "Redis storage" in r.getMessage()]
    assert len(warnings) <= 2  # at most once per 10 s for each of the two middlewares
    assert warnings and all("in-memory state" in w for w in warnings)
    assert all("Traceback" not in r.getMessage() for r in caplog.records)


def test_guard_redis_down_fails_closed_with_503(
    start: Start, keys: KeyStore, redis_server: RedisServer
) -> None:
    good = keys.create("good")
    server = start(storage=redis_server.url, on_storage_error="closed")
    assert post(server.base_url, good.secret).status_code == 200
    redis_server.kill()
    refused = [post(server.base_url, good.secret), post(server.base_url, None)]
    for response in refused:
        assert (response.status_code, code(response)) == (503, "guard_unavailable")
        assert response.headers["retry-after"] == "1"
        assert "Traceback" not in response.text
    assert httpx.get(server.url + "/readyz").status_code == 200


@pytest.mark.parametrize("deployment", ["redis_sentinel", "redis_cluster"])
async def test_guard_redis_sentinel_and_cluster(
    deployment: str, request: pytest.FixtureRequest
) -> None:
    server: RedisServer = request.getfixturevalue(deployment)
    settings = options(storage=server.url, max_failed_auth=2, burst_rps=3,
                       on_storage_error="closed")
    # Two "processes"; a generous timeout, as the cluster may still be settling.
    stores = [RedisGuardStore(settings, timeout=5.0) for _ in range(2)]
    try:
        assert await stores[0].record_failure("203.0.113.9") == 0.0
        assert await stores[1].record_failure("203.0.113.9") == 900.0
        assert await stores[0].ban_left("203.0.113.9") == pytest.approx(900.0, abs=1)
        hits = [await stores[n % 2].hit("key_c") for n in range(5)]
        assert [h.blocked_for > 0 for h in hits] == [False, False, False, True, True]
    finally:
        for store in stores:
            await store.aclose()
