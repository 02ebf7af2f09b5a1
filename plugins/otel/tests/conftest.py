"""Fixtures for the otel tests: a real gateway whose spans go to the SDK's
in-memory exporter, and helpers to read them once the gateway has stopped.

Stopping the server is what makes the spans complete: the gateway exits the
sink's lifespan only after every request has ended, and the sink shuts its
TracerProvider down there, exporting everything queued.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sluiceway_api_keys import KeyStore
from sluiceway_otel import OtelPlugin

from sluiceway.testing import RunningServer

MODEL = "mock-gpt"
Start = Callable[..., RunningServer]


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def keys_path(tmp_path: Path) -> Path:
    return tmp_path / "keys.toml"


@pytest.fixture
def keys(keys_path: Path) -> KeyStore:
    """The keys file of the test, with one key so that the gateway can start."""
    store = KeyStore(keys_path)
    store.create("bootstrap")
    return store


@pytest.fixture
def start(gateway_factory: Start, exporter: InMemorySpanExporter, keys_path: Path) -> Start:
    """Start a gateway traced into ``exporter``::

        start(otel={...})                         # mock provider, no auth
        start(providers=[...], aliases=[...])     # other upstreams
        start(auth=True, plugins=["limits"])      # api-keys (fixture ``keys``), more plugins
    """

    def run(
        *,
        otel: dict[str, Any] | None = None,
        providers: list[dict[str, Any]] | None = None,
        aliases: list[dict[str, Any]] | None = None,
        auth: bool = False,
        plugins: Sequence[str] = (),
        plugin_options: dict[str, Any] | None = None,
    ) -> RunningServer:
        providers = providers or [{"name": "mock", "type": "mock", "models": [MODEL]}]
        names = sorted({p["type"] for p in providers})
        config: dict[str, Any] = {
            "gateway": {"plugins": [*names, *(["api-keys"] if auth else []), *plugins]},
            "providers": providers,
            "aliases": aliases or [],
            "plugin": plugin_options or {},
        }
        if auth:
            config["auth"] = {
                "chain": ["api-keys"],
                "api-keys": {"keys_file": str(keys_path), "reload_interval": "50ms"},
            }
        plugin = OtelPlugin(exporter, **(otel or {}))
        return gateway_factory(config, plugins=[("otel", plugin)])

    return run


@pytest.fixture
def collect(exporter: InMemorySpanExporter) -> Callable[[RunningServer], list[ReadableSpan]]:
    """``collect(server)``: stop the gateway (every request ends, the spans are
    exported) and return the spans."""

    def stop_and_read(server: RunningServer) -> list[ReadableSpan]:
        server.stop()
        return list(exporter.get_finished_spans())

    return stop_and_read
