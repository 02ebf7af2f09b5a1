"""``sluiceway serve --workers 2`` with PROMETHEUS_MULTIPROC_DIR: whichever worker
answers a scrape reports the totals of both.

The plugin (and prometheus_client) is imported by the supervising process before
it forks the workers, which is what these tests exercise: each starts real
``sluiceway serve`` processes with the variable in their environment. Every
request goes on a new connection, so the kernel spreads them over the workers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from sluiceway_prometheus import ENV

from sluiceway.testing import GatewayProcess

Start = Callable[..., list[GatewayProcess]]
Scrape = Any
CHAT = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}
PLAIN, STREAMED = 24, 16


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "plugins.toml"
    path.write_text("""
[gateway]
plugins = ["mock", "prometheus"]

[[providers]]
name = "mock"
type = "mock"
models = ["mock-gpt"]
""", encoding="utf-8")
    return path


@pytest.fixture
def metrics_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty directory, named in the environment the gateway processes inherit."""
    directory = tmp_path / "prometheus"
    directory.mkdir()
    monkeypatch.setenv(ENV, str(directory))
    return directory


def send(gateway: GatewayProcess, plain: int, streamed: int) -> dict[str, int]:
    """Chats, each on a new connection; the tokens the clients were told of."""
    tokens = {"prompt": 0, "completion": 0}
    for stream in [False] * plain + [True] * streamed:
        body = {**CHAT, "stream": stream}
        if stream:
            body["stream_options"] = {"include_usage": True}
        response = httpx.post(gateway.base_url + "/chat/completions", json=body, timeout=30)
        assert response.status_code == 200, response.text
        if stream:
            chunks = [json.loads(line[6:]) for line in response.text.splitlines()
                      if line.startswith("data: {")]
            usage = next(c["usage"] for c in chunks if c.get("usage"))
        else:
            usage = response.json()["usage"]
        tokens["prompt"] += usage["prompt_tokens"]
        tokens["completion"] += usage["completion_tokens"]
    return tokens


def counted(directory: Path, total: int) -> dict[str, float]:
    """Each process's count of answered chats, once they add up to ``total``.

    A client has its answer when the last byte is sent; the worker counts the
    request a moment later (on its RequestEnded event), so a scrape that another
    worker answers at once may still miss it. Wait (bounded) for the files."""
    for _ in range(1000):
        counts = chats_by_process(directory)
        if sum(counts.values()) >= total:
            return counts
        time.sleep(0.01)
    raise AssertionError(f"the workers counted {chats_by_process(directory)}, not {total}")


def chats_by_process(directory: Path) -> dict[str, float]:
    """Each process's count of answered chats, from its own counter file."""
    counts = {}
    for path in directory.glob("counter_*.db"):
        total = sum(
            s.value for metric in MultiProcessCollector.merge([str(path)])
            for s in metric.samples
            if s.name == "sluiceway_requests_total" and s.labels.get("route") == "chat"
        )
        if total:
            counts[path.stem.rpartition("_")[2]] = total
    return counts


def test_every_scrape_reports_the_totals_of_all_workers(
    gateway_processes: Start, config_path: Path, metrics_dir: Path,
    scrape: Callable[..., Scrape],
) -> None:
    (gateway,) = gateway_processes(config_path, 1, args=["--workers", "2"])
    tokens = send(gateway, PLAIN, STREAMED)
    total = PLAIN + STREAMED
    # Both workers answered some of the chats (and count them in their own file).
    # Once every chat is counted, every scrape must report exactly the totals.
    by_process = counted(metrics_dir, total)
    assert len(by_process) == 2
    assert sum(by_process.values()) == total
    for _ in range(8):  # on new connections: scrapes land on either worker
        metrics = scrape(gateway.url)
        assert metrics.value("sluiceway_requests_total", route="chat", status="200") == total
        assert metrics.value("sluiceway_request_duration_seconds_count", route="chat") == total
        assert metrics.value("sluiceway_upstream_latency_seconds_count", outcome="ok") == total
        assert metrics.value("sluiceway_time_to_first_token_seconds_count") == STREAMED
        assert metrics.series("sluiceway_tokens_total", "kind") == {
            ("prompt",): tokens["prompt"], ("completion",): tokens["completion"]}
        # Gauges are summed over the running workers: two pools of 1024 slots.
        assert metrics.value("sluiceway_pool_slots", provider="mock") == 2 * 1024
        assert metrics.value("sluiceway_deployment_state", state="closed") == 2


def test_a_restart_counts_from_zero_and_a_stopped_worker_leaves_the_gauges(
    gateway_processes: Start, config_path: Path, metrics_dir: Path,
    scrape: Callable[..., Scrape],
) -> None:
    (first,) = gateway_processes(config_path, 1, args=["--workers", "2"])
    send(first, 6, 0)
    assert sum(counted(metrics_dir, 6).values()) == 6
    assert first.stop() == 0
    # The workers withdrew their gauges; their counters stay until the next start.
    assert not list(metrics_dir.glob("gauge_*.db"))
    assert list(metrics_dir.glob("counter_*.db"))

    (second,) = gateway_processes(config_path, 1, args=["--workers", "2"])
    send(second, 3, 0)
    assert sum(counted(metrics_dir, 3).values()) == 3  # the first run's files are gone
    metrics = scrape(second.url)
    assert metrics.value("sluiceway_requests_total", route="chat") == 3
    assert metrics.value("sluiceway_pool_slots", provider="mock") == 2 * 1024


def test_several_workers_without_a_directory_refuse_to_start(
    gateway_processes: Start, config_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(ENV, raising=False)
    with pytest.raises(RuntimeError, match=f"with 2 workers.*set {ENV}"):
        gateway_processes(config_path, 1, args=["--workers", "2"])


def test_a_missing_directory_is_refused(
    gateway_processes: Start, config_path: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ENV, str(tmp_path / "absent"))
    with pytest.raises(RuntimeError, match="is not a directory; create it"):
        gateway_processes(config_path, 1, args=["--workers", "2"])
