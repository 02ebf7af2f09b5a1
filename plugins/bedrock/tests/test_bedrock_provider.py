"""The bedrock provider end to end: the real openai and anthropic SDKs -> a real
gateway on hypercorn -> FakeBedrock, which recomputes every request's SigV4
signature and checks its Converse body, and streams AWS's binary event stream."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anthropic
import httpx
import openai
import pytest
from sluiceway_bedrock.testing import FakeBedrock

from sluiceway import ConfigError, create_app
from sluiceway.testing import RunningServer

Serve = Callable[..., RunningServer]
MODEL = "anthropic.claude-3-5-sonnet-20241022-v2:0"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object",
                                          "properties": {"city": {"type": "string"}}}}}


def _user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


@pytest.fixture(autouse=True)
def _aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDFAKE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "session-token")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")


@pytest.fixture
def fake() -> FakeBedrock:
    return FakeBedrock(access_key_id="AKIDFAKE", secret_access_key="secret",
                       session_token="session-token", region="eu-west-1")


@pytest.fixture
def upstream(fake: FakeBedrock, serve_asgi: Serve) -> RunningServer:
    return serve_asgi(fake)


def _config(upstream: RunningServer, **options: Any) -> dict[str, Any]:
    provider = {"name": "bedrock", "type": "bedrock", "base_url": upstream.url,
                "max_retries": 0, "models": [{"name": "claude", "upstream": MODEL}], **options}
    return {"gateway": {"plugins": ["bedrock", "mock"]}, "providers": [provider]}


@pytest.fixture
def gateway(upstream: RunningServer, gateway_factory: Serve) -> RunningServer:
    return gateway_factory(_config(upstream))


def _client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="client", max_retries=0)


def test_signed_requests_whole_and_streamed(gateway: RunningServer, fake: FakeBedrock) -> None:
    with _client(gateway) as client:
        whole = client.chat.completions.create(
            model="claude", messages=[{"role": "system", "content": "Be brief."},
                                      *_user("hello there")], max_tokens=64, temperature=0.5)
        chunks = list(client.chat.completions.create(
            model="claude", messages=_user("hello there"), stream=True,
            stream_options={"include_usage": True}))
    assert whole.choices[0].message.content == "echo: hello there"
    assert whole.usage is not None
    assert (whole.usage.prompt_tokens, whole.usage.completion_tokens) == (14, 3)
    assert whole.usage.prompt_tokens_details.cached_tokens == 4  # type: ignore[union-attr]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: hello there"
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 14
    (path, headers, body), (stream_path, _, _) = fake.requests
    assert path == "/model/anthropic.claude-3-5-sonnet-20241022-v2%3A0/converse"
    assert stream_path.endswith("/converse-stream")
    assert headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDFAKE/")
    assert "/eu-west-1/bedrock/aws4_request" in headers["authorization"]
    assert headers["x-amz-security-token"] == "session-token"
    assert body["system"] == [{"text": "Be brief."}]
    assert body["inferenceConfig"] == {"maxTokens": 64, "temperature": 0.5}


def test_a_wrong_secret_fails_the_signature(
    upstream: RunningServer, gateway_factory: Serve, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    server = gateway_factory(_config(upstream))
    with _client(server) as client, pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model="claude", messages=_user("hi"))
    assert refused.value.status_code == 502
    assert refused.value.code == "upstream_auth_error"


def test_a_bedrock_api_key_replaces_signing(serve_asgi: Serve, gateway_factory: Serve) -> None:
    fake = FakeBedrock(api_key="bedrock-api-key")
    server = gateway_factory(_config(serve_asgi(fake), api_key="bedrock-api-key"))
    with _client(server) as client:
        answer = client.chat.completions.create(model="claude", messages=_user("hi"))
    assert answer.choices[0].message.content == "echo: hi"
    assert fake.requests[0][1]["authorization"] == "Bearer bedrock-api-key"


def test_tools_round_trip_whole_and_streamed(gateway: RunningServer, fake: FakeBedrock) -> None:
    with _client(gateway) as client:
        first = client.chat.completions.create(model="claude", messages=_user("tools"),
                                               tools=[WEATHER], tool_choice="required")
        call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
        second = client.chat.completions.create(model="claude", tools=[WEATHER], messages=[
            *_user("tools"), first.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21}'}])
        streamed = list(client.chat.completions.create(
            model="claude", messages=_user("tools"), tools=[WEATHER], stream=True))
    assert first.choices[0].finish_reason == "tool_calls"
    assert (call.id, call.function.name) == ("tooluse_1", "get_weather")
    assert json.loads(call.function.arguments) == {"city": "Oslo"}
    assert second.choices[0].message.content == 'result: {"json": {"temp": 21}}'
    sent = fake.requests[0][2]["toolConfig"]
    assert sent["toolChoice"] == {"any": {}}
    assert sent["tools"][0]["toolSpec"]["inputSchema"] == {"json": WEATHER["function"][
        "parameters"]}
    deltas = [c.choices[0].delta.tool_calls[0] for c in streamed  # type: ignore[index]
              if c.choices and c.choices[0].delta.tool_calls]
    assert deltas[0].id == "tooluse_1" and deltas[0].function.name == "get_weather"
    assert json.loads("".join(d.function.arguments or "" for d in deltas)) == {"city": "Oslo"}
    assert [c.choices[0].finish_reason for c in streamed if c.choices][-1] == "tool_calls"


def test_reasoning_and_guardrails(gateway: RunningServer, fake: FakeBedrock) -> None:
    with _client(gateway) as client:
        thought = client.chat.completions.create(model="claude", messages=_user("think"),
                                                 reasoning_effort="low")
        stopped = client.chat.completions.create(model="claude", messages=_user("guardrail"))
        streamed = list(client.chat.completions.create(model="claude", messages=_user("think"),
                                                       stream=True))
    assert thought.choices[0].message.content == "4"
    assert (thought.choices[0].message.model_extra or {})["reasoning_content"] == \
        "Two and two make four."
    assert fake.requests[0][2]["additionalModelRequestFields"] == {
        "thinking": {"type": "enabled", "budget_tokens": 1024}}
    assert fake.requests[0][2]["inferenceConfig"]["maxTokens"] > 1024
    assert stopped.choices[0].finish_reason == "content_filter"
    reasoning = "".join((c.choices[0].delta.model_extra or {}).get("reasoning_content") or ""
                        for c in streamed if c.choices)
    assert reasoning == "Two and two make four."


def test_errors_map_to_status_and_kind(upstream: RunningServer, gateway_factory: Serve) -> None:
    config = _config(upstream)
    config["providers"].append({"name": "mock", "type": "mock", "models": ["mock-big"]})
    config["aliases"] = [{"name": "any", "targets": ["bedrock/claude", "mock/mock-big"],
                          "fallback_on": ["context_window"]}]
    server = gateway_factory(config)
    with _client(server) as client:
        with pytest.raises(openai.APIStatusError) as failed:
            client.chat.completions.create(model="claude", messages=_user("500"))
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model="claude", messages=[
                {"role": "assistant", "content": "I speak first."}])
        with pytest.raises(openai.BadRequestError) as no_format:
            client.chat.completions.create(model="claude", messages=_user("hi"),
                                           response_format={"type": "json_object"})
        fell_back = client.chat.completions.with_raw_response.create(
            model="any", messages=_user("long"))
        with pytest.raises(openai.RateLimitError) as limited:
            client.chat.completions.create(model="claude", messages=_user("429"))
    assert failed.value.status_code == 502
    assert refused.value.param == "messages"
    assert no_format.value.param == "response_format"
    assert fell_back.headers["x-sluiceway-provider"] == "mock"
    assert limited.value.code == "rate_limit_exceeded"


def test_stream_failures_end_with_an_error_frame(gateway: RunningServer) -> None:
    with httpx.Client(base_url=gateway.base_url, timeout=30) as http:
        answers = {said: http.post("/chat/completions", json={
            "model": "claude", "stream": True, "messages": _user(said)}).text
            for said in ("error-mid-stream", "no-stop", "bad-crc")}
    assert "modelStreamErrorException" in answers["error-mid-stream"]
    assert "upstream_stream_truncated" in answers["no-stop"]
    assert "upstream_invalid_response" in answers["bad-crc"]
    assert all("[DONE]" not in text.split('"error"')[0] for text in answers.values())


def test_anthropic_clients_reach_bedrock(gateway: RunningServer) -> None:
    with anthropic.Anthropic(base_url=gateway.url, api_key="client", max_retries=0) as client:
        message = client.messages.create(model="claude", max_tokens=64,
                                         messages=[{"role": "user", "content": "hello"}])
    assert message.content[0].text == "echo: hello"  # type: ignore[union-attr]


def test_credentials_are_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    with pytest.raises(Exception, match="no AWS credentials"):
        app = create_app({"gateway": {"plugins": ["bedrock"]}, "providers": [
            {"name": "b", "type": "bedrock", "models": ["m"]}]})
        import asyncio

        asyncio.run(app.startup())
    monkeypatch.delenv("AWS_REGION")
    with pytest.raises(ConfigError, match="no region"):
        create_app({"gateway": {"plugins": ["bedrock"]}, "providers": [
            {"name": "b", "type": "bedrock", "models": ["m"]}]})


def test_bedrock_errors_reach_anthropic_clients_in_their_dialect(gateway: RunningServer) -> None:
    with anthropic.Anthropic(base_url=gateway.url, api_key="client", max_retries=0) as client:
        with pytest.raises(anthropic.InternalServerError) as failed:
            client.messages.create(model="claude", max_tokens=64,
                                   messages=[{"role": "user", "content": "500"}])
        streamed = client.messages.create(model="claude", max_tokens=64, stream=True,
                                          messages=[{"role": "user", "content": "tools"}],
                                          tools=[{"name": "get_weather", "input_schema": {
                                              "type": "object", "properties": {}}}])
        events = list(streamed)
    assert failed.value.status_code == 502
    assert failed.value.body["type"] == "error"  # type: ignore[index]
    uses = [e for e in events if e.type == "content_block_start"
            and e.content_block.type == "tool_use"]
    assert uses and uses[0].content_block.name == "get_weather"  # type: ignore[union-attr]
    assert events[-1].type == "message_stop"


def test_a_thinking_tool_loop_sends_the_signed_thinking_back(
    gateway: RunningServer, fake: FakeBedrock,
) -> None:
    """Claude refuses a tool loop whose thinking did not come back signed."""
    ask = {"model": "claude", "tools": [WEATHER], "reasoning_effort": "low",
           "temperature": 0.3}
    with _client(gateway) as client:
        first = client.chat.completions.create(messages=_user("think-tools"), **ask)
        message = first.choices[0].message
        call = message.tool_calls[0]  # type: ignore[index]
        second = client.chat.completions.create(**ask, messages=[
            *_user("think-tools"), message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": ""}])
        streamed = list(client.chat.completions.create(messages=_user("think-tools"),
                                                       stream=True, **ask))
    blocks = (message.model_extra or {})["thinking_blocks"]
    assert blocks == [{"type": "thinking", "thinking": "Two and two make four.",
                       "signature": "sig"}]
    assert second.choices[0].message.content == 'result: {"json": {"result": ""}}'
    sent = fake.requests[1][2]
    assert "temperature" not in sent["inferenceConfig"]
    assert sent["messages"][1]["content"][0] == {"reasoningContent": {"reasoningText": {
        "text": "Two and two make four.", "signature": "sig"}}}
    streamed_blocks = [b for c in streamed if c.choices
                       for b in (c.choices[0].delta.model_extra or {}).get("thinking_blocks") or ()]
    assert streamed_blocks == blocks


def test_query_parameters_are_refused_as_they_would_break_signatures(
    upstream: RunningServer,
) -> None:
    with pytest.raises(ConfigError, match="signed"):
        create_app(_config(upstream, query={"x": "1"}))
