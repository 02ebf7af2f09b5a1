"""Options, content negotiation, separate gateways, and the checks made at startup."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from sluiceway_api_keys import KeyStore
from sluiceway_prometheus import ENV, breaker_state, remove_stale_files, wants_json

import sluiceway
from sluiceway.calls.health import DeploymentHealth
from sluiceway.testing import RunningServer

Factory = Callable[..., RunningServer]
Scrape = Any
Settle = Callable[[RunningServer], None]
CHAT = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}


def config(prometheus: dict[str, Any] | None = None, keys_path: Path | None = None,
           **server: Any) -> dict[str, Any]:
    plugins = ["mock", "prometheus"]
    result: dict[str, Any] = {
        "gateway": {"plugins": plugins},
        "providers": [{"name": "mock", "type": "mock", "models": ["mock-gpt"]}],
        "plugin": {"prometheus": prometheus or {}},
    }
    if keys_path is not None:
        plugins.insert(1, "api-keys")
        result["auth"] = {"chain": ["api-keys"], "api-keys": {"keys_file": str(keys_path)}}
        # Every key created so far may read the metrics (not those created later).
        result["gateway"]["operator_keys"] = [r.id for r in KeyStore(keys_path).read()]
    if server:
        result["server"] = server
    return result


def chat(server: RunningServer, n: int = 1, key: str | None = None) -> None:
    """``n`` chats, then wait until the last has ended (and been counted)."""
    headers = {"authorization": f"Bearer {key}"} if key else {}
    for _ in range(n):
        response = httpx.post(server.base_url + "/chat/completions", json=CHAT,
                              headers=headers, timeout=30)
        assert response.status_code == 200, response.text
    for _ in range(1000):
        if not server.call(lambda: len(server.gateway.inflight)):
            return
        time.sleep(0.01)
    raise AssertionError("requests still in flight after 10 s")


@pytest.mark.parametrize(
    ("accept", "json"),
    [
        (None, False),
        ("", False),
        ("*/*", False),
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        ("Application/JSON", True),
        ("text/plain", False),
        ("application/json;q=0.5, text/plain", False),
        ("text/plain;q=0.4, application/json", True),
        ("application/json, */*;q=0.1", True),
        ("application/*", False),  # also matches application/openmetrics-text
        ("application/json;q=0", False),
        ("application/json;q=bad", False),
        # What Prometheus sends.
        ("application/openmetrics-text;version=1.0.0;escaping=underscores,"
         "text/plain;version=0.0.4;q=0.5,*/*;q=0.1", False),
        # A browser.
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", False),
    ],
)
def test_json_is_chosen_only_when_preferred(accept: str | None, json: bool) -> None:
    assert wants_json(accept) is json


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"pubic": True}, "plugin.prometheus.pubic: unknown key"),
        ({"public": "yes"}, "plugin.prometheus.public: expected `bool`"),
        ({"latency_buckets": [1, 0.5]}, "latency_buckets must be in increasing order"),
        ({"overhead_buckets": []}, "overhead_buckets must list at least one bound"),
        ({"latency_buckets": [0, 1]}, "latency_buckets must be finite numbers of seconds"),
        ({"refresh_interval": "0s"}, "refresh_interval must be longer than 0s"),
    ],
)
def test_bad_options_stop_the_gateway(options: dict[str, Any], message: str) -> None:
    with pytest.raises(sluiceway.ConfigError, match=message.replace("`", ".")):
        sluiceway.create_app(config(options))


def test_public_metrics_need_no_credentials(
    gateway_factory: Factory, keys: KeyStore, keys_path: Path, scrape: Callable[..., Scrape],
    settle: Settle,
) -> None:
    caller = keys.create("caller")
    server = gateway_factory(config({"public": True}, keys_path))
    assert httpx.post(server.base_url + "/chat/completions", json=CHAT).status_code == 401
    chat(server, 2, caller.secret)
    metrics = scrape(server.url)  # no key
    settle(server)
    assert metrics.value("sluiceway_requests_total", route="chat", status="200",
                         key_id=caller.record.id) == 2
    stats = httpx.get(server.url + "/metrics", headers={"accept": "application/json"}).json()
    assert stats["total_requests"] == 5  # the refused chat, two chats, a scrape and this
    # Other routes still need a key.
    assert httpx.get(server.url + "/info").status_code == 401


def test_metrics_are_behind_auth_by_default(
    gateway_factory: Factory, keys: KeyStore, keys_path: Path, scrape: Callable[..., Scrape],
    settle: Settle,
) -> None:
    scraper = keys.create("scraper")
    server = gateway_factory(config({}, keys_path))
    refused = httpx.get(server.url + "/metrics", headers={"accept": "application/json"})
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "missing_api_key"
    settle(server)
    metrics = scrape(server.url, key=scraper.secret)
    assert metrics.value("sluiceway_auth_failures_total", code="missing_api_key") == 1


def test_key_label_off_drops_the_key_id(
    gateway_factory: Factory, keys: KeyStore, keys_path: Path, scrape: Callable[..., Scrape],
) -> None:
    caller = keys.create("caller")
    server = gateway_factory(config({"key_label": False}, keys_path))
    chat(server, 3, caller.secret)
    metrics = scrape(server.url, key=caller.secret)
    assert metrics.series("sluiceway_requests_total", "route", "status")[("chat", "200")] == 3
    for name in ("sluiceway_requests_total", "sluiceway_tokens_total"):
        assert metrics.samples[name]
        assert all("key_id" not in dict(labels) for labels in metrics.samples[name])
    assert caller.record.id not in metrics.text


def test_buckets_come_from_the_options(
    gateway_factory: Factory, scrape: Callable[..., Scrape]
) -> None:
    server = gateway_factory(config({"latency_buckets": [0.5, 60], "overhead_buckets": [1]}))
    chat(server)
    metrics = scrape(server.url)
    assert set(metrics.series("sluiceway_request_duration_seconds_bucket", "le")) == {
        ("0.5",), ("60.0",), ("+Inf",)}
    assert set(metrics.series("sluiceway_gateway_overhead_seconds_bucket", "le")) == {
        ("1.0",), ("+Inf",)}


def test_openmetrics_when_the_scraper_asks(gateway_factory: Factory) -> None:
    server = gateway_factory(config())
    chat(server, 2)
    response = httpx.get(server.url + "/metrics", headers={
        "accept": "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.headers["cache-control"] == "no-store"
    families = {f.name: f for f in openmetrics_families(response.text)}
    requests = families["sluiceway_requests"]
    assert requests.type == "counter"
    assert sum(s.value for s in requests.samples if s.name == "sluiceway_requests_total") == 2


def test_two_gateways_in_one_process_keep_their_own_metrics(
    gateway_factory: Factory, scrape: Callable[..., Scrape]
) -> None:
    first, second = gateway_factory(config()), gateway_factory(config())
    chat(first, 3)
    chat(second, 1)
    assert scrape(first.url).value("sluiceway_requests_total", route="chat") == 3
    assert scrape(second.url).value("sluiceway_requests_total", route="chat") == 1
    # And a third, built after both, starts from nothing.
    third = gateway_factory(config())
    assert scrape(third.url).value("sluiceway_requests_total") == 0


def test_several_workers_without_a_directory_stop_the_gateway(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(ENV, raising=False)
    with pytest.raises(sluiceway.StartupError, match=f"with 2 workers.*set {ENV}"):
        sluiceway.create_app(config(workers=2))


def test_a_directory_set_after_prometheus_client_was_imported_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    # This process imported prometheus_client without the variable: its metrics
    # live in memory, and setting the variable now changes nothing.
    monkeypatch.setenv(ENV, str(tmp_path))
    with pytest.raises(sluiceway.StartupError, match="imported before it was"):
        sluiceway.create_app(config())


def test_stale_files_are_those_of_processes_that_are_gone(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, check=True, text=True)
    dead = int(gone.stdout)
    alive = os.getppid()
    names = [
        f"counter_{dead}.db", f"histogram_{dead}.db", f"gauge_livesum_{dead}.db",
        f"counter_{os.getpid()}.db",  # an earlier process with this process's id
        f"counter_{alive}.db", f"gauge_livesum_{alive}.db",
        "notes.txt", "counter_x.db",
    ]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    removed = remove_stale_files(str(tmp_path))
    assert sorted(removed) == sorted(names[:4])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[4:])


def test_an_open_breaker_past_its_cooldown_is_reported_half_open() -> None:
    health = DeploymentHealth()
    now = time.monotonic()
    assert breaker_state(health, now) == "closed"
    for _ in range(health.settings.failures):
        health.record_failure(now=now)
    assert breaker_state(health, now) == "open"
    assert breaker_state(health, now + health.settings.cooldown + 1) == "half_open"


def test_metrics_behind_auth_need_an_operator_key(
    gateway_factory: Factory, keys: KeyStore, keys_path: Path,
) -> None:
    server = gateway_factory(config({}, keys_path))
    tenant = keys.create("tenant")  # after the config: not an operator
    for _ in range(100):  # the keys file is read again within its reload interval
        refused = httpx.get(server.url + "/metrics",
                            headers={"authorization": f"Bearer {tenant.secret}"})
        if refused.status_code != 401:
            break
        time.sleep(0.05)
    # Other callers' key ids and traffic are not a tenant's to read.
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "operator_only"
    info = httpx.get(server.url + "/info", headers={"authorization": f"Bearer {tenant.secret}"})
    assert info.status_code == 403
