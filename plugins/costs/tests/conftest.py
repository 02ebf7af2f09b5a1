"""Fixtures for the costs tests: a keys file and a gateway with mock, api-keys and costs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sluiceway_api_keys import KeyStore

from sluiceway.testing import RunningServer

StartGateway = Callable[..., RunningServer]


def gateway_config(
    keys_file: str | None, costs: dict[str, Any], mock: dict[str, Any],
) -> dict[str, Any]:
    """mock behind api-keys (or no auth when ``keys_file`` is None), then costs."""
    provider: dict[str, Any] = {"name": "mock", "type": "mock", "models": ["mock-gpt"]}
    provider.update(mock)
    config: dict[str, Any] = {
        "gateway": {"plugins": ["mock", "costs"]},
        "providers": [provider],
        "plugin": {"costs": costs},
    }
    if keys_file is not None:
        config["gateway"]["plugins"] = ["mock", "api-keys", "costs"]
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
def start(
    gateway_factory: StartGateway, keys_path: Path, store: KeyStore,
) -> StartGateway:
    """Start a gateway: ``start(costs={...}, mock={...}, auth=True, plugins=[...])``;
    ``plugins`` are in-process plugin objects registered after the listed ones."""

    def run(
        costs: dict[str, Any] | None = None,
        mock: dict[str, Any] | None = None,
        auth: bool = True,
        plugins: list[tuple[str, object]] | None = None,
        config: dict[str, Any] | None = None,
    ) -> RunningServer:
        built = gateway_config(str(keys_path) if auth else None, costs or {}, mock or {})
        if config is not None:
            built.update(config)
        return gateway_factory(built, plugins=plugins or [])

    return run
