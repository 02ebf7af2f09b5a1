"""Fixtures for the api-keys tests: a keys file, a gateway that reads it, and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sluiceway_api_keys import KeyStore

import sluiceway
from sluiceway.testing import RunningServer

MODELS = ["mock-gpt", "mock-gpt-mini", "other-model"]
StartGateway = Callable[..., RunningServer]


def gateway_config(keys_file: str, **options: Any) -> dict[str, Any]:
    """The configuration of the brief: the mock provider behind the api-keys strategy."""
    return {
        "gateway": {"plugins": ["mock", "api-keys"]},
        "auth": {"chain": ["api-keys"], "api-keys": {"keys_file": keys_file, **options}},
        "providers": [{"name": "mock", "type": "mock", "models": MODELS}],
    }


CONFIG_TOML = """\
[gateway]
plugins = ["mock", "api-keys"]

[auth]
chain = ["api-keys"]

[auth.api-keys]
keys_file = "keys.toml"
reload_interval = "50ms"

[[providers]]
name = "mock"
type = "mock"
models = ["mock-gpt", "mock-gpt-mini", "other-model"]
"""


async def whoami(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with the principal the auth chain established, as JSON."""
    principal = scope[sluiceway.CONTEXT_KEY].principal
    body = json.dumps({
        "key_id": principal.key_id,
        "name": principal.name,
        "allowed_models": principal.allowed_models,
        "attributes": dict(principal.attributes),
    }).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


class WhoAmIPlugin:
    @sluiceway.hookimpl
    def register_routes(self, register: Callable[[sluiceway.Route], None]) -> None:
        register(sluiceway.Route("/whoami", whoami))


@pytest.fixture
def keys_path(tmp_path: Path) -> Path:
    return tmp_path / "keys.toml"


@pytest.fixture
def store(keys_path: Path) -> KeyStore:
    """The keys file of the test, with one key so that the gateway can start."""
    key_store = KeyStore(keys_path)
    key_store.create("bootstrap")
    return key_store


@pytest.fixture
def start(
    gateway_factory: StartGateway, keys_path: Path, store: KeyStore
) -> Callable[..., RunningServer]:
    """Start a gateway on the test's keys file (with a /whoami route)."""

    def run(**options: Any) -> RunningServer:
        options.setdefault("reload_interval", "50ms")
        config = gateway_config(str(keys_path), **options)
        return gateway_factory(config, plugins=[("whoami", WhoAmIPlugin())])

    return run


@pytest.fixture
def config_file(tmp_path: Path, store: KeyStore) -> Path:
    """A plugins.toml beside the keys file, naming it by a relative path."""
    path = tmp_path / "plugins.toml"
    path.write_text(CONFIG_TOML)
    return path


def status_of(server: RunningServer, secret: str) -> int:
    """The status of ``GET /v1/models`` with ``secret`` as a Bearer token."""
    with httpx.Client(base_url=server.url) as client:
        return client.get("/v1/models", headers={"authorization": f"Bearer {secret}"}).status_code


def wait_for_status(server: RunningServer, secret: str, status: int, attempts: int = 200) -> int:
    """Poll until a request with ``secret`` gets ``status`` (bounded); the last status seen."""
    seen = status_of(server, secret)
    for _ in range(attempts):
        if seen == status:
            break
        time.sleep(0.025)
        seen = status_of(server, secret)
    return seen


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m sluiceway.cli ARGS`` in a subprocess (the installed entry point)."""
    return subprocess.run(
        [sys.executable, "-m", "sluiceway.cli", *args],
        capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})},
    )


# Test modules cannot import from conftest under --import-mode=importlib, so the
# helpers above are handed out as fixtures.
@pytest.fixture
def wait_for() -> Callable[..., int]:
    return wait_for_status


@pytest.fixture
def cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    return run_cli
