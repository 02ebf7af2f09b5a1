"""Fixtures and helpers for the prometheus tests: a keys file, scraping and parsing /metrics."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sluiceway_api_keys import KeyStore

from sluiceway.testing import RunningServer

Labels = frozenset[tuple[str, str]]


@pytest.fixture
def keys_path(tmp_path: Path) -> Path:
    return tmp_path / "keys.toml"


@pytest.fixture
def keys(keys_path: Path) -> KeyStore:
    """The keys file of the test, with one key so that the gateway can start."""
    key_store = KeyStore(keys_path)
    key_store.create("bootstrap")
    return key_store


class Scrape:
    """One /metrics answer, parsed by prometheus_client's own parser."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.types: dict[str, str] = {}
        self.samples: dict[str, dict[Labels, float]] = {}
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            for sample in family.samples:
                series = self.samples.setdefault(sample.name, {})
                series[frozenset(sample.labels.items())] = sample.value

    def series(self, name: str, *labels: str) -> dict[tuple[str, ...], float]:
        """``name``'s samples by the values of ``labels`` (summed over the others)."""
        out: dict[tuple[str, ...], float] = {}
        for label_set, value in self.samples.get(name, {}).items():
            as_dict = dict(label_set)
            key = tuple(as_dict[label] for label in labels)
            out[key] = out.get(key, 0.0) + value
        return out

    def value(self, name: str, **labels: str) -> float:
        """The sum of ``name``'s samples whose labels include ``labels``."""
        wanted = set(labels.items())
        return sum(v for ls, v in self.samples.get(name, {}).items() if wanted <= ls)


def _scrape(url: str, key: str | None = None) -> Scrape:
    headers = {}
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    response = httpx.get(url + "/metrics", headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return Scrape(response.text)


ScrapeFn = Callable[..., Scrape]


@pytest.fixture
def scrape() -> ScrapeFn:
    """``scrape(server.url, key=None)``: GET /metrics (200, text format), parsed."""
    return _scrape


def _settle(server: RunningServer) -> None:
    """Wait until no request is in flight in ``server``'s gateway.

    A client has its answer as soon as the last byte is sent; the request's end
    (and its RequestEnded event, which the counters count) comes a moment
    later, on the server's event loop. Asked on that loop, "nothing in flight"
    means every request ended and was counted."""
    for _ in range(1000):
        if not server.call(lambda: len(server.gateway.inflight)):
            return
        time.sleep(0.01)
    raise AssertionError("requests still in flight after 10 s")


@pytest.fixture
def settle() -> Callable[[RunningServer], None]:
    """``settle(server)``: wait until every request sent so far has ended."""
    return _settle
