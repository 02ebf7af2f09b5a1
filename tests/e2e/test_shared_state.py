"""``[state] backend = "redis"``: caps that look global are global.

Two real ``sluiceway serve`` processes and one real redis-server: the
gateway-wide in-flight cap and a provider's pool admit exactly N requests across
both instances, a slot a killed instance held lapses, and a breaker that opens
on one instance rests that deployment on the other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from sluiceway import ConfigError, parse_config
from sluiceway.testing import GatewayProcess, RedisServer, wait_until_async

Processes = Callable[..., list[GatewayProcess]]
BODY = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hello"}]}


def _config(path: Path, redis_url: str, *, gateway: str = "", provider: str = "",
            state: str = "", ttft: str = "1500ms") -> Path:
    path.write_text(f"""
[gateway]
plugins = ["mock"]
{gateway}

[state]
backend = "redis"
url = "{redis_url}"
lease_ttl = "2s"
sync_interval = "100ms"
{state}

[[providers]]
name = "mock"
type = "mock"
models = ["mock-gpt"]
ttft = "{ttft}"
allow_request_faults = true
max_retries = 0
{provider}
""")
    return path


async def _burst(gateways: list[GatewayProcess], each: int,
                 body: dict[str, Any] | None = None) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=30) as client:
        return await asyncio.gather(*(
            client.post(gateway.base_url + "/chat/completions", json=body or BODY)
            for _ in range(each) for gateway in gateways))


def _codes(responses: list[httpx.Response]) -> set[str]:
    return {r.json()["error"]["code"] for r in responses if r.status_code != 200}


async def test_the_gateway_cap_admits_exactly_n_across_two_instances(
    redis_server: RedisServer, tmp_path: Path, gateway_processes: Processes,
) -> None:
    config = _config(tmp_path / "plugins.toml", redis_server.url,
                     gateway="max_concurrent_requests = 3\nqueue_timeout = \"200ms\"",
                     ttft="4s")
    gateways = gateway_processes(config, 2)
    burst = asyncio.ensure_future(_burst(gateways, 6))
    # Past lease_ttl (2 s) the three answers still run: their leases were renewed,
    # so the cap still holds.
    await asyncio.sleep(2.6)
    late = await _burst(gateways, 1)
    assert [r.status_code for r in late] == [503, 503]
    responses = await burst
    # Each instance alone would admit 3 of its 6: together they admit 3.
    assert sum(r.status_code == 200 for r in responses) == 3
    assert {r.status_code for r in responses} == {200, 503}
    assert _codes(responses) == {"busy"}
    # Every slot came back: the next burst gets three again.
    responses = await _burst(gateways, 3)
    assert sum(r.status_code == 200 for r in responses) == 3
    for gateway in gateways:
        assert gateway.stop() == 0, gateway.log.read_text()
        assert "Traceback" not in gateway.log.read_text()


async def test_a_provider_pool_is_shared_and_a_dead_instance_s_slots_lapse(
    redis_server: RedisServer, tmp_path: Path, gateway_processes: Processes,
) -> None:
    config = _config(tmp_path / "plugins.toml", redis_server.url,
                     provider="concurrency = 2\nbuffer = 0\ndrop_excess = true")
    first, second = gateways = gateway_processes(config, 2)
    responses = await _burst(gateways, 3)
    assert sum(r.status_code == 200 for r in responses) == 2
    assert _codes(responses) == {"busy"}

    # An instance killed while it holds both slots: they lapse within lease_ttl,
    # and until then the other instance is refused.
    async with httpx.AsyncClient(timeout=30) as client:
        held = [asyncio.ensure_future(client.post(first.base_url + "/chat/completions",
                                                  json=BODY)) for _ in range(2)]
        await asyncio.sleep(0.5)
        first.process.kill()
        await asyncio.gather(*held, return_exceptions=True)
        refused = await client.post(second.base_url + "/chat/completions", json=BODY)
        assert refused.status_code == 503
        await asyncio.sleep(2.5)
        answered = await client.post(second.base_url + "/chat/completions", json=BODY)
    assert answered.status_code == 200, answered.text
    assert second.stop() == 0, second.log.read_text()


async def test_a_breaker_opened_on_one_instance_rests_the_deployment_on_both(
    redis_server: RedisServer, tmp_path: Path, gateway_processes: Processes,
) -> None:
    config = _config(tmp_path / "plugins.toml", redis_server.url,
                     provider='cooldown_failures = 2\ncooldown = "30s"', ttft="0s")
    first, second = gateway_processes(config, 2)
    failing = {**BODY, "metadata": {"mock_fault": "error"}}
    async with httpx.AsyncClient(timeout=30) as client:
        for _ in range(2):
            failed = await client.post(first.base_url + "/chat/completions", json=failing)
            assert failed.status_code == 502
        # The other instance learns of the rest within its sync interval.
        answers: list[httpx.Response] = []

        async def rested() -> bool:
            answers.append(await client.post(second.base_url + "/chat/completions",
                                             json=BODY))
            return answers[-1].status_code != 200

        assert await wait_until_async(rested)
    assert answers[-1].status_code == 503
    assert answers[-1].json()["error"]["code"] == "no_healthy_deployment"
    for gateway in (first, second):
        assert gateway.stop() == 0, gateway.log.read_text()


def test_state_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="needs a url"):
        parse_config({"state": {"backend": "redis"}})
    with pytest.raises(ConfigError, match="url is for"):
        parse_config({"state": {"url": "redis://127.0.0.1:6379"}})
    assert parse_config({}).state.backend == "memory"


async def test_per_key_concurrency_follows_state_into_redis(
    redis_server: RedisServer, tmp_path: Path, gateway_processes: Processes,
) -> None:
    """The limits plugin, given no storage of its own, keeps its counts where [state]
    does: a key's max_concurrent holds across both instances."""
    from sluiceway_api_keys import KeyStore

    keys = KeyStore(tmp_path / "keys.toml")
    busy = keys.create("busy", max_concurrent=2)
    config = tmp_path / "plugins.toml"
    config.write_text(_config(tmp_path / "base.toml", redis_server.url).read_text().replace(
        'plugins = ["mock"]', 'plugins = ["mock", "api-keys", "limits"]')
        + f'\n[auth]\nchain = ["api-keys"]\n\n[auth.api-keys]\nkeys_file = "{keys.path}"\n')
    gateways = gateway_processes(config, 2)
    async with httpx.AsyncClient(timeout=30) as client:
        responses = await asyncio.gather(*(
            client.post(gateway.base_url + "/chat/completions", json=BODY,
                        headers={"authorization": f"Bearer {busy.secret}"})
            for _ in range(3) for gateway in gateways))
    assert sum(r.status_code == 200 for r in responses) == 2
    assert _codes(responses) == {"concurrency_limit_exceeded"}
    for gateway in gateways:
        assert gateway.stop() == 0, gateway.log.read_text()
