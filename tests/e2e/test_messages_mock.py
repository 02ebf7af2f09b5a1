"""POST /v1/messages in front of the mock provider, driven by the real anthropic
SDK, sync and async, plain and streamed, over a real hypercorn server.

The mock is seeded and deterministic, so a streamed answer can be compared
with the same answer unstreamed, and count_tokens with the usage it charges.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import jsonschema
import pytest

import sluiceway
import sluiceway.api
from sluiceway.testing import RunningServer

WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TOOLS: list[Any] = [{"name": "get_weather", "description": "Current weather for a city.",
                     "input_schema": WEATHER_SCHEMA}]
ASK: list[Any] = [{"role": "user", "content": "Say hello to the gateway."}]
WEATHER: list[Any] = [{"role": "user", "content": "What is the weather in Paris? get_weather"}]
MULTI_TURN: list[Any] = [
    {"role": "user", "content": "Say hello."},
    {"role": "assistant", "content": [{"type": "text", "text": "Hello!"}]},
    {"role": "user", "content": [{"type": "text", "text": "Now say goodbye."}]},
]


class StateRecorder:
    """A test plugin: a call policy that records what each settled call says
    (the provider that served it, its usage)."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    @sluiceway.hookimpl
    def register_call_policies(
        self, register: Callable[[sluiceway.api.CallPolicyType], None]
    ) -> None:
        recorder = self

        class Record:
            name = "state-recorder"
            kinds = frozenset({"messages", "count_tokens"})

            async def admit(self, call: sluiceway.api.ModelCall) -> Any:
                async def settle(call: sluiceway.api.ModelCall) -> None:
                    deployment = call.deployment
                    recorder.seen.append({
                        "path": call.context.scope["path"],
                        "provider": deployment.provider_name if deployment else None,
                        "usage": call.usage})
                return settle

        register(sluiceway.api.CallPolicyType("state-recorder", lambda gateway: Record()))


def mock_config(**options: Any) -> dict[str, Any]:
    table = {"name": "mock", "type": "mock", "models": ["mock-gpt", "mock-reasoner"],
             "reasoning_models": ["mock-reasoner"], "max_retries": 0,
             "cooldown_failures": 1000, **options}
    return {"gateway": {"plugins": ["mock"]}, "providers": [table]}


@pytest.fixture
def recorder() -> StateRecorder:
    return StateRecorder()


@pytest.fixture
def server(gateway_factory: Callable[..., RunningServer], recorder: StateRecorder
           ) -> RunningServer:
    return gateway_factory(mock_config(), plugins=[("state-recorder", recorder)])


