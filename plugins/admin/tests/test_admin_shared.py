"""With ``[state] backend = "redis"``, the admin API of any instance lists the
requests every instance answered, and their spend."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from sluiceway.testing import GatewayProcess, RedisServer, wait_until


def test_every_instance_sees_every_instance_s_traffic(
    redis_server: RedisServer, tmp_path: Path,
    gateway_processes: Callable[..., list[GatewayProcess]], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLUICEWAY_TEST_ADMIN_KEY", "admin-key")
    config = tmp_path / "plugins.toml"
    config.write_text(f"""
[gateway]
plugins = ["mock", "costs", "admin"]

[state]
backend = "redis"
url = "{redis_server.url}"

[plugin.admin]
admin_keys = ["env:SLUICEWAY_TEST_ADMIN_KEY"]

[plugin.costs.prices.mock-gpt]
input = 1.0
output = 1.0

[[providers]]
name = "mock"
type = "mock"
models = ["mock-gpt"]
""")
    first, second = gateway_processes(config, 2)
    answer = httpx.post(first.base_url + "/chat/completions", timeout=30, json={
        "model": "mock-gpt", "messages": [{"role": "user", "content": "hello"}]})
    assert answer.status_code == 200
    headers = {"authorization": "Bearer admin-key"}
    with httpx.Client(base_url=second.url + "/admin/v1", headers=headers, timeout=30) as admin:
        # Written to Redis in the background by the first instance.
        assert wait_until(lambda: admin.get("/requests").json()["data"]), \
            second.log.read_text()
        rows = admin.get("/requests").json()["data"]
        spend = admin.get("/spend", params={"by": "model"}).json()["data"]
    assert rows[0]["model"] == "mock-gpt" and rows[0]["status"] == 200
    assert rows[0]["request_id"] == answer.headers["x-request-id"]
    (today,) = spend
    assert (today["model"], today["requests"]) == ("mock-gpt", 1)
    assert today["cost"] > 0 and today["tokens"] > 0
    for gateway in (first, second):
        assert gateway.stop() == 0, gateway.log.read_text()
