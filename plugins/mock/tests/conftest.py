"""Fixtures for the mock provider's tests: a real gateway on hypercorn, driven by the SDK."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from sluiceway.testing import RunningServer

MockGateway = Callable[..., RunningServer]
Chunks = list[dict[str, Any]]


@pytest.fixture
def mock_gateway(gateway_factory: Callable[..., RunningServer]) -> MockGateway:
    """Start a gateway whose only provider is a ``mock`` with the given options."""

    def start(**options: Any) -> RunningServer:
        table: dict[str, Any] = {"name": "mock", "type": "mock"}
        table["models"] = options.pop("models", ["mock-gpt", "mock-reasoner"])
        # These tests look at the mock's own faults, so the gateway must neither
        # retry them nor rest the provider after a few.
        table.update({"max_retries": 0, "cooldown_failures": 1000})
        table.update(options)
        return gateway_factory({"gateway": {"plugins": ["mock"]}, "providers": [table]})

    return start


@pytest.fixture
def server(mock_gateway: MockGateway) -> RunningServer:
    """A gateway with default options, ``mock-reasoner`` reasoning."""
    return mock_gateway(reasoning_models=["mock-reasoner"], allow_request_faults=True)


@pytest.fixture
def client(server: RunningServer) -> Iterator[openai.OpenAI]:
    """A synchronous OpenAI client for ``server`` that never retries."""
    with openai.OpenAI(api_key="x", base_url=server.base_url, max_retries=0) as sdk:
        yield sdk


def _raw_stream(server: RunningServer, body: dict[str, Any]) -> Chunks:
    chunks: list[dict[str, Any]] = []
    with httpx.Client(timeout=30) as http, http.stream(
        "POST", server.base_url + "/chat/completions", json={**body, "stream": True}
    ) as response:
        assert response.status_code == 200, response.read()
        done = False
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            assert not done, "data after [DONE]"
            if line == "data: [DONE]":
                done = True
                continue
            chunks.append(json.loads(line[6:]))
        assert done, "the stream did not end with [DONE]"
    return chunks


def _reassemble(chunks: Chunks) -> dict[int, dict[str, Any]]:
    messages: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for choice in chunk["choices"]:
            message = messages.setdefault(choice["index"], {"finish_reason": None})
            delta = choice["delta"]
            if "role" in delta:
                assert "role" not in message, "role sent twice"
                message["role"] = delta["role"]
                message["content"] = delta["content"]
            for key in ("content", "reasoning_content"):
                if key in delta and "role" not in delta:
                    message[key] = (message.get(key) or "") + delta[key]
            for call in delta.get("tool_calls", ()):
                calls = message.setdefault("tool_calls", [])
                if "id" in call:
                    assert call["index"] == len(calls)
                    assert call["type"] == "function"
                    assert call["function"]["arguments"] == ""
                    calls.append({"id": call["id"], "type": "function",
                                  "function": {"name": call["function"]["name"],
                                               "arguments": ""}})
                else:
                    assert set(call) == {"index", "function"}
                    assert set(call["function"]) == {"arguments"}
                    calls[call["index"]]["function"]["arguments"] += call["function"]["arguments"]
            if choice["finish_reason"] is not None:
                assert message["finish_reason"] is None, "finished twice"
                message["finish_reason"] = choice["finish_reason"]
    return messages


@pytest.fixture
def raw_stream() -> Callable[[RunningServer, dict[str, Any]], Chunks]:
    """POST a streaming request over plain HTTP; return every ``data:`` payload
    before ``[DONE]`` (asserting that ``[DONE]`` ends the stream)."""
    return _raw_stream


@pytest.fixture
def reassemble() -> Callable[[Chunks], dict[int, dict[str, Any]]]:
    """Fold chunk deltas into one message per choice index, asserting OpenAI's
    delta rules on the way (role once, tool calls opened then extended)."""
    return _reassemble
