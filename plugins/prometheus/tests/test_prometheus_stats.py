"""GET /metrics with ``Accept: application/json``: the gateway's JSON stats, taken while
requests are in flight (the mock waits 600 ms before its first token); and the
Prometheus gauges at the same moment."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sluiceway_api_keys import KeyStore

from sluiceway.testing import RunningServer

Factory = Callable[..., RunningServer]
BURST = 4


def config(keys_path: Path) -> dict[str, Any]:
    result: dict[str, Any] = {
        "gateway": {"plugins": ["mock", "api-keys", "prometheus"],
                    "max_concurrent_requests": 50},
        "providers": [{"name": "mock", "type": "mock", "models": ["mock-gpt"], "ttft": "600ms",
                       "concurrency": 3}],
        "auth": {"chain": ["api-keys"], "api-keys": {"keys_file": str(keys_path)}},
    }
    # The keys created so far may read every caller's stats.
    result["gateway"]["operator_keys"] = [r.id for r in KeyStore(keys_path).read()]
    return result


def gauges(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text) if family.type == "gauge"
        for s in family.samples
    }


async def test_json_stats_show_requests_in_flight(
    gateway_factory: Factory, keys: KeyStore, keys_path: Path
) -> None:
    caller = keys.create("caller")
    server = gateway_factory(config(keys_path))
    auth = {"authorization": f"Bearer {caller.secret}"}
    as_json = {**auth, "accept": "application/json"}
    body = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}
    async with httpx.AsyncClient(base_url=server.url, timeout=30, headers=auth) as client:
        calls = [asyncio.create_task(client.post("/v1/chat/completions", json=body))
                 for _ in range(BURST)]
        # Wait (bounded) until the whole burst holds or waits for a slot of the mock,
        # which answers each after 600 ms.
        for _ in range(500):
            first = (await client.get("/metrics", headers=as_json)).json()
            if first["providers"]["mock"]["queued"] == BURST - 3:
                break
            await asyncio.sleep(0.005)
        text = (await client.get("/metrics")).text
        await asyncio.sleep(0.05)
        second = (await client.get("/metrics", headers=as_json)).json()
        answers = await asyncio.gather(*calls)
        assert all(r.status_code == 200 for r in answers)
        # Each chat ends on the server a moment after its client has the answer.
        for _ in range(500):
            after = (await client.get("/metrics", headers=as_json)).json()
            if after["concurrent_requests"] == 1:
                break
            await asyncio.sleep(0.01)

    chats = [[a for a in s["active_requests"] if a["route"] == "chat"] for s in (first, second)]
    assert [len(c) for c in chats] == [BURST, BURST]
    assert {a["key_id"] for a in chats[0]} == {caller.record.id}
    assert {a["id"] for a in chats[0]} == {a["id"] for a in chats[1]}
    # The mock serves 3 at once: the fourth waits for a slot, routed already.
    assert {a["model"] for a in chats[0]} == {"mock-gpt"}
    before = {a["id"]: a["duration_s"] for a in chats[0]}
    assert all(a["duration_s"] > before[a["id"]] for a in chats[1])  # growing
    assert first["concurrent_requests"] == BURST + 1  # the burst and this request
    assert first["available_slots"] == 50 - BURST
    assert first["providers"]["mock"] == {"active": 3, "queued": 1, "available": 0,
                                          "concurrency": 3}
    assert set(first) >= {"total_requests", "max_concurrent_requests", "average_response_time_s"}
    # Right after the burst: the most ever in flight is the burst and one stats request.
    assert after["max_concurrent_requests"] == BURST + 1
    assert after["concurrent_requests"] == 1
    assert [a["route"] for a in after["active_requests"]] == ["metrics"]
    assert after["finished_requests"] == after["total_requests"] - 1
    assert after["average_response_time_s"] > 0

    # The Prometheus gauges at the moment of the burst.
    seen = gauges(text)
    assert seen[("sluiceway_requests_in_flight", (("route", "chat"),))] == BURST
    assert seen[("sluiceway_requests_in_flight", (("route", "metrics"),))] == 1
    assert seen[("sluiceway_pool_active", (("provider", "mock"),))] == 3
    assert seen[("sluiceway_pool_queued", (("provider", "mock"),))] == 1
    assert seen[("sluiceway_pool_slots", (("provider", "mock"),))] == 3
