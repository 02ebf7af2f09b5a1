"""Keys in Redis: the ``sluiceway keys`` commands and two real gateway processes on one
real redis-server share them; a key revoked once is refused by both within a second."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from sluiceway_api_keys import RedisKeyStore

from sluiceway import ConfigError, create_app
from sluiceway.cli import build_cli
from sluiceway.testing import GatewayProcess, RedisServer, wait_until_async

Processes = Callable[..., list[GatewayProcess]]
BODY = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}


def _config(path: Path, redis_url: str) -> Path:
    path.write_text(f"""
[gateway]
plugins = ["mock", "api-keys"]

[auth]
chain = ["api-keys"]

[auth.api-keys]
storage = "{redis_url}"
reload_interval = "200ms"

[[providers]]
name = "mock"
type = "mock"
models = ["mock-gpt"]
""")
    return path


def test_concurrent_writers_lose_nothing(redis_server: RedisServer) -> None:
    store = RedisKeyStore(redis_server.url, key_prefix="test:")
    made: list[str] = []

    def create(n: int) -> None:
        made.append(store.create(f"app-{n}").record.id)

    threads = [threading.Thread(target=create, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.id for r in store.read()) == sorted(made)
    revoked = store.set_enabled(made[0], False)
    assert not revoked.enabled and not store.get(made[0]).enabled
    before = store.signature()
    store.delete(made[1])
    assert store.signature() > before
    assert len(store.read()) == 7
    # Teams live beside the keys, changed the same way.
    assert store.set_team("alpha", 5.0).budget == 5.0
    store.set_team("alpha", None)
    store.set_team("beta", 1.5)
    assert [(t.name, t.budget) for t in store.read_teams()] == [("alpha", None), ("beta", 1.5)]
    store.delete_team("alpha")
    assert [t.name for t in store.read_teams()] == ["beta"] and len(store.read()) == 7
    store.close()


async def test_a_key_revoked_once_is_refused_by_every_instance(
    redis_server: RedisServer, tmp_path: Path, gateway_processes: Processes,
) -> None:
    config = _config(tmp_path / "plugins.toml", redis_server.url)
    runner = CliRunner()
    created = runner.invoke(build_cli(str(config)),
                            ["keys", "create", "--name", "crm", "--json", "--config", str(config)])
    assert created.exit_code == 0, created.output
    made = json.loads(created.output)
    gateways = gateway_processes(config, 2)
    headers = {"authorization": f"Bearer {made['secret']}"}
    async with httpx.AsyncClient(timeout=30) as client:
        for gateway in gateways:
            answer = await client.post(gateway.base_url + "/chat/completions", json=BODY,
                                       headers=headers)
            assert answer.status_code == 200, answer.text
        listed = runner.invoke(build_cli(str(config)), ["keys", "list", "--config", str(config)])
        assert made["id"] in listed.output and "enabled" in listed.output
        revoked = runner.invoke(build_cli(str(config)),
                                ["keys", "revoke", made["id"], "--config", str(config)])
        assert revoked.exit_code == 0, revoked.output
        refused: list[httpx.Response] = []
        for gateway in gateways:
            async def revoked_here(url: str = gateway.base_url) -> bool:
                answer = await client.post(url + "/chat/completions", json=BODY,
                                           headers=headers)
                if answer.status_code == 401:
                    refused.append(answer)
                return answer.status_code == 401

            # Each instance re-reads the keys' version every reload_interval (200 ms).
            assert await wait_until_async(revoked_here)
    assert [r.json()["error"]["code"] for r in refused] == ["api_key_revoked"] * 2
    for gateway in gateways:
        assert gateway.stop() == 0, gateway.log.read_text()


def test_storage_must_be_file_or_redis() -> None:
    with pytest.raises(ConfigError, match="keys_file is required"):
        create_app({"gateway": {"plugins": ["api-keys"]}, "auth": {
            "chain": ["api-keys"], "api-keys": {}}})
    with pytest.raises(ConfigError, match="storage must be"):
        create_app({"gateway": {"plugins": ["api-keys"]}, "auth": {
            "chain": ["api-keys"], "api-keys": {"storage": "memcached://x"}}})


async def test_a_retired_build_closes_its_redis_client(
    redis_server: RedisServer, tmp_path: Path,
) -> None:
    """The strategy's lifespan closes the store's client: a reload retires a build
    without leaving a connection behind."""
    config = _config(tmp_path / "plugins.toml", redis_server.url)
    gateway = create_app(str(config))
    await gateway.startup()
    (strategy,) = gateway._auth_chain
    store = strategy.source  # type: ignore[attr-defined]
    assert store._client is not None  # it read the keys at build time
    await gateway.shutdown()
    assert store._client is None