@pytest.fixture
def client(server: RunningServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(api_key="sk-anything", base_url=server.url, max_retries=0) as sdk:
        yield sdk


@pytest.fixture
def aclient(server: RunningServer) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(api_key="sk-anything", base_url=server.url, max_retries=0)


def comparable(message: Any) -> dict[str, Any]:
    """A message as JSON, without its id (fresh per answer) and the SDK's
    parse-only fields, so a streamed and an unstreamed answer can be compared."""
    data: dict[str, Any] = json.loads(message.model_dump_json(exclude_none=True))
    data.pop("id")
    for block in data["content"]:
        block.pop("parsed_output", None)
    return data


def create(client: anthropic.Anthropic, **kwargs: Any) -> Any:
    kwargs.setdefault("model", "mock-gpt")
    kwargs.setdefault("max_tokens", 200)
    kwargs.setdefault("messages", ASK)
    return client.messages.create(**kwargs)


def final(client: anthropic.Anthropic, **kwargs: Any) -> tuple[Any, list[Any]]:
    """The SDK's final message of a stream, and every event it saw."""
    kwargs.setdefault("model", "mock-gpt")
    kwargs.setdefault("max_tokens", 200)
    kwargs.setdefault("messages", ASK)
    with client.messages.stream(**kwargs) as stream:
        events = list(stream)
        return stream.get_final_message(), events


def test_text_plain_and_streamed_are_the_same_message(client: anthropic.Anthropic) -> None:
    message = create(client)
    assert message.type == "message" and message.role == "assistant"
    assert message.model == "mock-gpt"
    (block,) = message.content
    assert block.type == "text" and len(block.text.split()) > 3
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.usage.output_tokens == 24
    streamed, events = final(client)
    assert comparable(streamed) == comparable(message)
    text = "".join(e.delta.text for e in events
                   if e.type == "content_block_delta" and e.delta.type == "text_delta")
    assert text == block.text


async def test_text_async_plain_and_streamed(aclient: anthropic.AsyncAnthropic) -> None:
    async with aclient:
        message = await aclient.messages.create(model="mock-gpt", max_tokens=200, messages=ASK)
        stream = await aclient.messages.create(
            model="mock-gpt", max_tokens=200, messages=ASK, stream=True
        )
        kinds = [event.type async for event in stream]
        async with aclient.messages.stream(
            model="mock-gpt", max_tokens=200, messages=ASK
        ) as helper:
            text = "".join([piece async for piece in helper.text_stream])
            streamed = await helper.get_final_message()
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds.count("content_block_start") == kinds.count("content_block_stop") == 1
    assert text == message.content[0].text
    assert comparable(streamed) == comparable(message)


def test_multi_turn_with_a_system_prompt(client: anthropic.Anthropic) -> None:
    message = create(client, messages=MULTI_TURN, system="You are terse.")
    alone = create(client, messages=MULTI_TURN[-1:])
    assert message.content[0].text != alone.content[0].text  # the history reached the model
    counted = client.messages.count_tokens(model="mock-gpt", messages=MULTI_TURN,
                                           system="You are terse.")
    assert counted.input_tokens == message.usage.input_tokens
    streamed, _ = final(client, messages=MULTI_TURN, system="You are terse.")
    assert comparable(streamed) == comparable(message)


def _tool_round_trip(first: Any, json_fragments: list[str]) -> list[Any]:
    """Check a streamed tool call; the conversation that answers it."""
    assert first.stop_reason == "tool_use"
    (call,) = [block for block in first.content if block.type == "tool_use"]
    assert call.name == "get_weather" and call.id.startswith("call_")
    jsonschema.validate(call.input, WEATHER_SCHEMA)
    # The input arrived in several input_json_delta fragments and was reassembled.
    assert len(json_fragments) > 2
    assert json.loads("".join(json_fragments)) == call.input
    return [*WEATHER, {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                          "content": "18 degrees and sunny"}]}]


def test_tool_use_round_trip_streamed(client: anthropic.Anthropic) -> None:
    first, events = final(client, messages=WEATHER, tools=TOOLS)
    fragments = [e.delta.partial_json for e in events
                 if e.type == "content_block_delta" and e.delta.type == "input_json_delta"]
    conversation = _tool_round_trip(first, fragments)
    assert comparable(create(client, messages=WEATHER, tools=TOOLS)) == comparable(first)
    answer, _ = final(client, messages=conversation, tools=TOOLS)
    assert answer.stop_reason == "end_turn"
    assert [block.type for block in answer.content] == ["text"]


async def test_tool_use_round_trip_async(aclient: anthropic.AsyncAnthropic) -> None:
    async with aclient:
        fragments: list[str] = []
        async with aclient.messages.stream(
            model="mock-gpt", max_tokens=200, messages=WEATHER, tools=TOOLS,
            tool_choice={"type": "tool", "name": "get_weather"},
        ) as stream:
            async for event in stream:
                if event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                    fragments.append(event.delta.partial_json)
            first = await stream.get_final_message()
        conversation = _tool_round_trip(first, fragments)
        answer = await aclient.messages.create(
            model="mock-gpt", max_tokens=200, messages=conversation, tools=TOOLS
        )
    assert answer.stop_reason == "end_turn" and answer.content[0].type == "text"


