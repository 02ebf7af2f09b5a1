"""Tool calls and structured output, through a real gateway."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from sluiceway_mock.answer import JSON_OBJECT_SCHEMA
from sluiceway_mock.text import count_tokens

from sluiceway.testing import RunningServer

Chunks = list[dict[str, Any]]
RawStream = Callable[[RunningServer, dict[str, Any]], Chunks]
Reassemble = Callable[[Chunks], dict[int, dict[str, Any]]]

WEATHER: dict[str, Any] = {
    "type": "object",
    "properties": {
        "location": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["location", "unit"],
    "additionalProperties": False,
}
SEARCH: dict[str, Any] = {
    "type": "object",
    "properties": {
        "query": {"type": "string", "minLength": 3},
        "filters": {"type": "array", "items": {"type": "string", "enum": ["news", "web"]}},
    },
    "required": ["query", "filters"],
    "additionalProperties": False,
}
TOOLS: list[dict[str, Any]] = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "web_search", "parameters": SEARCH}},
]
SCHEMAS = {"get_weather": WEATHER, "web_search": SEARCH}
ASK: list[dict[str, Any]] = [{"role": "user", "content": "Plan my weekend."}]


def _post(server: RunningServer, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(server.base_url + "/chat/completions", json=body, timeout=30)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def _create(client: openai.OpenAI, **kwargs: Any) -> Any:
    """``create`` with plain dicts (the SDK's TypedDict overloads are not the point here)."""
    kwargs.setdefault("model", "mock-gpt")
    kwargs.setdefault("messages", ASK)
    return client.chat.completions.create(**kwargs)


def _calls(client: openai.OpenAI, messages: list[dict[str, Any]], **kwargs: Any) -> Any:
    return _create(client, messages=messages, tools=TOOLS, **kwargs)


def _check_calls(message: Any) -> list[str]:
    assert message.content is None
    names = []
    for call in message.tool_calls:
        assert call.type == "function" and call.id.startswith("call_")
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])
        names.append(call.function.name)
    return names


def test_auto_calls_the_first_tool_with_valid_arguments(client: openai.OpenAI) -> None:
    response = _calls(client, ASK)
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert _check_calls(choice.message) == ["get_weather"]
    arguments = choice.message.tool_calls[0].function.arguments
    assert response.usage.completion_tokens == count_tokens(arguments)


def test_auto_calls_the_tools_the_user_mentions(client: openai.OpenAI) -> None:
    one: list[dict[str, Any]] = [
        {"role": "user", "content": "Please do a WEB SEARCH for tide tables."}
    ]
    assert _check_calls(_calls(client, one).choices[0].message) == ["web_search"]
    both: list[dict[str, Any]] = [{"role": "user", "content": "Use get_weather and web_search."}]
    assert _check_calls(_calls(client, both).choices[0].message) == ["get_weather", "web_search"]
    single = _calls(client, both, parallel_tool_calls=False).choices[0].message
    assert _check_calls(single) == ["get_weather"]


def test_auto_answers_with_text_after_a_tool_result(client: openai.OpenAI) -> None:
    first = _calls(client, ASK).choices[0].message
    call = first.tool_calls[0]
    history: list[dict[str, Any]] = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call.id, "type": "function",
             "function": {"name": call.function.name, "arguments": call.function.arguments}},
        ]},
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 degrees."},
    ]
    final = _calls(client, history)
    assert final.choices[0].finish_reason == "stop"
    assert final.choices[0].message.tool_calls is None
    assert final.choices[0].message.content
    required = _calls(client, history, tool_choice="required").choices[0]
    assert required.finish_reason == "tool_calls"


def test_tool_choice_named_and_none(client: openai.OpenAI) -> None:
    named = _calls(client, ASK, tool_choice={"type": "function",
                                             "function": {"name": "web_search"}})
    assert _check_calls(named.choices[0].message) == ["web_search"]
    none = _calls(client, ASK, tool_choice="none").choices[0]
    assert none.finish_reason == "stop" and none.message.tool_calls is None
    assert none.message.content


def test_a_tool_without_parameters_gets_empty_arguments(client: openai.OpenAI) -> None:
    response = _create(client, tools=[{"type": "function", "function": {"name": "ping"}}])
    assert response.choices[0].message.tool_calls[0].function.arguments == "{}"


def test_tool_call_ids_are_deterministic_and_distinct_per_call(client: openai.OpenAI) -> None:
    both: list[dict[str, Any]] = [{"role": "user", "content": "get_weather then web_search"}]
    first = _calls(client, both).choices[0].message.tool_calls
    second = _calls(client, both).choices[0].message.tool_calls
    assert [c.id for c in first] == [c.id for c in second]
    assert len({c.id for c in first}) == 2


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"messages": [{"role": "user", "content": "get_weather and web_search please"}]},
        {"tool_choice": "required", "n": 2},
        {"model": "mock-reasoner"},
        {"max_tokens": 4},
    ],
    ids=["one", "parallel", "required-n", "reasoning", "cut"],
)
def test_streamed_tool_calls_follow_openai_delta_rules(
    server: RunningServer, raw_stream: RawStream, reassemble: Reassemble, extra: dict[str, Any]
) -> None:
    body = {"model": "mock-gpt", "messages": ASK, "tools": TOOLS, **extra}
    chunks = raw_stream(server, body)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": None}
    streamed = reassemble(chunks)
    whole = _post(server, body)
    for choice in whole["choices"]:
        message = streamed[choice["index"]]
        assert message["finish_reason"] == choice["finish_reason"]
        assert message["tool_calls"] == choice["message"]["tool_calls"]
        assert message["content"] is None is choice["message"]["content"]
        if choice["finish_reason"] == "tool_calls":
            for call in message["tool_calls"]:
                arguments = json.loads(call["function"]["arguments"])
                jsonschema.validate(arguments, SCHEMAS[call["function"]["name"]])
    if "max_tokens" in extra:
        assert whole["choices"][0]["finish_reason"] == "length"
        assert whole["usage"]["completion_tokens"] == 4


