"""Golden transcripts: Anthropic <-> OpenAI, streamed and whole, both directions.

Each ``golden/stream_*.json`` holds an Anthropic event sequence as the API
sends it, the Anthropic message the same answer would be without streaming,
and the expected translations: OpenAI chunks, the OpenAI completion, and the
way back (Anthropic events and message from the OpenAI side, for the ingress).
Each ``golden/request_*.json`` holds an OpenAI request, its Anthropic body, and
the OpenAI body the ingress makes of that Anthropic body.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sluiceway.wire.anthropic_stream import AnthropicEventStream, OpenAIChunkStream
from sluiceway.wire.chat_to_messages import anthropic_request, openai_completion
from sluiceway.wire.messages_to_chat import anthropic_message, openai_request

GOLDEN = Path(__file__).parent / "golden"
CREATED = 1700000000
STREAMS = sorted(p.stem for p in GOLDEN.glob("stream_*.json"))
REQUESTS = sorted(p.stem for p in GOLDEN.glob("request_*.json"))


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((GOLDEN / f"{name}.json").read_text())
    return data


def _translate(events: list[list[Any]]) -> list[dict[str, Any]]:
    stream = OpenAIChunkStream(provider="claude", created=CREATED)
    chunks = [chunk for name, data in events for chunk in stream.feed(name, data)]
    stream.finish()
    return chunks


def reassemble(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """Fold OpenAI chunks into the completion they stand for (as a client would)."""
    first = chunks[0]
    content: list[str] = []
    reasoning: list[str] = []
    thinking_blocks: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    finish = None
    usage = None
    for chunk in chunks:
        assert chunk["id"] == first["id"] and chunk["object"] == "chat.completion.chunk"
        if chunk.get("usage") is not None:
            usage = chunk["usage"]
        for choice in chunk["choices"]:
            delta = choice["delta"]
            content.append(delta.get("content") or "")
            reasoning.append(delta.get("reasoning_content") or "")
            thinking_blocks.extend(delta.get("thinking_blocks") or ())
            for call in delta.get("tool_calls") or ():
                if call["index"] == len(calls):
                    calls.append({"id": call["id"], "type": call["type"],
                                  "function": {"name": call["function"]["name"],
                                               "arguments": ""}})
                calls[call["index"]]["function"]["arguments"] += call["function"]["arguments"]
            finish = choice["finish_reason"] or finish
    text = "".join(content)
    message: dict[str, Any] = {"role": "assistant",
                               "content": None if not text and calls else text}
    if any(reasoning):
        message["reasoning_content"] = "".join(reasoning)
    if thinking_blocks:
        message["thinking_blocks"] = thinking_blocks
    if calls:
        message["tool_calls"] = calls
    return {
        "id": first["id"], "object": "chat.completion", "created": first["created"],
        "model": first["model"],
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage,
    }


def _arguments_as_json(completion: dict[str, Any]) -> dict[str, Any]:
    """Tool arguments parsed: whitespace in streamed JSON fragments is the upstream's."""
    completion = json.loads(json.dumps(completion))
    for call in completion["choices"][0]["message"].get("tool_calls") or ():
        call["function"]["arguments"] = json.loads(call["function"]["arguments"])
    return completion


def _content_events(events: list[list[Any]]) -> list[list[Any]]:
    """The block events, without pings and empty JSON fragments (which carry nothing)."""
    return [
        [name, data] for name, data in events
        if name.startswith("content_block")
        and data.get("delta", {}).get("partial_json", None) != ""
    ]


@pytest.mark.parametrize("name", STREAMS)
def test_anthropic_events_translate_to_the_golden_chunks(name: str) -> None:
    golden = _load(name)
    assert _translate(golden["anthropic_events"]) == golden["openai_chunks"]


@pytest.mark.parametrize("name", STREAMS)
def test_anthropic_message_translates_to_the_golden_completion(name: str) -> None:
    golden = _load(name)
    assert openai_completion(golden["anthropic_message"], created=CREATED) == (
        golden["openai_completion"]
    )


@pytest.mark.parametrize("name", STREAMS)
def test_reassembled_stream_equals_the_whole_answer(name: str) -> None:
    golden = _load(name)
    streamed = reassemble(_translate(golden["anthropic_events"]))
    whole = openai_completion(golden["anthropic_message"], created=CREATED)
    assert _arguments_as_json(streamed) == _arguments_as_json(whole)


@pytest.mark.parametrize("name", STREAMS)
def test_openai_chunks_translate_back_to_the_golden_events(name: str) -> None:
    golden = _load(name)
    stream = AnthropicEventStream()
    events = [list(e) for chunk in golden["openai_chunks"] for e in stream.feed(chunk)]
    events += [list(e) for e in stream.finish()]
    assert events == golden["anthropic_events_back"]
    # Every content block survives the round trip exactly.
    assert _content_events(events) == _content_events(golden["anthropic_events"])
    names = [e[0] for e in events]
    assert names[:2] == ["message_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]
    # Usage comes back whole at the end.
    original_stop = golden["anthropic_events"][-2][1]
    assert events[-2][1]["delta"] == original_stop["delta"]
    assert events[-2][1]["usage"]["output_tokens"] == original_stop["usage"]["output_tokens"]


@pytest.mark.parametrize("name", STREAMS)
def test_openai_completion_translates_back_to_the_message(name: str) -> None:
    golden = _load(name)
    back = anthropic_message(golden["openai_completion"])
    assert back == golden["anthropic_message_back"]
    original = golden["anthropic_message"]
    assert back["content"] == original["content"]
    assert back["stop_reason"] == original["stop_reason"]
    usage = {k: v for k, v in back["usage"].items() if v or k in original["usage"]}
    assert usage == original["usage"]


@pytest.mark.parametrize("name", REQUESTS)
def test_openai_request_translates_to_the_golden_anthropic_body(name: str) -> None:
    golden = _load(name)
    body = golden["openai_request"]
    result = anthropic_request(
        body, model="claude-sonnet-4", default_max_tokens=4096, stream=bool(body.get("stream"))
    )
    assert result == golden["anthropic_request"]


@pytest.mark.parametrize("name", REQUESTS)
def test_anthropic_request_translates_back_and_round_trips(name: str) -> None:
    golden = _load(name)
    anthropic = golden["anthropic_request"]
    back = openai_request(anthropic)
    assert back == golden["openai_request_back"]
    again = anthropic_request(back, model=anthropic["model"], stream=bool(back.get("stream")))
    assert again == _text_results_as_strings(anthropic)


def _text_results_as_strings(body: dict[str, Any]) -> dict[str, Any]:
    """Text-only tool results become one string on the way through OpenAI's shape."""
    body = json.loads(json.dumps(body))
    for message in body["messages"]:
        for block in message["content"] if isinstance(message["content"], list) else ():
            content = block.get("content")
            if block["type"] == "tool_result" and isinstance(content, list):
                block["content"] = "".join(part["text"] for part in content)
    return body