@pytest.mark.parametrize("stream", [False, True])
def test_stop_reasons_max_tokens_and_stop_sequence(
    client: anthropic.Anthropic, stream: bool
) -> None:
    ask: Callable[..., Any] = (lambda **kw: final(client, **kw)[0]) if stream else (
        lambda **kw: create(client, **kw))
    text = ask().content[0].text
    cut = ask(max_tokens=3)
    assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens == 3
    assert text.startswith(cut.content[0].text)
    stop = text.split()[4]
    stopped = ask(stop_sequences=["never appears", stop])
    assert stopped.stop_reason == "stop_sequence"
    assert stopped.stop_sequence == stop
    assert stopped.content[0].text == text[: text.find(stop)]


def test_count_tokens_is_what_the_answer_charges(client: anthropic.Anthropic) -> None:
    for messages in (ASK, MULTI_TURN, WEATHER):
        counted = client.messages.count_tokens(model="mock-gpt", messages=messages, tools=TOOLS)
        answered = create(client, messages=messages, tools=TOOLS)
        assert counted.input_tokens == answered.usage.input_tokens > 0


async def test_count_tokens_async(aclient: anthropic.AsyncAnthropic) -> None:
    async with aclient:
        counted = await aclient.messages.count_tokens(model="mock-gpt", messages=ASK)
        answered = await aclient.messages.create(model="mock-gpt", max_tokens=5, messages=ASK)
    assert counted.input_tokens == answered.usage.input_tokens


def test_reasoning_becomes_thinking_blocks(client: anthropic.Anthropic) -> None:
    message = create(client, model="mock-reasoner")
    assert [block.type for block in message.content] == ["thinking", "text"]
    assert message.content[0].thinking.startswith("Let me think about this.")
    streamed, events = final(client, model="mock-reasoner")
    assert comparable(streamed) == comparable(message)
    thinking = "".join(e.delta.thinking for e in events
                       if e.type == "content_block_delta" and e.delta.type == "thinking_delta")
    assert thinking == message.content[0].thinking


def test_headers_request_id_and_anthropic_headers_accepted(client: anthropic.Anthropic) -> None:
    raw = client.messages.with_raw_response.create(
        model="mock-gpt", max_tokens=20, messages=ASK,
        extra_headers={"anthropic-beta": "prompt-caching-2024-07-31"},
    )
    message = raw.parse()
    assert raw.headers["request-id"] == raw.headers["x-request-id"]
    assert message._request_id == raw.headers["request-id"]
    assert raw.headers["x-sluiceway-provider"] == "mock"
    with pytest.raises(anthropic.NotFoundError) as caught:
        create(client, model="nope")
    assert caught.value.request_id == caught.value.response.headers["x-request-id"]


def test_usage_and_provider_are_recorded_for_call_policies(
    client: anthropic.Anthropic, recorder: StateRecorder
) -> None:
    message = create(client)
    streamed, _ = final(client)
    client.messages.count_tokens(model="mock-gpt", messages=ASK)
    plain, stream, count = recorder.seen
    for seen, answer in ((plain, message), (stream, streamed)):
        assert seen["provider"] == "mock"
        usage = seen["usage"]
        assert usage.prompt_tokens == answer.usage.input_tokens
        assert usage.completion_tokens == answer.usage.output_tokens
        assert usage.total_tokens == answer.usage.input_tokens + answer.usage.output_tokens
    assert count == {"path": "/v1/messages/count_tokens", "provider": "mock", "usage": None}


def test_failure_mid_stream_is_an_error_event(
    gateway_factory: Callable[..., RunningServer]
) -> None:
    server = gateway_factory(mock_config(drop_rate=1.0))
    with anthropic.Anthropic(api_key="x", base_url=server.url, max_retries=0) as client:
        received: list[str] = []
        with pytest.raises(anthropic.APIStatusError) as caught, client.messages.stream(
            model="mock-gpt", max_tokens=200, messages=ASK
        ) as stream:
            for text in stream.text_stream:
                received.append(text)
        assert received  # it had started: the error came as an event, not a status
        assert caught.value.status_code == 200
        assert caught.value.body == {"type": "error", "error": {
            "type": "api_error",
            "message": "The mock provider is simulating a connection dropped mid-response."}}
        with pytest.raises(anthropic.InternalServerError) as whole:
            create(client)
    assert whole.value.status_code == 502
    assert whole.value.type == "api_error"  # type: ignore[attr-defined]
