"""The anthropic provider end to end: the real openai SDK -> a real gateway on
hypercorn -> a fake Anthropic Messages API on its own loopback port.

The fake upstream picks its behaviour from the last user message's text, so
each test says what the upstream does in the request it sends.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from typing import Any

import openai
import pydantic
import pytest
from sluiceway_anthropic.testing import ANSWERS, FakeAnthropic

from sluiceway.testing import RunningServer

IMAGE = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg=="
)
TOOLS: list[Any] = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather now",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}}]


def _config(base_url: str) -> dict[str, Any]:
    return {
        "gateway": {"plugins": ["anthropic"]},
        "providers": [{
            "name": "claude", "type": "anthropic", "base_url": base_url,
            "api_key": "env:SLUICEWAY_TEST_ANTHROPIC_KEY", "read_timeout": "10s",
            "max_retries": 0,
            "models": [{"name": "claude-x", "upstream": "claude-sonnet-4"}],
        }],
    }


@pytest.fixture
def upstream(serve_asgi: Callable[..., RunningServer]) -> tuple[FakeAnthropic, RunningServer]:
    fake = FakeAnthropic()
    return fake, serve_asgi(fake)


@pytest.fixture
def gateway(
    upstream: tuple[FakeAnthropic, RunningServer],
    gateway_factory: Callable[..., RunningServer],
    monkeypatch: pytest.MonkeyPatch,
) -> RunningServer:
    monkeypatch.setenv("SLUICEWAY_TEST_ANTHROPIC_KEY", "sk-ant-secret")
    return gateway_factory(_config(upstream[1].url))


def _client(server: RunningServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.base_url, api_key="client-key", max_retries=0)


def _messages(content: str) -> list[Any]:
    return [{"role": "user", "content": content}]


async def test_chat_translates_both_ways_and_authenticates_upstream(
    gateway: RunningServer, upstream: tuple[FakeAnthropic, RunningServer]
) -> None:
    async with _client(gateway) as client:
        result = await client.chat.completions.create(
            model="claude-x", messages=_messages("hi"), temperature=0.5,
        )
    assert result.choices[0].message.content == "Hello there"
    assert result.choices[0].finish_reason == "stop"
    assert result.usage is not None
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (15, 9)
    assert result.usage.prompt_tokens_details is not None
    assert result.usage.prompt_tokens_details.cached_tokens == 4
    (seen,) = upstream[0].requests
    assert seen["path"] == "/v1/messages"
    assert seen["headers"]["x-api-key"] == "sk-ant-secret"
    assert seen["headers"]["anthropic-version"] == "2023-06-01"
    assert "authorization" not in seen["headers"]
    assert seen["body"] == {"model": "claude-sonnet-4", "max_tokens": 4096,
                            "messages": _messages("hi"), "temperature": 0.5}


async def test_system_prompt_and_images_arrive_upstream(
    gateway: RunningServer, upstream: tuple[FakeAnthropic, RunningServer]
) -> None:
    async with _client(gateway) as client:
        await client.chat.completions.create(model="claude-x", max_tokens=50, messages=[
            {"role": "system", "content": "Describe images."},
            {"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64," + IMAGE}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
                {"type": "text", "text": "hi"},
            ]},
        ])
    body = upstream[0].requests[0]["body"]
    assert body["system"] == "Describe images."
    assert body["max_tokens"] == 50
    assert body["messages"] == [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": IMAGE}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
        {"type": "text", "text": "hi"},
    ]}]


async def test_stream_without_include_usage(
    gateway: RunningServer, upstream: tuple[FakeAnthropic, RunningServer]
) -> None:
    async with _client(gateway) as client:
        stream = await client.chat.completions.create(
            model="claude-x", messages=_messages("hi"), stream=True,
        )
        chunks = [chunk async for chunk in stream]
    assert all(c.choices and c.usage is None for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hello there"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert upstream[0].requests[0]["body"]["stream"] is True
    assert upstream[0].requests[0]["headers"]["accept"] == "text/event-stream"


async def test_stream_with_include_usage_ends_with_usage(gateway: RunningServer) -> None:
    async with _client(gateway) as client:
        stream = await client.chat.completions.create(
            model="claude-x", messages=_messages("hi"), stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (15, 9)


async def test_tools_whole_answer(
    gateway: RunningServer, upstream: tuple[FakeAnthropic, RunningServer]
) -> None:
    async with _client(gateway) as client:
        result = await client.chat.completions.create(
            model="claude-x", messages=_messages("tools"), tools=TOOLS, tool_choice="required",
        )
    choice = result.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Checking."
    (call,) = choice.message.tool_calls or []
    assert call.type == "function"
    assert (call.id, call.function.name) == ("toolu_1", "get_weather")
    assert json.loads(call.function.arguments) == {"city": "Paris", "unit": "c"}
    body = upstream[0].requests[0]["body"]
    assert body["tools"] == [{"name": "get_weather", "description": "Weather now",
                              "input_schema": TOOLS[0]["function"]["parameters"]}]
    assert body["tool_choice"] == {"type": "any"}


async def test_streamed_tool_call_deltas_reassemble(gateway: RunningServer) -> None:
    async with _client(gateway) as client:
        stream = await client.chat.completions.create(
            model="claude-x", messages=_messages("tools"), tools=TOOLS, stream=True,
        )
        chunks = [chunk async for chunk in stream]
    deltas = [d for c in chunks for d in c.choices[0].delta.tool_calls or ()]
    assert deltas[0].index == 0 and deltas[0].id == "toolu_1"
    assert deltas[0].function is not None and deltas[0].function.name == "get_weather"
    assert all(d.index == 0 and d.id is None for d in deltas[1:])
    arguments = "".join(d.function.arguments or "" for d in deltas if d.function)
    assert json.loads(arguments) == {"city": "Paris", "unit": "c"}
    assert len(deltas) > 3  # really streamed in fragments
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


async def test_sdk_stream_helper_accumulates_the_tool_call(gateway: RunningServer) -> None:
    async with _client(gateway) as client, client.chat.completions.stream(
        model="claude-x", messages=_messages("tools"), tools=TOOLS,
    ) as stream:
        completion = await stream.get_final_completion()
    message = completion.choices[0].message
    assert message.content == "Checking."
    (call,) = message.tool_calls or []
    assert call.id == "toolu_1"
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"city": "Paris", "unit": "c"}  # type: ignore[union-attr]


async def test_thinking_becomes_reasoning_content(
    gateway: RunningServer, upstream: tuple[FakeAnthropic, RunningServer]
) -> None:
    async with _client(gateway) as client:
        result = await client.chat.completions.create(
            model="claude-x", messages=_messages("think"), reasoning_effort="low",
        )
        stream = await client.chat.completions.create(
            model="claude-x", messages=_messages("think"), stream=True,
        )
        chunks = [chunk async for chunk in stream]
    message = result.choices[0].message
    extra = message.model_extra or {}
    assert extra["reasoning_content"] == "Two and two make four."
    assert extra["thinking_blocks"] == [ANSWERS["think"]["content"][0]]
    assert message.content == "4"
    streamed = "".join((c.choices[0].delta.model_extra or {}).get("reasoning_content") or ""
                       for c in chunks)
    assert streamed == "Two and two make four."
    assert upstream[0].requests[0]["body"]["thinking"] == {"type": "enabled",
                                                           "budget_tokens": 1024}
    assert upstream[0].requests[0]["body"]["max_tokens"] == 4096 + 1024


@pytest.mark.parametrize("stream", [False, True])
async def test_upstream_400_keeps_status_and_message(gateway: RunningServer, stream: bool) -> None:
    async with _client(gateway) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(
                model="claude-x", messages=_messages("400"), stream=stream,
            )
    assert caught.value.body == {
        "message": "Provider 'claude' answered HTTP 400 (invalid_request_error): "
                   "messages: text content blocks must be non-empty",
        "type": "invalid_request_error", "code": "invalid_request_error", "param": None,
    }


async def test_prompt_too_long_is_a_context_window_error(gateway: RunningServer) -> None:
    async with _client(gateway) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model="claude-x", messages=_messages("too-long"))
    assert caught.value.code == "context_length_exceeded"
    assert "prompt is too long" in caught.value.message


@pytest.mark.parametrize("stream", [False, True])
async def test_upstream_401_is_our_fault_502(gateway: RunningServer, stream: bool) -> None:
    async with _client(gateway) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(
                model="claude-x", messages=_messages("401"), stream=stream,
            )
    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_auth_error"
    assert "invalid x-api-key" in caught.value.message


async def test_upstream_404_is_kept(gateway: RunningServer) -> None:
    async with _client(gateway) as client:
        with pytest.raises(openai.NotFoundError) as caught:
            await client.chat.completions.create(model="claude-x", messages=_messages("404"))
    assert caught.value.code == "not_found_error"


async def test_upstream_429_keeps_retry_after(gateway: RunningServer) -> None:
    async with _client(gateway) as client:
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(model="claude-x", messages=_messages("429"))
    assert caught.value.response.headers["retry-after"] == "3"
    assert caught.value.code == "rate_limit_exceeded"
    assert "exceeded your limit" in caught.value.message


@pytest.mark.parametrize(("scenario", "code"),
                         [("529", "upstream_overloaded"), ("500", "upstream_error")])
@pytest.mark.parametrize("stream", [False, True])
async def test_upstream_server_errors_become_502(
    gateway: RunningServer, stream: bool, scenario: str, code: str
) -> None:
    async with _client(gateway) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(
                model="claude-x", messages=_messages(scenario), stream=stream,
            )
    assert caught.value.status_code == 502
    assert caught.value.code == code
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["message"].startswith(f"Provider 'claude' answered HTTP {scenario}")


async def test_error_event_mid_stream_raises_api_error(gateway: RunningServer) -> None:
    received: list[str] = []
    async with _client(gateway) as client:
        stream = await client.chat.completions.create(
            model="claude-x", messages=_messages("error-mid-stream"), stream=True,
        )
        with pytest.raises(openai.APIError) as caught:
            async for chunk in stream:
                received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == "Hello there"
    assert caught.value.code == "upstream_overloaded"
    assert "Overloaded" in caught.value.message


async def test_stream_without_message_stop_is_an_error(gateway: RunningServer) -> None:
    async with _client(gateway) as client:
        stream = await client.chat.completions.create(
            model="claude-x", messages=_messages("no-message-stop"), stream=True,
        )
        with pytest.raises(openai.APIError) as caught:
            async for _ in stream:
                pass
    assert caught.value.code == "upstream_stream_truncated"


async def test_untranslatable_request_is_a_400_naming_the_param(gateway: RunningServer) -> None:
    async with _client(gateway) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model="claude-x", messages=[
                {"role": "user", "content": [{"type": "image_url",
                                              "image_url": {"url": "ftp://x/y.png"}}]},
            ])
    assert caught.value.param == "messages[0].content[0].image_url.url"


def test_options_are_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    from sluiceway import ConfigError, create_app

    config = _config("http://127.0.0.1:9")
    config["providers"][0]["default_max_tokens"] = 0
    monkeypatch.setenv("SLUICEWAY_TEST_ANTHROPIC_KEY", "x")
    with pytest.raises(ConfigError, match=r"providers\[0\]\.default_max_tokens"):
        create_app(config)


async def test_multi_turn_with_tool_results_arrives_upstream(
    gateway: RunningServer, upstream: tuple[FakeAnthropic, RunningServer]
) -> None:
    call = {"id": "toolu_1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    async with _client(gateway) as client:
        await client.chat.completions.create(model="claude-x", tools=TOOLS, messages=[
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
            {"role": "user", "content": "hi"},
        ])
    assert upstream[0].requests[0]["body"]["messages"] == [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1",
                                           "name": "get_weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
            {"type": "text", "text": "hi"},
        ]},
    ]


@pytest.mark.parametrize("stream", [False, True])
async def test_slow_upstream_is_a_504(
    upstream: tuple[FakeAnthropic, RunningServer],
    gateway_factory: Callable[..., RunningServer],
    monkeypatch: pytest.MonkeyPatch,
    stream: bool,
) -> None:
    monkeypatch.setenv("SLUICEWAY_TEST_ANTHROPIC_KEY", "sk-ant-secret")
    config = _config(upstream[1].url)
    config["providers"][0]["read_timeout"] = "300ms"
    gateway = gateway_factory(config)
    async with _client(gateway) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(
                model="claude-x", messages=_messages("slow"), stream=stream,
            )
    assert caught.value.status_code == 504
    assert caught.value.code == "upstream_timeout"
    assert "Provider 'claude'" in caught.value.message


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_connection_refused_is_a_502_naming_the_provider(
    gateway_factory: Callable[..., RunningServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLUICEWAY_TEST_ANTHROPIC_KEY", "sk-ant-secret")
    gateway = gateway_factory(_config(f"http://127.0.0.1:{_closed_port()}"))
    async with _client(gateway) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model="claude-x", messages=_messages("hi"))
    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_connect_error"
    assert "Provider 'claude'" in caught.value.message


def _keyed_config(base_url: str, *weights: float) -> dict[str, Any]:
    config = _config(base_url)
    table = config["providers"][0]
    del table["api_key"]
    table["api_keys"] = [
        {"key": f"env:SLUICEWAY_TEST_KEY_{n}", "weight": weight, "name": f"k{n}"}
        for n, weight in enumerate(weights, 1)
    ]
    return config


async def test_weighted_keys_spread_traffic(
    upstream: tuple[FakeAnthropic, RunningServer],
    gateway_factory: Callable[..., RunningServer], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLUICEWAY_TEST_KEY_1", "sk-one")
    monkeypatch.setenv("SLUICEWAY_TEST_KEY_2", "sk-two")
    fake, server = upstream
    gateway = gateway_factory(_keyed_config(server.url, 1, 3))
    client = _client(gateway)
    for _ in range(10):
        await asyncio.gather(*(
            client.chat.completions.create(model="claude-x", messages=_messages("hi"))
            for _ in range(40)
        ))
    await client.close()
    keys = [r["headers"]["x-api-key"] for r in fake.requests]
    share = keys.count("sk-two") / len(keys)
    # Expected 0.75; four standard deviations of a share over 400 requests is 0.087.
    assert len(keys) == 400 and abs(share - 0.75) < 0.087


async def test_a_refused_key_is_rested_and_the_request_retried_with_another(
    upstream: tuple[FakeAnthropic, RunningServer],
    gateway_factory: Callable[..., RunningServer], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLUICEWAY_TEST_KEY_1", "sk-one")
    monkeypatch.setenv("SLUICEWAY_TEST_KEY_2", "sk-two")
    fake, server = upstream
    fake.refused_keys.add("sk-one")
    gateway = gateway_factory(_keyed_config(server.url, 1, 1))
    client = _client(gateway)
    for _ in range(20):
        reply = await client.chat.completions.with_raw_response.create(
            model="claude-x", messages=_messages("hi")
        )
        assert reply.http_response.status_code == 200
    await client.close()
    keys = [r["headers"]["x-api-key"] for r in fake.requests]
    # At most one request met the refused key; it was retried at once on the other,
    # and the refused key rested for key_cooldown.
    assert keys.count("sk-one") <= 1
    assert keys.count("sk-two") == 20


class Verdict(pydantic.BaseModel):
    answer: str
    confidence: float


async def test_response_format_json_schema_by_the_tool_technique(
    gateway: RunningServer, upstream: tuple[FakeAnthropic, RunningServer]
) -> None:
    async with _client(gateway) as client:
        # The SDK's own structured-output helper: it sends a strict json_schema
        # and parses the message's content with the model.
        parsed = await client.chat.completions.parse(
            model="claude-x", messages=_messages("json"), response_format=Verdict)
        stream = await client.chat.completions.create(
            model="claude-x", messages=_messages("json"), stream=True,
            response_format={"type": "json_schema", "json_schema": {
                "name": "verdict", "schema": Verdict.model_json_schema()}},
        )
        chunks = [chunk async for chunk in stream]
    choice = parsed.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.parsed == Verdict(answer="4", confidence=0.9)
    assert not choice.message.tool_calls
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert json.loads(streamed) == {"answer": "4", "confidence": 0.9}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert not any(c.choices[0].delta.tool_calls for c in chunks if c.choices)
    # Upstream: the schema as the one tool, and the model made to call it.
    body = upstream[0].requests[0]["body"]
    (tool,) = body["tools"]
    assert tool["name"] == "json_response"
    assert tool["input_schema"]["properties"].keys() == {"answer", "confidence"}
    assert body["tool_choice"] == {"type": "tool", "name": "json_response"}
