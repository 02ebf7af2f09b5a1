"""Fixtures for the limits tests: a keys file and a gateway with mock, api-keys and limits."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sluiceway_api_keys import KeyStore

from sluiceway.testing import RunningServer

MODELS = ["mock-gpt"]
StartGateway = Callable[..., RunningServer]


def gateway_config(
    keys_file: str | None, limits: dict[str, Any], mock: dict[str, Any]
) -> dict[str, Any]:
    """mock behind api-keys (or no auth when ``keys_file`` is None), then limits."""
    config: dict[str, Any] = {
        "gateway": {"plugins": ["mock", "limits"]},
        "providers": [{"name": "mock", "type": "mock", "models": MODELS, **mock}],
        "plugin": {"limits": limits},
    }
    if keys_file is not None:
        config["gateway"]["plugins"] = ["mock", "api-keys", "limits"]
        config["auth"] = {
            "chain": ["api-keys"],
            "api-keys": {"keys_file": keys_file, "reload_interval": "50ms"},
        }
    return config


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
def start(gateway_factory: StartGateway, keys_path: Path, store: KeyStore) -> StartGateway:
    """Start a gateway: ``start(limits={...}, mock={...}, auth=True)``."""

    def run(
        limits: dict[str, Any] | None = None,
        mock: dict[str, Any] | None = None,
        auth: bool = True,
    ) -> RunningServer:
        config = gateway_config(str(keys_path) if auth else None, limits or {}, mock or {})
        return gateway_factory(config)

    return run
