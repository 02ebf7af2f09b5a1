"""``/v1/responses`` passed through to an upstream that serves the Responses API.

The real openai SDK -> a real gateway on hypercorn -> FakeOpenAI's Responses API
(which stores responses, as OpenAI does). With ``responses_api`` on, bodies go
upstream as they came, so ``previous_response_id``, reasoning items and built-in
tools work; with it off, the same requests are translated to chat completions,
and what chat cannot say is refused naming the field.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
from sluiceway_openai import OpenAIOptions

import sluiceway
from sluiceway.testing import RunningServer
from sluiceway.testing.fakes import ErrorEvent, FakeOpenAI, NoDone, Status, ToolCall

StartFake = Callable[..., FakeOpenAI]
StartGateway = Callable[..., RunningServer]
WEB_SEARCH = {"type": "web_search_preview"}


class UsageLog:
    """A call policy that keeps each settled call's kind, status and usage."""

    name = "usage-log"
    kinds = frozenset({"responses"})

    def __init__(self) -> None:
        self.settled: list[tuple[int, sluiceway.Usage | None]] = []

    async def admit(self, call: sluiceway.ModelCall) -> sluiceway.Settle:
        async def settle(call: sluiceway.ModelCall) -> None:
            self.settled.append((call.status, call.usage))

        return settle

    @sluiceway.hookimpl
    def register_call_policies(
        self, register: Callable[[sluiceway.CallPolicyType], None]
    ) -> None:
        register(sluiceway.CallPolicyType(self.name, lambda gateway: self))


def _config(fake: FakeOpenAI, **options: Any) -> dict[str, Any]:
    provider = {"name": "up", "type": "openai", "base_url": fake.url, "api_key": "sk-up",
                "max_retries": 0, "responses_api": True,
                "models": [{"name": "gpt-x", "upstream": "real-model"}], **options}
    return {"gateway": {"plugins": ["openai"]}, "providers": [provider]}


@pytest.fixture
def fake(fake_openai: StartFake) -> FakeOpenAI:
    return fake_openai(chunks=3)


@pytest.fixture
def usage_log() -> UsageLog:
    return UsageLog()


@pytest.fixture
def gateway(fake: FakeOpenAI, gateway_factory: StartGateway, usage_log: UsageLog
            ) -> RunningServer:
    return gateway_factory(_config(fake), plugins=[("usage-log", usage_log)])


def _client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="client-key", max_retries=0)


def _responses_requests(fake: FakeOpenAI) -> list[Any]:
    return [r.body for r in fake.requests if r.path == "/v1/responses"]


def test_a_response_passes_through_with_only_the_model_replaced(
    gateway: RunningServer, fake: FakeOpenAI, usage_log: UsageLog
) -> None:
    with _client(gateway) as client:
        raw = client.responses.with_raw_response.create(
            model="gpt-x", input="My name is Ada.", metadata={"kept": "yes"})
    response = raw.parse()
    assert response.output_text == "echo: My name is Ada."
    assert raw.headers["x-sluiceway-provider"] == "up"
    sent = _responses_requests(fake)
    assert sent == [{"model": "real-model", "input": "My name is Ada.",
                     "metadata": {"kept": "yes"}}]
    assert not [r for r in fake.requests if r.path == "/v1/chat/completions"]
    assert response.usage is not None
    status, usage = usage_log.settled[-1]
    assert status == 200 and usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (
        response.usage.input_tokens, response.usage.output_tokens)


