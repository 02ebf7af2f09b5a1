"""The gateway's /v1/messages in front of the anthropic provider: passed through
natively, with no round trip through the canonical OpenAI shape.

The real anthropic SDK -> a real gateway -> the fake Anthropic upstream
(:mod:`sluiceway_anthropic.testing`), which records exactly what it receives.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx
import pytest
from sluiceway_anthropic.testing import ANSWERS, COUNTED, FakeAnthropic, events

import sluiceway
from sluiceway.testing import RunningServer

Upstream = tuple[FakeAnthropic, RunningServer]
# A body the canonical shape cannot express (a server tool, a cache_control, a
# citations document, a field it does not know): it must reach the upstream whole.
RICH: dict[str, Any] = {
    "model": "claude-x",
    "max_tokens": 300,
    "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
    "messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                        "data": "Paris is in France."},
         "citations": {"enabled": True}},
        {"type": "text", "text": "hi"},
    ]}],
    "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 2}],
    "service_tier": "auto",
}


class UsageRecorder:
    """A test plugin: a call policy that records each settled call's usage
    (what the limits plugin settles with, and metrics read)."""

    def __init__(self) -> None:
        self.usage: list[Any] = []

    @sluiceway.hookimpl
    def register_call_policies(
        self, register: Callable[[sluiceway.CallPolicyType], None]
    ) -> None:
        recorder = self

        class Record:
            name = "usage-recorder"
            kinds = frozenset({"messages"})

            async def admit(self, call: sluiceway.ModelCall) -> sluiceway.Settle:
                async def settle(call: sluiceway.ModelCall) -> None:
                    recorder.usage.append(call.usage)

                return settle

        register(sluiceway.CallPolicyType("usage-recorder", lambda gateway: Record()))


@pytest.fixture
def recorder() -> UsageRecorder:
    return UsageRecorder()


@pytest.fixture
def upstream(serve_asgi: Callable[..., RunningServer]) -> Upstream:
    fake = FakeAnthropic()
    return fake, serve_asgi(fake)


@pytest.fixture
def gateway(upstream: Upstream, gateway_factory: Callable[..., RunningServer],
            monkeypatch: pytest.MonkeyPatch, recorder: UsageRecorder) -> RunningServer:
    monkeypatch.setenv("SLUICEWAY_TEST_ANTHROPIC_KEY", "sk-ant-secret")
    return gateway_factory({
        "gateway": {"plugins": ["anthropic"]},
        "providers": [{
            "name": "claude", "type": "anthropic", "base_url": upstream[1].url,
            "api_key": "env:SLUICEWAY_TEST_ANTHROPIC_KEY", "max_retries": 0,
            "cooldown_failures": 1000,
            "models": [{"name": "claude-x", "upstream": "claude-sonnet-4"}],
        }],
    }, plugins=[("usage-recorder", recorder)])


@pytest.fixture
def client(gateway: RunningServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(api_key="client-key", base_url=gateway.url, max_retries=0) as sdk:
        yield sdk


def _upstream_body(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "model": "claude-sonnet-4"}


def test_body_and_answer_pass_through_untranslated(
    client: anthropic.Anthropic, upstream: Upstream
) -> None:
    raw = client.messages.with_raw_response.create(
        **RICH, extra_headers={"anthropic-beta": "web-search-2025-03-05"}
    )
    message = raw.parse()
    (seen,) = upstream[0].requests
    assert seen["path"] == "/v1/messages"
    assert seen["body"] == _upstream_body(RICH)
    assert seen["headers"]["x-api-key"] == "sk-ant-secret"  # the provider's key, not the client's
    assert seen["headers"]["anthropic-beta"] == "web-search-2025-03-05"
    assert seen["headers"]["anthropic-version"] == "2023-06-01"
    # The upstream's message as it sent it: its id, its model, its usage.
    assert json.loads(raw.http_response.content) == ANSWERS["hi"]
    assert message.id == "msg_up"
    assert raw.headers["x-sluiceway-provider"] == "claude"
    assert raw.headers["request-id"] == raw.headers["x-request-id"]


def test_stream_events_pass_through_as_received(
    gateway: RunningServer, upstream: Upstream
) -> None:
    body = {**RICH, "messages": [{"role": "user", "content": "tools"}], "stream": True}
    with httpx.Client(timeout=30) as http, http.stream(
        "POST", gateway.url + "/v1/messages", json=body
    ) as response:
        assert response.status_code == 200
        raw = response.read()
    frames = raw[:-2].split(b"\n\n")
    received = [(f.split(b"\n")[0][7:].decode(), json.loads(f.split(b"\n")[1][6:]))
                for f in frames]
    assert received == events("tools")  # every event, ping and empty fragments included
    assert upstream[0].requests[0]["body"] == _upstream_body(body)


@pytest.mark.parametrize("scenario", ["hi", "tools", "think"])
def test_sdk_reassembles_the_native_stream(client: anthropic.Anthropic, scenario: str) -> None:
    with client.messages.stream(model="claude-x", max_tokens=100,
                                messages=[{"role": "user", "content": scenario}]) as stream:
        final = stream.get_final_message()
    answer = ANSWERS[scenario]
    assert [block.model_dump(exclude_none=True) for block in final.content] == answer["content"]
    assert final.stop_reason == answer["stop_reason"]
    assert final.usage.output_tokens == 9


async def test_async_plain_and_count_tokens(gateway: RunningServer, upstream: Upstream) -> None:
    async with anthropic.AsyncAnthropic(api_key="k", base_url=gateway.url,
                                        max_retries=0) as sdk:
        message = await sdk.messages.create(model="claude-x", max_tokens=10,
                                            messages=[{"role": "user", "content": "think"}])
        counted = await sdk.messages.count_tokens(
            model="claude-x", messages=[{"role": "user", "content": "hi"}], tools=RICH["tools"]
        )
    assert [block.type for block in message.content] == ["thinking", "text"]
    assert counted.input_tokens == COUNTED
    count = upstream[0].requests[1]
    assert count["path"] == "/v1/messages/count_tokens"
    assert count["body"] == {"model": "claude-sonnet-4", "tools": RICH["tools"],
                             "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("scenario", "error", "kind"), [
    ("529", anthropic.OverloadedError, "overloaded_error"),
    ("500", anthropic.InternalServerError, "api_error"),
    ("400", anthropic.BadRequestError, "invalid_request_error"),
    ("404", anthropic.NotFoundError, "not_found_error"),
    ("429", anthropic.RateLimitError, "rate_limit_error"),
])
def test_upstream_errors_keep_their_anthropic_class(
    client: anthropic.Anthropic, stream: bool, scenario: str,
    error: type[anthropic.APIStatusError], kind: str,
) -> None:
    messages: list[Any] = [{"role": "user", "content": scenario}]
    with pytest.raises(error) as caught:
        if stream:
            with client.messages.stream(model="claude-x", max_tokens=10,
                                        messages=messages) as events_:
                events_.until_done()
        else:
            client.messages.create(model="claude-x", max_tokens=10, messages=messages)
    body = caught.value.body
    assert isinstance(body, dict) and body["error"]["type"] == kind
    assert "Provider 'claude' answered HTTP" in body["error"]["message"]


def test_upstream_error_event_mid_stream(client: anthropic.Anthropic) -> None:
    received: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as caught, client.messages.stream(
        model="claude-x", max_tokens=10, messages=[{"role": "user", "content": "error-mid-stream"}]
    ) as stream:
        for text in stream.text_stream:
            received.append(text)
    assert "".join(received) == "Hello there"
    assert caught.value.body == {"type": "error", "error": {
        "type": "overloaded_error",
        "message": "Provider 'claude' failed mid-stream: Overloaded (overloaded_error)"}}


def test_stream_without_message_stop_ends_with_an_error_event(client: anthropic.Anthropic
                                                              ) -> None:
    with pytest.raises(anthropic.APIStatusError) as caught, client.messages.stream(
        model="claude-x", max_tokens=10, messages=[{"role": "user", "content": "no-message-stop"}]
    ) as stream:
        stream.until_done()
    body = caught.value.body
    assert isinstance(body, dict) and body["error"]["type"] == "api_error"
    assert "without message_stop" in body["error"]["message"]


def test_usage_is_recorded_for_limits_and_metrics(
    client: anthropic.Anthropic, recorder: UsageRecorder
) -> None:
    hi: list[Any] = [{"role": "user", "content": "hi"}]
    client.messages.create(model="claude-x", max_tokens=10, messages=hi)
    with client.messages.stream(model="claude-x", max_tokens=10, messages=hi) as stream:
        stream.until_done()
    # input 11 + cache reads 4, output 9: the usage every policy reads.
    expected = sluiceway.Usage(prompt_tokens=15, completion_tokens=9, cached_tokens=4)
    assert recorder.usage == [expected, expected]
    assert expected.total_tokens == 24
