"""Fixtures for the guard tests: a keys file and a gateway with mock, api-keys and guard."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sluiceway_api_keys import KeyStore

from sluiceway.testing import RunningServer

MODELS = ["mock-gpt"]
StartGateway = Callable[..., RunningServer]


def gateway_config(keys_file: str, guard: dict[str, Any]) -> dict[str, Any]:
    """mock behind api-keys, guarded."""
    return {
        "gateway": {"plugins": ["mock", "api-keys", "guard"]},
        "providers": [{"name": "mock", "type": "mock", "models": MODELS}],
        "auth": {
            "chain": ["api-keys"],
            "api-keys": {"keys_file": keys_file, "reload_interval": "50ms"},
        },
        "plugin": {"guard": guard},
    }


@pytest.fixture
def keys_path(tmp_path: Path) -> Path:
    return tmp_path / "keys.toml"


@pytest.fixture
def keys(keys_path: Path) -> KeyStore:
    """The keys file of the test, with one key so that the gateway can start."""
    key_store = KeyStore(keys_path)
    key_store.create("bootstrap")
    return key_store


@pytest.fixture
def start(gateway_factory: StartGateway, keys_path: Path, keys: KeyStore) -> StartGateway:
    """Start a guarded gateway: ``start(max_failed_auth=3, ...)`` (the guard's options)."""

    def run(**guard: Any) -> RunningServer:
        return gateway_factory(gateway_config(str(keys_path), guard))

    return run


@pytest.fixture
def write_config(tmp_path: Path, keys_path: Path, keys: KeyStore) -> Callable[..., Path]:
    """The same stack as a plugins.toml, for ``sluiceway serve`` processes:
    ``write_config("name.toml", storage="redis://...", ...)`` (the guard's options)."""

    def write(name: str, **guard: Any) -> Path:
        path = tmp_path / name
        # JSON strings, numbers and lists of strings are valid TOML values.
        options = "\n".join(f"{key} = {json.dumps(value)}" for key, value in guard.items())
        path.write_text(f"""
[gateway]
plugins = ["mock", "api-keys", "guard"]

[[providers]]
name = "mock"
type = "mock"
models = ["mock-gpt"]

[auth]
chain = ["api-keys"]

[auth.api-keys]
keys_file = {json.dumps(str(keys_path))}
reload_interval = "50ms"

[plugin.guard]
{options}
""", encoding="utf-8")
        return path

    return write
