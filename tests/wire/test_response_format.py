"""response_format on an Anthropic upstream: the tool-use technique both ways,
whole and streamed, and json_object by instruction."""

from __future__ import annotations

import json
from typing import Any

from sluiceway.wire.anthropic_stream import OpenAIChunkStream
from sluiceway.wire.chat_to_messages import anthropic_request, openai_completion

HI: list[Any] = [{"role": "user", "content": "hi"}]
OBJECT = {"type": "object", "properties": {"answer": {"type": "string"}}}


def _schema(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "out", "schema": schema}}


def test_a_schema_becomes_the_one_tool_the_model_must_call() -> None:
    body = anthropic_request({"messages": HI, "response_format": _schema(OBJECT)}, model="m")
    assert body["tools"] == [{"name": "json_response", "input_schema": OBJECT,
                              "description": "Respond with a JSON value matching this schema."}]
    assert body["tool_choice"] == {"type": "tool", "name": "json_response"}


def test_with_the_clients_tools_with_thinking_and_without_an_object_root() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": OBJECT}}]
    both = anthropic_request({"messages": HI, "tools": tools,
                              "response_format": _schema(OBJECT)}, model="m")
    assert [t["name"] for t in both["tools"]] == ["f", "json_response"]
    assert both["tool_choice"] == {"type": "any"}
    thinking = anthropic_request({"messages": HI, "reasoning_effort": "low",
                                  "response_format": _schema(OBJECT)}, model="m")
    assert "tool_choice" not in thinking  # Anthropic forbids a forced tool with thinking
    assert "json_response tool" in thinking["system"]
    listed = anthropic_request({"messages": HI, "response_format": _schema(
        {"type": "array", "items": {"type": "integer"}})}, model="m")
    (tool,) = listed["tools"]
    assert tool["name"] == "json_response_value"
    assert tool["input_schema"]["properties"]["value"] == {
        "type": "array", "items": {"type": "integer"}}


def test_json_object_is_asked_in_the_system_prompt() -> None:
    plain = anthropic_request({"messages": HI, "response_format": {"type": "json_object"}},
                              model="m")
    assert plain["system"] == "Respond with a single JSON object and nothing else."
    after = anthropic_request({"messages": [{"role": "system", "content": "Be terse."}, *HI],
                               "response_format": {"type": "json_object"}}, model="m")
    assert after["system"] == "Be terse.\n\nRespond with a single JSON object and nothing else."
    assert "tools" not in after


def _message(name: str, tool_input: Any) -> dict[str, Any]:
    return {"id": "msg", "type": "message", "model": "m", "stop_reason": "tool_use",
            "content": [{"type": "text", "text": "Sure."},
                        {"type": "tool_use", "id": "t", "name": name, "input": tool_input}],
            "usage": {"input_tokens": 3, "output_tokens": 5}}


def test_the_tool_call_comes_back_as_the_answer() -> None:
    whole = openai_completion(_message("json_response", {"answer": "4"}))
    choice = whole["choices"][0]
    assert json.loads(choice["message"]["content"]) == {"answer": "4"}
    assert choice["finish_reason"] == "stop" and "tool_calls" not in choice["message"]
    wrapped = openai_completion(_message("json_response_value", {"value": [1, 2]}))
    assert json.loads(wrapped["choices"][0]["message"]["content"]) == [1, 2]
    # A client's own tool is still a tool call.
    own = openai_completion(_message("get_weather", {"city": "Paris"}))
    assert own["choices"][0]["finish_reason"] == "tool_calls"


def _stream(name: str, raw: str) -> list[dict[str, Any]]:
    translator = OpenAIChunkStream(created=0)
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": {"id": "m1", "model": "m", "usage": {}}},
        {"type": "content_block_start", "index": 0,
         "content_block": {"type": "tool_use", "id": "t", "name": name, "input": {}}},
        *({"type": "content_block_delta", "index": 0,
           "delta": {"type": "input_json_delta", "partial_json": raw[i:i + 4]}}
          for i in range(0, len(raw), 4)),
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"},
         "usage": {"output_tokens": 5}},
        {"type": "message_stop"},
    ]
    return [chunk for event in events for chunk in translator.feed(None, event)]


def test_a_streamed_tool_call_streams_as_the_answer() -> None:
    chunks = _stream("json_response", '{"answer": "4"}')
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert json.loads(text) == {"answer": "4"}
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "stop"
    assert not any("tool_calls" in c["choices"][0]["delta"] for c in chunks if c["choices"])
    wrapped = _stream("json_response_value", '{"value": [1, 2]}')
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in wrapped if c["choices"])
    assert json.loads(text) == [1, 2]


def test_an_empty_answer_streams_as_the_whole_answer_says_it() -> None:
    """Anthropic streams no fragment for an empty input; the whole answer is "{}"."""
    chunks = _stream("json_response", "")
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    whole = openai_completion(_message("json_response", {}))
    assert text == whole["choices"][0]["message"]["content"] == "{}"


def test_the_clients_tool_choice_cannot_switch_the_answer_off() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": OBJECT}}]
    none = anthropic_request({"messages": HI, "tools": tools, "tool_choice": "none",
                              "response_format": _schema(OBJECT)}, model="m")
    assert none["tool_choice"] == {"type": "any"}
    auto = anthropic_request({"messages": HI, "tools": tools, "parallel_tool_calls": False,
                              "response_format": _schema(OBJECT)}, model="m")
    assert auto["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}


def test_definitions_stay_at_the_root_of_a_wrapped_schema() -> None:
    schema = {"anyOf": [{"$ref": "#/$defs/A"}, {"type": "null"}],
              "$defs": {"A": {"type": "object"}}}
    (tool,) = anthropic_request({"messages": HI, "response_format": _schema(schema)},
                                model="m")["tools"]
    assert tool["input_schema"]["$defs"] == {"A": {"type": "object"}}
    assert tool["input_schema"]["properties"]["value"] == {"anyOf": schema["anyOf"]}


def test_text_beside_the_answer_is_not_streamed_but_kept_when_there_is_no_answer() -> None:
    def run(blocks: list[dict[str, Any]]) -> str:
        translator = OpenAIChunkStream(created=0, json_answer=True)
        events: list[dict[str, Any]] = [
            {"type": "message_start", "message": {"id": "m1", "model": "m", "usage": {}}}]
        for index, block in enumerate(blocks):
            events.append({"type": "content_block_start", "index": index,
                           "content_block": {k: v for k, v in block.items() if k != "delta"}})
            events.append({"type": "content_block_delta", "index": index,
                           "delta": block["delta"]})
            events.append({"type": "content_block_stop", "index": index})
        events += [{"type": "message_delta", "delta": {"stop_reason": "end_turn"}},
                   {"type": "message_stop"}]
        chunks = [c for e in events for c in translator.feed(None, e)]
        return "".join(c["choices"][0]["delta"].get("content") or ""
                       for c in chunks if c["choices"])

    text = {"type": "text", "text": "", "delta": {"type": "text_delta", "text": "Here: "}}
    tool = {"type": "tool_use", "id": "t", "name": "json_response", "input": {},
            "delta": {"type": "input_json_delta", "partial_json": '{"a": 1}'}}
    assert json.loads(run([text, tool])) == {"a": 1}
    assert run([text]) == "Here: "
