"""Config hot reload: SIGHUP to a real ``sluiceway serve`` process (and the admin
API's ``POST /admin/v1/reload`` in-process) serve the new plugins.toml from then on,
a stream in flight finishes on the old one, and a bad file changes nothing."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from sluiceway.testing import GatewayProcess, RunningServer, wait_until_async

Processes = Callable[..., list[GatewayProcess]]


def _write(path: Path, models: list[str], *, token_delay: str = "0s") -> Path:
    path.write_text(f"""
[gateway]
plugins = ["mock"]

[[providers]]
name = "mock"
type = "mock"
models = {models!r}
token_delay = "{token_delay}"
response_tokens = 20
""".replace("'", '"'))
    return path


async def _models(client: httpx.AsyncClient, gateway: GatewayProcess) -> list[str]:
    listed = await client.get(gateway.base_url + "/models")
    return [model["id"] for model in listed.json()["data"]]


async def test_sighup_reloads_without_dropping_a_stream(
    tmp_path: Path, gateway_processes: Processes,
) -> None:
    config = _write(tmp_path / "plugins.toml", ["mock-gpt"], token_delay="100ms")
    (gateway,) = gateway_processes(config, 1)
    async with httpx.AsyncClient(timeout=30) as client:
        async def stream() -> str:
            async with client.stream("POST", gateway.base_url + "/chat/completions", json={
                "model": "mock-gpt", "stream": True,
                "messages": [{"role": "user", "content": "Tell me a story."}]}) as answer:
                assert answer.status_code == 200
                return "".join([part async for part in answer.aiter_text()])

        in_flight = asyncio.ensure_future(stream())
        await asyncio.sleep(0.3)  # the stream has started
        _write(config, ["mock-gpt", "mock-new"])
        gateway.process.send_signal(signal.SIGHUP)
        async def reloaded() -> bool:
            return "mock-new" in await _models(client, gateway)

        assert await wait_until_async(reloaded), gateway.log.read_text()
        # Still streaming on the old configuration while the new one serves.
        assert not in_flight.done()
        served = await client.post(gateway.base_url + "/chat/completions", json={
            "model": "mock-new", "messages": [{"role": "user", "content": "hi"}]})
        assert served.status_code == 200
        text = await in_flight
        assert text.rstrip().endswith("data: [DONE]")
        assert '"error"' not in text

        # A broken file is refused, and the configuration in force keeps serving.
        config.write_text("[gateway\nplugins = ")
        gateway.process.send_signal(signal.SIGHUP)
        assert await wait_until_async(lambda: "not reloaded" in gateway.log.read_text())
        assert sorted(await _models(client, gateway)) == ["mock-gpt", "mock-new"]
    assert gateway.stop() == 0, gateway.log.read_text()
    assert "Traceback" not in gateway.log.read_text()


def test_the_admin_api_reloads_and_refuses_a_bad_file(
    tmp_path: Path, gateway_factory: Callable[..., RunningServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLUICEWAY_TEST_ADMIN_KEY", "admin-key")
    config = tmp_path / "plugins.toml"

    def write(models: list[str], extra: str = "") -> None:
        _write(config, models)
        config.write_text(config.read_text().replace(
            'plugins = ["mock"]', 'plugins = ["mock", "admin"]') + """
[plugin.admin]
admin_keys = ["env:SLUICEWAY_TEST_ADMIN_KEY"]
""" + extra)

    write(["mock-gpt"])
    server = gateway_factory(str(config))
    headers = {"authorization": "Bearer admin-key"}
    with httpx.Client(base_url=server.url, timeout=30, headers=headers) as client:
        write(["mock-gpt", "mock-b"])
        reloaded = client.post("/admin/v1/reload")
        assert reloaded.status_code == 200, reloaded.text
        assert reloaded.json()["models"] == ["mock-b", "mock-gpt"]
        assert client.post("/v1/chat/completions", json={
            "model": "mock-b", "messages": [{"role": "user", "content": "hi"}]}).status_code == 200
        write(["mock-gpt"], extra='\n[[providers]]\nname = "mock"\ntype = "mock"\n')
        refused = client.post("/admin/v1/reload")
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "config_invalid"
        assert "mock" in refused.json()["error"]["message"]
        # Still the configuration that loaded last.
        assert client.post("/v1/chat/completions", json={
            "model": "mock-b", "messages": [{"role": "user", "content": "hi"}]}).status_code == 200