def test_previous_response_id_continues_the_stored_conversation(
    gateway: RunningServer, fake: FakeOpenAI
) -> None:
    with _client(gateway) as client:
        first = client.responses.create(model="gpt-x", input="My name is Ada.")
        second = client.responses.create(model="gpt-x", input="What is my name?",
                                         previous_response_id=first.id)
        streamed = list(client.responses.create(
            model="gpt-x", input="And again?", previous_response_id=second.id, stream=True))
        with pytest.raises(openai.BadRequestError) as unknown:
            client.responses.create(model="gpt-x", input="hi", previous_response_id="resp_nope")
    assert second.output_text == "echo: What is my name? (remembering: My name is Ada.)"
    assert second.previous_response_id == first.id
    completed = streamed[-1]
    assert completed.type == "response.completed"
    assert completed.response.output_text == "echo: And again? (remembering: My name is Ada.)"
    assert _responses_requests(fake)[1]["previous_response_id"] == first.id
    assert unknown.value.code == "previous_response_not_found"
    assert unknown.value.param == "previous_response_id"


def test_reasoning_items_and_built_in_tools_reach_the_client_and_the_upstream(
    gateway: RunningServer, fake: FakeOpenAI
) -> None:
    with _client(gateway) as client:
        response = client.responses.create(
            model="gpt-x", input="Search for news.", tools=[WEB_SEARCH],
            reasoning={"effort": "low"})
    assert [item.type for item in response.output] == ["reasoning", "message"]
    assert response.usage is not None
    assert response.usage.output_tokens_details.reasoning_tokens == 3
    assert _responses_requests(fake)[0]["tools"] == [WEB_SEARCH]


def test_bodies_chat_cannot_say_reach_a_native_upstream_whole(
    gateway: RunningServer, fake: FakeOpenAI
) -> None:
    """A tool_choice that needs a built-in tool, an image by file id, no input at all
    after a stored response: each would be a 400 on the way through chat."""
    image = {"role": "user", "content": [{"type": "input_text", "text": "What is this?"},
                                         {"type": "input_image", "file_id": "file-1"}]}
    with _client(gateway) as client:
        first = client.responses.create(model="gpt-x", input="Search.", tools=[WEB_SEARCH],
                                        tool_choice="required")
        client.responses.create(model="gpt-x", input=[image])  # type: ignore[list-item]
        follow = client.responses.create(model="gpt-x", previous_response_id=first.id)
    sent = _responses_requests(fake)
    assert sent[0]["tool_choice"] == "required" and sent[0]["tools"] == [WEB_SEARCH]
    assert sent[1]["input"] == [image]
    assert "input" not in sent[2] and follow.previous_response_id == first.id


def test_a_stream_passes_the_upstreams_events_through(
    gateway: RunningServer, fake: FakeOpenAI, usage_log: UsageLog
) -> None:
    with _client(gateway) as client:
        text_events = list(client.responses.create(model="gpt-x", input="Hello there",
                                                   stream=True))
        fake.script(ToolCall(arguments={"city": "Oslo"}))
        tool = {"type": "function", "name": "get_weather",
                "parameters": {"type": "object", "properties": {}}}
        with client.responses.stream(model="gpt-x", input="Weather?",
                                     tools=[tool]) as stream:  # type: ignore[list-item]
            final = stream.get_final_response()
    kinds = [event.type for event in text_events]
    assert kinds[:4] == ["response.created", "response.in_progress",
                         "response.output_item.added", "response.content_part.added"]
    assert kinds[-1] == "response.completed"
    assert [event.sequence_number for event in text_events] == list(range(len(kinds)))
    text = "".join(e.delta for e in text_events if e.type == "response.output_text.delta")
    assert text == "echo: Hello there"
    call = final.output[0]
    assert call.type == "function_call"
    assert json.loads(call.arguments) == {"city": "Oslo"}
    # The stream's usage was read from response.completed, before settling.
    status, usage = usage_log.settled[0]
    completed = text_events[-1].response.usage
    assert status == 200 and usage is not None and completed is not None
    assert usage.completion_tokens == completed.output_tokens


