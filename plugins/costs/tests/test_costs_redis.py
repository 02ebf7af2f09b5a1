"""Spend in Redis against a real redis-server: one key per key id and period on
Redis's clock, two gateway processes stopping a key at the same total, and a
Redis that dies mid-run failing open (this process's view) or closed (503)."""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sluiceway_api_keys import KeyStore
from sluiceway_costs import RedisSpend, SpendStore, to_units
from sluiceway_mock.text import prompt_tokens

from sluiceway import ServiceUnavailable
from sluiceway.testing import GatewayProcess, RedisServer, RunningServer

Start = Callable[..., RunningServer]
Processes = Callable[..., list[GatewayProcess]]
USER = [{"role": "user", "content": "hi"}]
BODY: dict[str, Any] = {"model": "mock-gpt", "messages": USER}
ANSWER_TOKENS = 30
INPUT, OUTPUT = 3.7, 14.3
PRICES = {"mock-gpt": {"input": INPUT, "output": OUTPUT}}
COST = (prompt_tokens(USER) * INPUT + ANSWER_TOKENS * OUTPUT) / 1e6
DAY = 86400.0


def names(client: Any, pattern: str, **everywhere: Any) -> list[str]:
    return sorted(k.decode() if isinstance(k, bytes) else k
                  for k in client.keys(pattern, **everywhere))


# --------------------------------------------------------------------------
# The store against a real Redis
# --------------------------------------------------------------------------


async def test_costs_redis_spend_is_one_key_per_period_on_redis_time(
    redis_server: RedisServer,
) -> None:
    ours, theirs = (RedisSpend(redis_server.url, key_prefix="test:") for _ in range(2))
    assert isinstance(ours, SpendStore)
    try:
        assert (await ours.read("k", DAY)).units == 0
        await ours.add("k", 250, DAY)
        spend = await theirs.add("k", 750, DAY)  # another process: the same total
        assert spend.units == 1000 and (await ours.read("k", DAY)).units == 1000
        assert 0 < spend.reset_after <= DAY
        assert (await ours.add("k", 0, DAY)).units == 1000  # nothing to add: a read
        client = redis.Redis.from_url(redis_server.url)
        try:
            seconds, _ = client.time()
            keys = names(client, "test:*")
            assert len(keys) == 1
            prefix, period, start = keys[0].rsplit(":", 2)
            assert (prefix, period) == ("test:{k}", "86400000")
            # The period's start in ms, aligned to Redis TIME (midnight UTC for "1d").
            assert int(start) % 86_400_000 == 0
            assert int(start) <= seconds * 1000 < int(start) + 86_400_000
            assert int(client.get(keys[0]) or 0) == 1000
            # Kept for one period after its own ends.
            assert DAY * 1000 < client.pttl(keys[0]) <= 2 * DAY * 1000
        finally:
            client.close()
    finally:
        await ours.aclose()
        await theirs.aclose()


