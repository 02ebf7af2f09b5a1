"""The exact Anthropic event sequence POST /v1/messages streams, frame by frame.

Each ``golden/messages_*.json`` is the transcript of one streamed answer from the
seeded mock provider, as ``[event, data]`` pairs read off the wire (the message
id, fresh per answer, is written ``msg_golden``). The raw bytes are checked too:
every frame is exactly an ``event:`` line and a ``data:`` line (the Anthropic SDK
skips frames without an ``event:`` line), and the event name is its data's type.

After an intended change, rewrite the transcripts with
``SLUICEWAY_WRITE_GOLDEN=1 .venv/bin/pytest tests/e2e/test_messages_golden.py``
and review the diff.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from sluiceway.testing import RunningServer

GOLDEN = Path(__file__).parent / "golden"
CITY: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo"]}},
    "required": ["city"],
    "additionalProperties": False,
}
REQUESTS: dict[str, dict[str, Any]] = {
    "messages_text": {"model": "mock-gpt", "max_tokens": 100,
                      "messages": [{"role": "user", "content": "Say hello."}]},
    "messages_tool_use": {"model": "mock-gpt", "max_tokens": 100,
                          "messages": [{"role": "user", "content": "Weather? get_city"}],
                          "tools": [{"name": "get_city", "input_schema": CITY}]},
    "messages_thinking": {"model": "mock-reasoner", "max_tokens": 100,
                          "thinking": {"type": "enabled", "budget_tokens": 1024},
                          "messages": [{"role": "user", "content": "Two and two?"}]},
}


@pytest.fixture
def server(gateway_factory: Callable[..., RunningServer]) -> RunningServer:
    return gateway_factory({"gateway": {"plugins": ["mock"]}, "providers": [{
        "name": "mock", "type": "mock", "models": ["mock-gpt", "mock-reasoner"],
        "reasoning_models": ["mock-reasoner"], "response_tokens": 5,
    }]})


def transcript(server: RunningServer, body: dict[str, Any]) -> list[list[Any]]:
    """The ``[event, data]`` pairs of a streamed answer, checking every frame."""
    with httpx.Client(timeout=30) as http, http.stream(
        "POST", server.url + "/v1/messages", json={**body, "stream": True},
        headers={"anthropic-version": "2023-06-01"},
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        raw = response.read()
    assert raw.endswith(b"\n\n")
    events: list[list[Any]] = []
    for frame in raw[:-2].split(b"\n\n"):
        event_line, data_line = frame.split(b"\n")
        assert event_line.startswith(b"event: ") and data_line.startswith(b"data: ")
        name, data = event_line[7:].decode(), json.loads(data_line[6:])
        assert data["type"] == name
        events.append([name, data])
    return events


def _normalised(events: list[list[Any]]) -> list[list[Any]]:
    assert events[0][0] == "message_start"
    events[0][1]["message"]["id"] = "msg_golden"
    return events


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_streamed_events_match_the_golden_transcript(server: RunningServer, name: str) -> None:
    events = _normalised(transcript(server, REQUESTS[name]))
    path = GOLDEN / f"{name}.json"
    if os.environ.get("SLUICEWAY_WRITE_GOLDEN"):
        path.write_text(json.dumps(events, indent=1) + "\n")
    assert events == json.loads(path.read_text())


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_event_sequence_follows_anthropics_grammar(name: str) -> None:
    """message_start, ping, then blocks (start, deltas of the block's own kind,
    stop) indexed from 0, then message_delta and message_stop, each once."""
    names = [event for event, _ in json.loads((GOLDEN / f"{name}.json").read_text())]
    assert names[:2] == ["message_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]
    delta_kinds = {"text": "text_delta", "thinking": "thinking_delta",
                   "tool_use": "input_json_delta"}
    open_block: tuple[int, str] | None = None
    index = 0
    for event, data in json.loads((GOLDEN / f"{name}.json").read_text())[2:-2]:
        if event == "content_block_start":
            assert open_block is None and data["index"] == index
            open_block = (index, data["content_block"]["type"])
        elif event == "content_block_delta":
            assert open_block is not None and data["index"] == open_block[0]
            assert data["delta"]["type"] == delta_kinds[open_block[1]]
        else:
            assert event == "content_block_stop" and open_block is not None
            assert data["index"] == open_block[0]
            open_block, index = None, index + 1
    assert open_block is None and index >= 1