def test_sdk_stream_helper_accumulates_tool_calls(client: openai.OpenAI) -> None:
    kwargs: dict[str, Any] = {"model": "mock-gpt", "messages": ASK, "tools": TOOLS}
    with client.chat.completions.stream(**kwargs) as stream:
        final = stream.get_final_completion()
    message = final.choices[0].message
    assert final.choices[0].finish_reason == "tool_calls"
    assert _check_calls(message) == ["get_weather"]
    expected = _calls(client, ASK).choices[0].message.tool_calls
    assert [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or ()] == [
        (c.id, c.function.name, c.function.arguments) for c in expected
    ]


# -- structured output --------------------------------------------------------


def test_json_object(client: openai.OpenAI) -> None:
    response = _create(client, response_format={"type": "json_object"})
    content = response.choices[0].message.content or ""
    value = json.loads(content)
    assert isinstance(value, dict)
    jsonschema.validate(value, JSON_OBJECT_SCHEMA)
    assert response.usage is not None
    assert response.usage.completion_tokens == count_tokens(content)


RESPONSE_SCHEMAS: dict[str, dict[str, Any]] = {
    "event": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "date": {"type": "string", "format": "date"},
            "participants": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        },
        "required": ["name", "date", "participants"],
        "additionalProperties": False,
    },
    "math": {
        "type": "object",
        "properties": {
            "steps": {"type": "array", "items": {"$ref": "#/$defs/step"}},
            "final_answer": {"type": "number", "minimum": 0, "maximum": 10},
        },
        "required": ["steps", "final_answer"],
        "additionalProperties": False,
        "$defs": {"step": {
            "type": "object",
            "properties": {"explanation": {"type": "string"}, "output": {"type": "string"}},
            "required": ["explanation", "output"],
            "additionalProperties": False,
        }},
    },
    "ui": {
        "$defs": {"ui": {
            "type": "object",
            "properties": {
                "type": {"type": "string", "enum": ["div", "button", "header"]},
                "label": {"type": "string"},
                "children": {"type": "array", "items": {"$ref": "#/$defs/ui"}},
                "attributes": {"anyOf": [{"type": "null"}, {"type": "object", "properties": {
                    "name": {"type": "string"}, "value": {"type": "string"}},
                    "required": ["name", "value"], "additionalProperties": False}]},
            },
            "required": ["type", "label", "children", "attributes"],
            "additionalProperties": False,
        }},
        "$ref": "#/$defs/ui",
    },
    "list": {"type": "array", "items": {"type": "integer", "multipleOf": 5}, "maxItems": 4},
    "moderation": {
        "type": "object",
        "properties": {
            "flagged": {"type": "boolean"},
            "category": {"oneOf": [{"const": "none"}, {"enum": ["spam", "abuse"]}]},
            "score": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            "note": {"type": ["string", "null"], "maxLength": 12},
        },
        "required": ["flagged", "category", "score", "note"],
        "additionalProperties": False,
    },
}


@pytest.mark.parametrize("name", sorted(RESPONSE_SCHEMAS))
def test_json_schema_output_validates(
    name: str, client: openai.OpenAI, server: RunningServer, raw_stream: RawStream,
    reassemble: Reassemble,
) -> None:
    schema = RESPONSE_SCHEMAS[name]
    response_format = {"type": "json_schema",
                       "json_schema": {"name": name, "schema": schema, "strict": True}}
    for seed in range(6):
        response = _create(client, seed=seed, response_format=response_format)
        content = response.choices[0].message.content or ""
        jsonschema.validate(json.loads(content), schema)
        assert response.choices[0].finish_reason == "stop"
        assert response.usage is not None
        assert response.usage.completion_tokens == count_tokens(content)
    body = {"model": "mock-gpt", "messages": ASK, "response_format": response_format, "seed": 5}
    streamed = reassemble(raw_stream(server, body))[0]["content"]
    assert streamed == content


def test_unusable_schema_is_a_400_naming_the_parameter(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        _create(client, response_format={"type": "json_schema", "json_schema": {
            "name": "broken", "schema": {"$ref": "#/$defs/nowhere"}}})
    assert caught.value.param == "response_format.json_schema.schema"
    with pytest.raises(openai.BadRequestError) as caught:
        _create(
            client,
            tools=[TOOLS[0], {"type": "function", "function": {
                "name": "broken", "parameters": {"type": "string", "minLength": 9,
                                                 "maxLength": 1}}}],
            tool_choice={"type": "function", "function": {"name": "broken"}},
        )
    assert caught.value.param == "tools[1].function.parameters"