@pytest.mark.parametrize("deployment", ["redis_sentinel", "redis_cluster"])
async def test_costs_redis_sentinel_and_cluster_share_spend(
    deployment: str, request: pytest.FixtureRequest,
) -> None:
    server: RedisServer = request.getfixturevalue(deployment)
    # A generous timeout: the cluster may still be settling on a busy machine.
    stores = [RedisSpend(server.url, on_storage_error="closed", timeout=5.0) for _ in range(2)]
    try:
        for store in stores:  # connect first: the cluster client is built on first use
            assert (await store.read("key-0", DAY)).units == 0
        await asyncio.gather(*(stores[n % 2].add(f"key-{n % 3}", n, DAY) for n in range(30)))
        totals = [(await stores[1].read(f"key-{k}", DAY)).units for k in range(3)]
        assert totals == [sum(n for n in range(30) if n % 3 == k) for k in range(3)]
    finally:
        for store in stores:
            await store.aclose()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _redis_on(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    """A redis-server on ``port`` (where a store already failed to connect)."""
    process = subprocess.Popen(
        [shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(port),
         "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    try:
        for _ in range(400):
            try:
                client.ping()
                return process
            except redis.ConnectionError:
                time.sleep(0.025)
    finally:
        client.close()
    process.kill()
    process.wait(10)
    raise RuntimeError("redis-server did not answer PING within 10 s")


async def test_costs_redis_outage_loses_no_charge(tmp_path: Path) -> None:
    """Charges made while Redis is unreachable are kept, counted by this process's
    view, and added to Redis with the key's next charge once it is back."""
    port = _free_port()
    store = RedisSpend(f"redis://127.0.0.1:{port}/0", on_storage_error="open")
    closed = RedisSpend(f"redis://127.0.0.1:{port}/0", on_storage_error="closed")
    process: subprocess.Popen[bytes] | None = None
    try:
        # Nothing listens yet: the charges stay in the process.
        assert (await store.add("k", 100, DAY)).units == 100
        assert (await store.add("k", 20, DAY)).units == 120
        assert (await store.read("k", DAY)).units == 120
        with pytest.raises(ServiceUnavailable) as refused:
            await closed.read("k", DAY)
        assert (refused.value.status, refused.value.code) == (503, "costs_unavailable")

        process = await asyncio.to_thread(_redis_on, port, tmp_path)
        client = redis.Redis(port=port)
        # After a failure the store leaves Redis alone for a second.
        await asyncio.sleep(1.1)
        assert (await store.add("k", 3, DAY)).units == 123
        keys = names(client, "sluiceway:costs:*")
        assert len(keys) == 1 and int(client.get(keys[0]) or 0) == 123
        assert (await store.read("k", DAY)).units == 123  # nothing counted twice
        client.close()
    finally:
        await store.aclose()
        await closed.aclose()
        if process is not None:
            process.kill()
            process.wait(10)


# --------------------------------------------------------------------------
# Two gateway processes sharing one Redis
# --------------------------------------------------------------------------


def write_config(path: Path, redis_url: str, keys_file: Path, budgets: dict[str, float]) -> None:
    table = ", ".join(f'"{key}" = {value!r}' for key, value in budgets.items())
    path.write_text(
        f"""
[gateway]
plugins = ["mock", "api-keys", "costs"]

[[providers]]
name = "mock"
type = "mock"
models = ["mock-gpt"]
response_tokens = {ANSWER_TOKENS}

[auth]
chain = ["api-keys"]

[auth.api-keys]
keys_file = "{keys_file}"

[plugin.costs]
storage = "{redis_url}"
budget_period = "30d"
budgets = {{ {table} }}
prices = {{ "mock-gpt" = {{ input = {INPUT!r}, output = {OUTPUT!r} }} }}
""",
        encoding="utf-8",
    )


def test_costs_redis_two_processes_stop_a_key_at_the_same_total(
    redis_server: RedisServer, tmp_path: Path, gateway_processes: Processes,
) -> None:
    keys = KeyStore(tmp_path / "keys.toml")
    capped = keys.create("capped")
    config = tmp_path / "plugins.toml"
    # Four and a half requests' worth: the fifth starts under budget.
    write_config(config, redis_server.url, tmp_path / "keys.toml",
                 {capped.record.id: 4.5 * COST})
    gateways = gateway_processes(config, 2)
    headers = {"authorization": f"Bearer {capped.secret}"}
    statuses = []
    spends = []
    with httpx.Client(timeout=30, headers=headers) as client:
        # One request at a time, alternating: each process sees the other's spend.
        for n in range(8):
            response = client.post(gateways[n % 2].base_url + "/chat/completions", json=BODY)
            statuses.append(response.status_code)
            spends.append(float(response.headers["x-sluiceway-spend"]))
            if response.status_code == 429:
                assert response.json()["error"]["code"] == "budget_exceeded"
            else:
                assert float(response.headers["x-sluiceway-cost"]) == pytest.approx(COST)
    # Each alone would have admitted five of its four: together they admit five.
    assert statuses == [200] * 5 + [429] * 3
    assert spends == pytest.approx([n * COST for n in range(1, 6)] + [5 * COST] * 3)
    client = redis.Redis.from_url(redis_server.url)
    try:
        keys_found = names(client, "sluiceway:costs:*")
        assert len(keys_found) == 1 and keys_found[0].startswith(
            f"sluiceway:costs:{{{capped.record.id}}}:2592000000:")
        # Exactly the five answers, in billionths of a dollar.
        assert int(client.get(keys_found[0]) or 0) == 5 * to_units(COST)
    finally:
        client.close()
    for gateway in gateways:
        assert gateway.stop() == 0, gateway.log.read_text()
        assert "Traceback" not in gateway.log.read_text()


# --------------------------------------------------------------------------
# Redis dies mid-run
# --------------------------------------------------------------------------


def post(server: RunningServer, secret: str | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {secret}"} if secret else {}
    return httpx.post(server.base_url + "/chat/completions", json=BODY, headers=headers,
                      timeout=30)


def test_costs_redis_down_fails_open_from_the_last_known_spend(
    start: Start, redis_server: RedisServer, caplog: pytest.LogCaptureFixture,
) -> None:
    server = start(auth=False, mock={"response_tokens": ANSWER_TOKENS}, costs={
        "prices": PRICES, "storage": redis_server.url, "default_budget": 3.5 * COST,
    })
    assert post(server).status_code == 200  # charged in Redis
    redis_server.kill()
    with caplog.at_level(logging.WARNING, logger="sluiceway.costs"):
        after = [post(server) for _ in range(4)]
    # Still answered, and still budgeted: this process goes on from the spend it
    # last saw in Redis plus what it charged since, so the budget holds.
    assert [r.status_code for r in after] == [200, 200, 200, 429]
    assert after[3].json()["error"]["code"] == "budget_exceeded"
    assert [float(r.headers["x-sluiceway-spend"]) for r in after] == pytest.approx(
        [2 * COST, 3 * COST, 4 * COST, 4 * COST])
    assert all("Traceback" not in r.text for r in after)
    warnings = [r.getMessage() for r in caplog.records if "Redis storage" in r.getMessage()]
    assert len(warnings) == 1  # at most once per 10 s
    assert "in-memory" in warnings[0]


def test_costs_redis_down_fails_closed_with_503(
    start: Start, store: KeyStore, redis_server: RedisServer,
) -> None:
    capped = store.create("capped")
    free = store.create("free")
    server = start(mock={"response_tokens": ANSWER_TOKENS}, costs={
        "prices": PRICES, "storage": redis_server.url, "on_storage_error": "closed",
        "budgets": {capped.record.id: 1.0},
    })
    assert post(server, capped.secret).status_code == 200
    redis_server.kill()
    refused = [post(server, capped.secret) for _ in range(3)]
    for response in refused:
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "costs_unavailable"
        assert response.headers["retry-after"] == "1"
        assert "Traceback" not in response.text
    # A key without a budget is not refused: its cost needs no storage to be known.
    unbudgeted = post(server, free.secret)
    assert unbudgeted.status_code == 200
    assert float(unbudgeted.headers["x-sluiceway-cost"]) == pytest.approx(COST)
