"""POST /v1/messages in front of a real OpenAI-compatible upstream (FakeOpenAI on
its own loopback socket, behind the bundled ``openai`` provider), driven by the
real anthropic SDK: what the upstream receives, and what the client gets back.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import pytest

from sluiceway.testing import RunningServer
from sluiceway.testing.fakes import ErrorEvent, FakeOpenAI, Stall, Status, ToolCall

TOOLS: list[Any] = [{"name": "get_weather", "description": "Weather now.",
                     "input_schema": {"type": "object",
                                      "properties": {"city": {"type": "string"}}}}]
HI: list[Any] = [{"role": "user", "content": "hi"}]
PARIS = {"city": "Paris", "unit": "celsius", "days": [1, 2, 3]}


@pytest.fixture
def fake(fake_openai: Callable[..., FakeOpenAI]) -> FakeOpenAI:
    return fake_openai(chunks=4)


@pytest.fixture
def server(fake: FakeOpenAI, gateway_factory: Callable[..., RunningServer]) -> RunningServer:
    return gateway_factory({
        "gateway": {"plugins": ["openai"]},
        "providers": [{
            "name": "up", "type": "openai", "base_url": fake.url, "max_retries": 0,
            "cooldown_failures": 1000, "models": [{"name": "claude-ish", "upstream": "gpt-x"}],
        }],
    })


@pytest.fixture
def client(server: RunningServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(api_key="sk-anything", base_url=server.url, max_retries=0) as sdk:
        yield sdk


def create(client: anthropic.Anthropic, **kwargs: Any) -> Any:
    kwargs.setdefault("model", "claude-ish")
    kwargs.setdefault("max_tokens", 100)
    kwargs.setdefault("messages", HI)
    return client.messages.create(**kwargs)


def final(client: anthropic.Anthropic, **kwargs: Any) -> tuple[Any, list[Any]]:
    kwargs.setdefault("model", "claude-ish")
    kwargs.setdefault("max_tokens", 100)
    kwargs.setdefault("messages", HI)
    with client.messages.stream(**kwargs) as stream:
        events = list(stream)
        return stream.get_final_message(), events


def test_text_plain_and_streamed(client: anthropic.Anthropic, fake: FakeOpenAI) -> None:
    message = create(client)
    assert message.content[0].text == "echo: hi"
    assert (message.stop_reason, message.model) == ("end_turn", "claude-ish")
    assert (message.usage.input_tokens, message.usage.output_tokens) == (1, 4)
    streamed, events = final(client)
    assert streamed.content[0].text == "echo: hi"
    assert streamed.stop_reason == "end_turn"
    assert (streamed.usage.input_tokens, streamed.usage.output_tokens) == (1, 4)
    deltas = [e for e in events if e.type == "content_block_delta"]
    assert len(deltas) == 4  # one per upstream chunk
    plain, stream = fake.requests
    assert plain.body == {"model": "gpt-x", "messages": HI, "max_tokens": 100}
    assert stream.body["stream"] is True
    assert stream.body["stream_options"] == {"include_usage": True}
    assert "x-api-key" not in stream.headers  # the client's key stays at the gateway


async def test_async_plain_and_streamed(server: RunningServer) -> None:
    async with anthropic.AsyncAnthropic(api_key="k", base_url=server.url, max_retries=0) as sdk:
        message = await sdk.messages.create(model="claude-ish", max_tokens=50, messages=HI)
        async with sdk.messages.stream(
            model="claude-ish", max_tokens=50, messages=HI
        ) as stream:
            text = "".join([piece async for piece in stream.text_stream])
    assert message.content[0].text == text == "echo: hi"


def test_multi_turn_reaches_the_upstream_in_its_shape(
    client: anthropic.Anthropic, fake: FakeOpenAI
) -> None:
    message = create(client, system="Be brief.", stop_sequences=["END"],
                     metadata={"user_id": "u-1"}, extra_body={"temperature": 0.5}, messages=[
        {"role": "user", "content": "One?"},
        {"role": "assistant", "content": "One."},
        {"role": "user", "content": [{"type": "text", "text": "Two?"}]},
    ])
    assert message.content[0].text == "echo: Two?"
    assert fake.requests[0].body == {
        "model": "gpt-x",
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": "One?"},
                     {"role": "assistant", "content": "One."},
                     {"role": "user", "content": "Two?"}],
        "max_tokens": 100, "temperature": 0.5, "stop": ["END"], "user": "u-1",
    }


@pytest.mark.parametrize("stream", [False, True])
def test_tool_use_round_trip(client: anthropic.Anthropic, fake: FakeOpenAI, stream: bool) -> None:
    fake.script(ToolCall(arguments=PARIS))
    if stream:
        first, events = final(client, messages=HI, tools=TOOLS)
        fragments = [e.delta.partial_json for e in events
                     if e.type == "content_block_delta" and e.delta.type == "input_json_delta"]
        assert len(fragments) == 4 and json.loads("".join(fragments)) == PARIS
    else:
        first = create(client, messages=HI, tools=TOOLS)
    assert first.stop_reason == "tool_use"
    (call,) = first.content
    assert (call.type, call.id, call.name, call.input) == (
        "tool_use", "call_fake_1", "get_weather", PARIS)
    assert fake.requests[0].body["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather now.",
        "parameters": TOOLS[0]["input_schema"]}}]
    answer = create(client, tools=TOOLS, messages=[
        *HI, {"role": "assistant", "content": [call.model_dump()]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": call.id, "content": "18C"},
            {"type": "text", "text": "and tomorrow?"},
        ]},
    ])
    assert answer.content[0].text == "echo: and tomorrow?"
    assert fake.requests[1].body["messages"][1:] == [
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_fake_1", "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps(PARIS,
                                                                        separators=(",", ":"))},
        }]},
        {"role": "tool", "tool_call_id": "call_fake_1", "content": "18C"},
        {"role": "user", "content": "and tomorrow?"},
    ]


def test_count_tokens_is_estimated_without_calling_the_upstream(
    client: anthropic.Anthropic, fake: FakeOpenAI
) -> None:
    short = client.messages.count_tokens(model="claude-ish", messages=HI)
    longer = client.messages.count_tokens(
        model="claude-ish", system="x" * 400, messages=HI, tools=TOOLS
    )
    assert 0 < short.input_tokens < longer.input_tokens
    assert longer.input_tokens >= 100  # the 400-character system prompt alone
    assert fake.requests == []


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("status", "error", "kind"), [
    (503, anthropic.OverloadedError, "overloaded_error"),
    (529, anthropic.OverloadedError, "overloaded_error"),
    (500, anthropic.InternalServerError, "api_error"),
    (400, anthropic.BadRequestError, "invalid_request_error"),
    (404, anthropic.NotFoundError, "not_found_error"),
])
def test_upstream_errors_in_anthropic_shape(
    client: anthropic.Anthropic, fake: FakeOpenAI, stream: bool, status: int,
    error: type[anthropic.APIStatusError], kind: str,
) -> None:
    fake.script(Status(status))
    with pytest.raises(error) as caught:
        if stream:
            final(client)
        else:
            create(client)
    body = caught.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == kind
    assert body["request_id"] == caught.value.request_id


def test_long_upstream_retry_after_is_capped(client: anthropic.Anthropic, fake: FakeOpenAI
                                             ) -> None:
    fake.script(Status(429, headers={"retry-after": "600"}))
    with pytest.raises(anthropic.RateLimitError) as caught:
        create(client)
    headers = caught.value.response.headers
    assert headers["retry-after"] == "60"
    assert headers["retry-after-ms"] == "60000"
    assert headers["x-should-retry"] == "false"
    assert caught.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]


def test_short_upstream_retry_after_is_kept(client: anthropic.Anthropic, fake: FakeOpenAI
                                            ) -> None:
    fake.script(Status(429, headers={"retry-after": "7"}))
    with pytest.raises(anthropic.RateLimitError) as caught:
        create(client)
    headers = caught.value.response.headers
    assert headers["retry-after"] == "7"
    assert "x-should-retry" not in headers


def test_upstream_error_mid_stream_is_an_error_event(
    client: anthropic.Anthropic, fake: FakeOpenAI
) -> None:
    fake.script(ErrorEvent(after_chunks=2, message="boom"))
    received: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as caught, client.messages.stream(
        model="claude-ish", max_tokens=100, messages=HI
    ) as stream:
        for text in stream.text_stream:
            received.append(text)
    assert "".join(received) == "echo"  # two of the four chunks arrived first
    assert caught.value.body == {"type": "error", "error": {
        "type": "api_error", "message": "Provider 'up' failed mid-stream: boom"}}


async def test_client_hanging_up_mid_stream_cancels_the_upstream(
    server: RunningServer, fake: FakeOpenAI
) -> None:
    fake.script(Stall(after_chunks=1, seconds=3600))
    async with anthropic.AsyncAnthropic(api_key="k", base_url=server.url, max_retries=0) as sdk:
        stream = await sdk.messages.create(model="claude-ish", max_tokens=50, messages=HI,
                                           stream=True)
        async for event in stream:
            if event.type == "content_block_delta":
                break  # the first text has arrived; the upstream now stalls
        await stream.close()
    assert await fake.wait_for(lambda: fake.disconnects == 1, within=10)
    assert fake.active == 0