def test_upstream_failures_are_answered_in_the_openai_shape(
    gateway: RunningServer, fake: FakeOpenAI
) -> None:
    fake.script(Status(503), ErrorEvent(after_chunks=3), NoDone())
    with _client(gateway) as client:
        with pytest.raises(openai.APIStatusError) as failed:
            client.responses.create(model="gpt-x", input="hi")
    assert failed.value.status_code == 502
    assert failed.value.code == "upstream_overloaded"
    with httpx.Client(base_url=gateway.base_url, timeout=30) as http:
        cut = http.post("/responses", json={"model": "gpt-x", "input": "hi", "stream": True})
        truncated = http.post("/responses",
                              json={"model": "gpt-x", "input": "hi", "stream": True})
    events = [json.loads(line[len("data: "):]) for line in cut.text.splitlines()
              if line.startswith("data: ")]
    assert [e["type"] for e in events][-1] == "error"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[-1]["code"] == "server_error"
    last = json.loads(truncated.text.strip().splitlines()[-1][len("data: "):])
    assert last["type"] == "error" and last["code"] == "upstream_stream_truncated"


def test_without_the_responses_api_requests_are_translated_and_refused_by_name(
    fake: FakeOpenAI, gateway_factory: StartGateway
) -> None:
    server = gateway_factory(_config(fake, responses_api=False))
    with _client(server) as client:
        translated = client.responses.create(model="gpt-x", input="Hello")
        with pytest.raises(openai.BadRequestError) as chained:
            client.responses.create(model="gpt-x", input="hi", previous_response_id="resp_1")
        with pytest.raises(openai.BadRequestError) as built_in:
            client.responses.create(model="gpt-x", input="hi", tools=[WEB_SEARCH])
    assert translated.output_text == "echo: Hello"
    assert [r.path for r in fake.requests] == ["/v1/chat/completions"]
    assert chained.value.param == "previous_response_id"
    assert "keeps responses" in chained.value.message
    assert built_in.value.param == "tools[0].type"
    with _client(server) as client, pytest.raises(openai.BadRequestError) as by_file:
        client.responses.create(model="gpt-x", input=[{"role": "user", "content": [
            {"type": "input_image", "file_id": "file-1"}]}])  # type: ignore[list-item]
    assert by_file.value.param == "input[0].content[0].image_url"


def test_an_alias_over_both_kinds_sends_each_what_it_can_take(
    fake_openai: StartFake, gateway_factory: StartGateway
) -> None:
    """A chained request skips the deployment that would have to refuse it."""
    native, chat_only = fake_openai(), fake_openai()
    providers = [
        {"name": "chat-only", "type": "openai", "base_url": chat_only.url, "api_key": "sk",
         "max_retries": 0, "models": [{"name": "m1", "upstream": "m"}]},
        {"name": "native", "type": "openai", "base_url": native.url, "api_key": "sk",
         "responses_api": True, "models": [{"name": "m2", "upstream": "m"}]},
    ]
    server = gateway_factory({
        "gateway": {"plugins": ["openai"]}, "providers": providers,
        "aliases": [{"name": "gpt-x", "strategy": "fallback",
                     "targets": ["chat-only/m1", "native/m2"]}]})
    with _client(server) as client:
        plain = client.responses.with_raw_response.create(model="gpt-x", input="hi")
        first = client.responses.create(model="gpt-x", input="tools", tools=[WEB_SEARCH])
        chained = client.responses.with_raw_response.create(
            model="gpt-x", input="again", previous_response_id=first.id)
    assert plain.headers["x-sluiceway-provider"] == "chat-only"
    assert chained.headers["x-sluiceway-provider"] == "native"
    assert "remembering: tools" in chained.parse().output_text


def test_responses_api_is_on_by_default_for_openai_only() -> None:
    assert OpenAIOptions(base_url="https://api.openai.com/v1").serves_responses()
    assert not OpenAIOptions(base_url="http://127.0.0.1:8000/v1").serves_responses()
    assert not OpenAIOptions(base_url="https://api.openai.com/v1",
                             responses_api=False).serves_responses()
    assert OpenAIOptions(base_url="http://vllm:8000/v1", responses_api=True).serves_responses()
