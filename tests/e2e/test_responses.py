"""``POST /v1/responses`` end to end with the real openai SDK: text and item
input, instructions, function tools and their outputs, structured output, an
Anthropic upstream, and errors in the OpenAI shape."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
from sluiceway_anthropic.testing import FakeAnthropic

from sluiceway.testing import RunningServer

Factory = Callable[..., RunningServer]
MOCK = {"name": "mock", "type": "mock", "models": ["mock-gpt", "mock-reasoner"],
        "reasoning_models": ["mock-reasoner"], "allow_request_faults": True}
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather now",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"]}}


def _client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(api_key="unused", base_url=server.base_url, max_retries=0)


@pytest.fixture
def server(gateway_factory: Factory) -> RunningServer:
    return gateway_factory({"gateway": {"plugins": ["mock", "limits"]}, "providers": [MOCK]})


def test_text_in_text_out(server: RunningServer) -> None:
    with _client(server) as client:
        response = client.responses.create(model="mock-gpt", input="Say hello.",
                                           instructions="Be brief.")
        items = client.responses.create(model="mock-gpt", input=[
            {"role": "user", "content": [{"type": "input_text", "text": "Say hello."}]}])
        short = client.responses.create(model="mock-gpt", input="Say hello.",
                                        max_output_tokens=3)
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.status == "completed"
    assert response.output_text
    assert response.output[0].type == "message"
    assert response.usage is not None and response.usage.output_tokens > 0
    assert response.usage.total_tokens == (response.usage.input_tokens
                                           + response.usage.output_tokens)
    # The instructions are a system message: more input tokens than without.
    assert items.usage is not None and response.usage.input_tokens > items.usage.input_tokens
    assert short.status == "incomplete"
    assert short.incomplete_details is not None
    assert short.incomplete_details.reason == "max_output_tokens"


def test_function_tools_round_trip(server: RunningServer) -> None:
    with _client(server) as client:
        called = client.responses.create(model="mock-gpt", tools=[WEATHER],  # type: ignore[list-item]
                                         input="What is get_weather in Paris?")
        (call,) = [item for item in called.output if item.type == "function_call"]
        assert call.name == "get_weather"
        json.loads(call.arguments)
        answered = client.responses.create(model="mock-gpt", tools=[WEATHER],  # type: ignore[list-item]
                                           input=[
            {"role": "user", "content": "What is get_weather in Paris?"},
            {"type": "function_call", "call_id": call.call_id, "name": call.name,
             "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": "18 C"},
        ])
    assert answered.output_text


def test_an_anthropic_upstream_answers_responses(
    gateway_factory: Factory, serve_asgi: Factory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeAnthropic()
    upstream = serve_asgi(fake)
    monkeypatch.setenv("RESPONSES_TEST_ANTHROPIC_KEY", "sk-ant")
    server = gateway_factory({"gateway": {"plugins": ["anthropic"]}, "providers": [{
        "name": "claude", "type": "anthropic", "base_url": upstream.url,
        "api_key": "env:RESPONSES_TEST_ANTHROPIC_KEY", "models": ["claude-x"]}]})
    with _client(server) as client:
        text = client.responses.create(model="claude-x", input="hi", instructions="Be kind.")
        structured = client.responses.create(model="claude-x", input="json", text={
            "format": {"type": "json_schema", "name": "verdict", "schema": {
                "type": "object", "properties": {"answer": {"type": "string"}}}}})
    assert text.output_text == "Hello there"
    assert fake.requests[0]["body"]["system"] == "Be kind."
    assert json.loads(structured.output_text) == {"answer": "4", "confidence": 0.9}
    assert fake.requests[1]["body"]["tool_choice"] == {"type": "tool", "name": "json_response"}


def test_bad_responses_requests_get_openai_errors(server: RunningServer) -> None:
    with httpx.Client(base_url=server.base_url) as client:
        cases: list[tuple[dict[str, Any], str]] = [
            ({"model": "mock-gpt"}, "input"),
            ({"model": "mock-gpt", "input": "hi", "previous_response_id": "resp_1"},
             "previous_response_id"),
            ({"model": "mock-gpt", "input": "hi", "tools": [{"type": "web_search"}]},
             "tools[0].type"),
            ({"model": "mock-gpt", "input": [{"role": "robot", "content": "hi"}]},
             "input[0].role"),
            ({"model": "mock-gpt", "input": [{"type": "item_reference", "id": "msg_1"}]},
             "input[0].type"),
            # Refused once translated: named as the Responses body names it.
            ({"model": "mock-gpt", "input": "hi", "max_output_tokens": -1},
             "max_output_tokens"),
            ({"model": "mock-gpt", "input": "hi", "text": {"format": {
                "type": "json_schema", "schema": {"type": "object"}}}}, "text.format.name"),
        ]
        for body, param in cases:
            answer = client.post("/responses", json=body)
            assert answer.status_code == 400, body
            assert answer.json()["error"]["param"] == param, body
        unknown = client.post("/responses", json={"model": "nope", "input": "hi"})
        assert unknown.status_code == 404
        failed = client.post("/responses", json={"model": "mock-gpt", "input": "hi",
                                                 "metadata": {"mock_fault": "error"}})
        assert failed.status_code == 502
        assert failed.json()["error"]["type"]


TEXT_EVENTS = [
    "response.created", "response.in_progress", "response.output_item.added",
    "response.content_part.added", "response.output_text.delta",
]
CLOSING = ["response.output_text.done", "response.content_part.done",
           "response.output_item.done", "response.completed"]


def test_a_streamed_response_has_the_event_sequence(server: RunningServer) -> None:
    with _client(server) as client:
        events = list(client.responses.create(model="mock-gpt", input="Say hello.",
                                              stream=True))
        whole = client.responses.create(model="mock-gpt", input="Say hello.")
    kinds = [event.type for event in events]
    assert kinds[:5] == TEXT_EVENTS
    assert kinds[-4:] == CLOSING
    assert set(kinds[5:-4]) == {"response.output_text.delta"}
    assert [event.sequence_number for event in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    # The mock answers the same request the same way, streamed or not.
    assert text == whole.output_text
    done = events[-1].response
    assert done.status == "completed" and done.output_text == text
    assert done.usage is not None and done.usage.output_tokens == whole.usage.output_tokens


def test_reasoning_comes_back_as_a_reasoning_item_and_may_be_sent_back(
    server: RunningServer,
) -> None:
    with _client(server) as client:
        whole = client.responses.create(model="mock-reasoner", input="Think, then answer.")
        events = list(client.responses.create(model="mock-reasoner", input="Think, then answer.",
                                              stream=True))
        # The SDK's way of keeping context by hand: every output item goes back as input.
        again = client.responses.create(model="mock-reasoner", input=[
            {"role": "user", "content": "Think, then answer."},
            *[item.model_dump(exclude_none=True) for item in whole.output],
            {"role": "user", "content": "And once more?"}])
    thought, answer = whole.output
    assert thought.type == "reasoning" and answer.type == "message"
    assert thought.content and thought.content[0].type == "reasoning_text"
    assert thought.content[0].text and whole.output_text
    assert whole.usage is not None and whole.usage.output_tokens_details.reasoning_tokens > 0
    kinds = [event.type for event in events]
    assert kinds[2] == "response.output_item.added"
    assert events[2].item.type == "reasoning"  # type: ignore[union-attr]
    streamed = "".join(e.delta for e in events if e.type == "response.reasoning_text.delta")
    assert streamed == thought.content[0].text
    # The thinking is closed before the answer's item opens.
    done = kinds.index("response.reasoning_text.done")
    assert kinds[done + 1] == "response.output_item.done"
    assert kinds[done + 2] == "response.output_item.added"
    final = events[-1].response  # type: ignore[union-attr]
    assert [item.type for item in final.output] == ["reasoning", "message"]
    assert again.output_text


def test_a_streamed_function_call(server: RunningServer) -> None:
    with _client(server) as client, client.responses.stream(
        model="mock-gpt", tools=[WEATHER],  # type: ignore[list-item]
        input="What is get_weather in Paris?",
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [event.type for event in events]
    assert "response.function_call_arguments.delta" in kinds
    assert kinds.index("response.function_call_arguments.done") < kinds.index(
        "response.completed")
    (call,) = [item for item in final.output if item.type == "function_call"]
    assert call.name == "get_weather"
    assert json.loads(call.arguments)


def test_a_stream_that_fails_midway_ends_with_an_error_event(
    gateway_factory: Factory,
) -> None:
    server = gateway_factory({"gateway": {"plugins": ["mock"]}, "providers": [
        {**MOCK, "max_retries": 0}]})
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        answer = client.post("/responses", json={
            "model": "mock-gpt", "input": "Tell me a story.", "stream": True,
            "metadata": {"mock_fault": "drop"}})
    assert answer.status_code == 200
    events = [line[len("event: "):] for line in answer.text.splitlines()
              if line.startswith("event: ")]
    assert events[0] == "response.created"
    assert events[-1] == "error"
    assert "response.completed" not in events


def test_limits_and_costs_apply_as_to_chat(gateway_factory: Factory) -> None:
    server = gateway_factory({
        "gateway": {"plugins": ["mock", "costs", "limits"]},
        "providers": [MOCK],
        "plugin": {"limits": {"default_rpm": 2},
                   "costs": {"prices": {"mock-gpt": {"input": 1.0, "output": 2.0}}}},
    })
    with _client(server) as client:
        first = client.responses.with_raw_response.create(model="mock-gpt", input="hi")
        list(client.responses.create(model="mock-gpt", input="hi", stream=True))
        with pytest.raises(openai.RateLimitError) as limited:
            client.responses.create(model="mock-gpt", input="hi")
    usage = first.parse().usage
    assert usage is not None
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert float(first.headers["x-sluiceway-cost"]) == pytest.approx(
        (usage.input_tokens * 1.0 + usage.output_tokens * 2.0) / 1e6)
    assert limited.value.code == "rate_limit_exceeded"


def test_stream_items_close_in_order_and_late_call_ids_are_kept() -> None:
    from sluiceway.wire.responses_stream import ResponsesEventStream

    stream = ResponsesEventStream({"model": "m"}, created=0)
    events = stream.start()
    for delta in ({"content": "Let me check."},
                  {"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\""}}]},
                  {"tool_calls": [{"index": 0, "id": "call_9",
                                   "function": {"name": "get_weather", "arguments": ":1}"}}]}):
        events += stream.feed({"choices": [{"index": 0, "delta": delta}]})
    events += stream.feed({"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]})
    events += stream.finish()
    kinds = [kind for kind, _ in events]
    # The message is done before the call's item is added.
    assert kinds.index("response.output_item.done") < kinds.index(
        "response.output_item.added", kinds.index("response.output_text.done"))
    final = events[-1][1]["response"]
    assert events[-1][0] == "response.incomplete"
    message, call = final["output"]
    # The message was done before the call began; the cut call is incomplete.
    assert (message["status"], call["status"]) == ("completed", "incomplete")
    assert (call["call_id"], call["name"], call["arguments"]) == (
        "call_9", "get_weather", '{"city":1}')


def test_reasoning_after_text_opens_a_new_item_only_once_the_text_is_done() -> None:
    from sluiceway.wire.responses_stream import ResponsesEventStream

    stream = ResponsesEventStream({"model": "m"}, created=0)
    events = stream.start()
    for delta in ({"content": "First."}, {"reasoning_content": "Hmm."}, {"content": "Then."}):
        events += stream.feed({"choices": [{"index": 0, "delta": delta}]})
    events += stream.finish()
    opened: list[int] = []
    for kind, data in events:
        if kind == "response.output_item.added":
            opened.append(data["output_index"])
        elif kind == "response.output_item.done":
            assert opened[-1] == data["output_index"]  # only the newest item is ever open
            opened.pop()
        elif "delta" in kind:
            assert data["output_index"] == opened[-1]
    final = events[-1][1]["response"]
    assert [item["type"] for item in final["output"]] == ["message", "reasoning", "message"]


def test_function_call_outputs_as_parts_or_objects() -> None:
    from sluiceway.wire.responses import chat_body

    body = chat_body({"model": "m", "input": [
        {"type": "function_call_output", "call_id": "c1",
         "output": [{"type": "input_text", "text": "18 C"}]},
        {"type": "function_call_output", "call_id": "c2", "output": {"t": 18}},
    ]})
    assert body["messages"][0]["content"] == [{"type": "text", "text": "18 C"}]
    assert json.loads(body["messages"][1]["content"]) == {"t": 18}
