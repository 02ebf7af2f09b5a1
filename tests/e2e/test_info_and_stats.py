"""``GET /info`` describes the gateway without secrets, and its live statistics show
requests in flight with growing durations and the most ever in flight at once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx

from sluiceway.testing import RunningServer

Factory = Callable[..., RunningServer]
LITERAL = "sk-literal-upstream-key-0123456789"


def config(fake_url: str) -> dict[str, Any]:
    return {
        "gateway": {"plugins": ["mock", "openai"], "max_concurrent_requests": 50},
        "providers": [
            {"name": "mock", "type": "mock", "models": ["mock-gpt"], "ttft": "600ms",
             "response_tokens": 7, "token_delay": "5ms"},
            {"name": "up", "type": "openai", "base_url": fake_url, "api_key": LITERAL,
             "models": [{"name": "gpt-up", "upstream": "fake-model"}]},
        ],
        "plugin": {"mock": {
            "note": "x", "webhook_token": "literal-token-value",
            "storage": "redis://:hunter2@redis.internal:6379/0",
            "upstreams": [{"url": "https://user:pa55word@example.test/v1?token=t0ken"}],
            "headers": {"x-custom": "Bearer h3ader"},
            "private_key": "-----BEGIN KEY-----",
        }},
    }


def test_info_describes_the_gateway_without_secrets(
    gateway_factory: Factory, fake_openai: Callable[..., Any]
) -> None:
    server = gateway_factory(config(fake_openai().url))
    response = httpx.get(server.url + "/info")
    assert response.status_code == 200
    info = response.json()
    assert info["version"]
    assert [p["name"] for p in info["plugins"] if not p.get("builtin")] == ["mock", "openai"]
    assert info["models"] == ["gpt-up", "mock-gpt"]
    assert "GET /info (sluiceway.core)" in info["routes"]
    assert info["limits"]["gateway"]["max_concurrent_requests"] == 50
    assert info["limits"]["plugins"]["mock"] == {
        "note": "x", "webhook_token": "***",
        "storage": "redis://***@redis.internal:6379/0",
        "upstreams": [{"url": "https://***@example.test/v1?token=***"}],
        "headers": "***", "private_key": "***",
    }
    for secret in ("hunter2", "pa55word", "t0ken", "h3ader", "BEGIN KEY"):
        assert secret not in response.text
    # Numbers under token-ish names are settings, shown as they are.
    mock = next(p for p in info["providers"] if p["name"] == "mock")
    assert (mock["options"]["response_tokens"], mock["options"]["token_delay"]) == (7, 0.005)
    up = next(p for p in info["providers"] if p["name"] == "up")
    assert up["options"]["api_key"] == "***"
    assert LITERAL not in response.text and "literal-token-value" not in response.text
    assert info["stats"]["total_requests"] >= 1


async def test_info_stats_show_requests_in_flight(gateway_factory: Factory,
                                                  fake_openai: Callable[..., Any]) -> None:
    server = gateway_factory(config(fake_openai().url))
    body = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        calls = [asyncio.create_task(client.post("/v1/chat/completions", json=body))
                 for _ in range(4)]
        snapshots = []
        for _ in range(2):
            await asyncio.sleep(0.2)
            snapshots.append((await client.get("/info")).json()["stats"])
        assert all(r.status_code == 200 for r in await asyncio.gather(*calls))
        after = (await client.get("/info")).json()["stats"]

    first = snapshots[0]
    # Four chats and the /info request itself are in flight.
    chats = [[a for a in s["active_requests"] if a["route"] == "chat"] for s in snapshots]
    assert [len(c) for c in chats] == [4, 4]
    assert {a["model"] for a in chats[0]} == {"mock-gpt"}
    assert {a["id"] for a in chats[0]} == {a["id"] for a in chats[1]}
    by_id = {a["id"]: a["duration_s"] for a in chats[0]}
    assert all(a["duration_s"] > by_id[a["id"]] for a in chats[1])  # growing
    assert first["concurrent_requests"] == 5
    assert first["available_slots"] == 50 - 4  # only model calls take a slot
    assert first["providers"]["mock"]["active"] == 4
    assert after["max_concurrent_requests"] >= 5
    assert after["total_requests"] == after["finished_requests"] + 1  # this one
    assert after["average_response_time_s"] > 0
    assert [a["route"] for a in after["active_requests"]] == ["info"]
