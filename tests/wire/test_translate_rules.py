"""The translation rules one at a time: the choices a golden transcript cannot show."""

from __future__ import annotations

from typing import Any

import pytest

from sluiceway import InvalidRequest, UpstreamError
from sluiceway.wire.anthropic_stream import OpenAIChunkStream
from sluiceway.wire.chat_to_messages import anthropic_request, finish_reason, openai_usage

TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]


def _body(**fields: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}


def _translate(**fields: Any) -> dict[str, Any]:
    return anthropic_request(_body(**fields), model="claude", default_max_tokens=100)


def test_defaults_are_minimal() -> None:
    assert _translate() == {
        "model": "claude", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}],
    }


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        (None, None, None),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("auto", None, {"type": "auto"}),
        ("required", None, {"type": "any"}),
        ("none", False, {"type": "none"}),
        ({"type": "function", "function": {"name": "f"}}, False,
         {"type": "tool", "name": "f", "disable_parallel_tool_use": True}),
    ],
)
def test_tool_choice(choice: Any, parallel: Any, expected: Any) -> None:
    result = _translate(tools=TOOLS, tool_choice=choice, parallel_tool_calls=parallel)
    assert result.get("tool_choice") == expected
    assert result["tools"] == [{"name": "f", "input_schema": {"type": "object"}}]


@pytest.mark.parametrize(
    ("fields", "thinking", "max_tokens"),
    [
        ({"reasoning_effort": "none"}, None, 100),
        ({"reasoning_effort": "low"}, {"type": "enabled", "budget_tokens": 1024}, 1124),
        ({"reasoning_effort": "high", "max_tokens": 5000},
         {"type": "enabled", "budget_tokens": 4999}, 5000),
        ({"reasoning_effort": "high", "thinking": {"type": "enabled", "budget_tokens": 2000},
          "max_completion_tokens": 3000}, {"type": "enabled", "budget_tokens": 2000}, 3000),
    ],
)
def test_thinking_rule(fields: dict[str, Any], thinking: Any, max_tokens: int) -> None:
    result = _translate(**fields)
    assert result.get("thinking") == thinking
    assert result["max_tokens"] == max_tokens


def test_effort_that_cannot_fit_is_refused() -> None:
    with pytest.raises(InvalidRequest) as caught:
        _translate(reasoning_effort="low", max_tokens=800)
    assert caught.value.param == "max_tokens"


@pytest.mark.parametrize(
    ("message", "param"),
    [
        ({"role": "assistant", "content": None, "tool_calls": [
            {"id": "t", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]},
         "messages[1].tool_calls[0].function.arguments"),
        ({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]},
         "messages[1].content[0].image_url.url"),
        ({"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]},
         "messages[1].content[0]"),
    ],
)
def test_untranslatable_messages_are_400s_naming_the_param(
    message: dict[str, Any], param: str
) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}, message]}
    with pytest.raises(InvalidRequest) as caught:
        anthropic_request(body, model="claude")
    assert caught.value.param == param


def test_several_choices_are_refused() -> None:
    with pytest.raises(InvalidRequest):
        _translate(n=2)


def test_cache_control_on_system_parts_keeps_blocks() -> None:
    system = {"role": "system", "content": [
        {"type": "text", "text": "long", "cache_control": {"type": "ephemeral"}}]}
    body = {"model": "m", "messages": [system, {"role": "user", "content": "hi"}]}
    result = anthropic_request(body, model="claude")
    assert result["system"] == [
        {"type": "text", "text": "long", "cache_control": {"type": "ephemeral"}}
    ]


@pytest.mark.parametrize(
    ("stop", "finish"),
    [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"),
     ("tool_use", "tool_calls"), ("pause_turn", "stop"), ("refusal", "content_filter"),
     ("something_new", "stop"), (None, None)],
)
def test_stop_reasons(stop: str | None, finish: str | None) -> None:
    assert finish_reason(stop) == finish


def test_usage_counts_cache_reads_and_writes_as_prompt() -> None:
    usage = openai_usage({"input_tokens": 5, "cache_read_input_tokens": 100,
                          "cache_creation_input_tokens": 20, "output_tokens": 7})
    assert usage == {
        "prompt_tokens": 125, "completion_tokens": 7, "total_tokens": 132,
        "prompt_tokens_details": {"cached_tokens": 100, "cache_creation_tokens": 20},
    }


def _start() -> tuple[str, dict[str, Any]]:
    return ("message_start", {"type": "message_start", "message": {
        "id": "msg_1", "model": "claude", "usage": {"input_tokens": 3, "output_tokens": 1}}})


def test_tool_call_deltas_count_tool_calls_only() -> None:
    stream = OpenAIChunkStream(created=1)
    events = [
        _start(),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        ("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {
            "type": "tool_use", "id": "toolu_a", "name": "f", "input": {}}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                 "delta": {"type": "input_json_delta", "partial_json": "{\"a\""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                 "delta": {"type": "input_json_delta", "partial_json": ": 1}"}}),
    ]
    deltas = [c["choices"][0]["delta"] for name, data in events for c in stream.feed(name, data)]
    assert deltas == [
        {"role": "assistant", "content": ""},
        {"tool_calls": [{"index": 0, "id": "toolu_a", "type": "function",
                         "function": {"name": "f", "arguments": ""}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\""}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]},
    ]


def test_message_delta_usage_updates_the_start_usage() -> None:
    stream = OpenAIChunkStream(created=1)
    stream.feed(*_start())
    stream.feed("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                                  "usage": {"output_tokens": 9, "input_tokens": None}})
    (chunk,) = stream.feed("message_stop", {"type": "message_stop"})
    assert chunk["choices"] == []
    assert chunk["usage"]["prompt_tokens"] == 3 and chunk["usage"]["completion_tokens"] == 9
    assert stream.done
    stream.finish()


@pytest.mark.parametrize(
    ("kind", "code"),
    [("overloaded_error", "upstream_overloaded"), ("api_error", "upstream_stream_error")],
)
def test_error_event_raises_upstream_error(kind: str, code: str) -> None:
    stream = OpenAIChunkStream(provider="claude", created=1)
    stream.feed(*_start())
    assert stream.feed("ping", {"type": "ping"}) == []
    with pytest.raises(UpstreamError) as caught:
        stream.feed("error", {"type": "error", "error": {"type": kind, "message": "Overloaded"}})
    assert caught.value.kind == "server"
    assert caught.value.code == code
    assert caught.value.message == f"Provider 'claude' failed mid-stream: Overloaded ({kind})"


def test_stream_without_message_stop_is_truncated() -> None:
    stream = OpenAIChunkStream(provider="claude", created=1)
    stream.feed(*_start())
    with pytest.raises(UpstreamError) as caught:
        stream.finish()
    assert caught.value.code == "upstream_stream_truncated"
