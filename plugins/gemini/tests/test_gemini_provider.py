"""The gemini provider end to end: the real openai and anthropic SDKs -> a real
gateway on hypercorn -> FakeGemini, a local server that checks each request as
strictly as the Gemini API does (the key, the path, every part and field)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import anthropic
import httpx
import openai
import pytest
from sluiceway_gemini.request import UNSIGNED, split_call_id
from sluiceway_gemini.testing import SIGNATURE, FakeGemini

from sluiceway.testing import RunningServer

Serve = Callable[..., RunningServer]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather now",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}


def _user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


@pytest.fixture
def fake() -> FakeGemini:
    return FakeGemini(key="gemini-key")


@pytest.fixture
def upstream(fake: FakeGemini, serve_asgi: Serve) -> RunningServer:
    return serve_asgi(fake)


def _config(upstream: RunningServer, **options: Any) -> dict[str, Any]:
    provider = {"name": "gemini", "type": "gemini", "base_url": upstream.url,
                "api_key": "gemini-key", "max_retries": 0,
                "models": ["gemini-2.5-flash",
                           {"name": "embed", "upstream": "gemini-embedding-001"}],
                **options}
    return {"gateway": {"plugins": ["gemini", "mock"]}, "providers": [provider]}


@pytest.fixture
def gateway(upstream: RunningServer, gateway_factory: Serve) -> RunningServer:
    return gateway_factory(_config(upstream))


def _client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="client", max_retries=0)


def test_text_whole_and_streamed(gateway: RunningServer, fake: FakeGemini) -> None:
    with _client(gateway) as client:
        whole = client.chat.completions.create(
            model="gemini-2.5-flash", messages=[
                {"role": "system", "content": "Be brief."}, *_user("hello there")],
            temperature=0.2, max_tokens=50, stop=["END"], seed=3)
        chunks = list(client.chat.completions.create(
            model="gemini-2.5-flash", messages=_user("hello there"), stream=True,
            stream_options={"include_usage": True}))
    assert whole.choices[0].message.content == "echo: hello there"
    assert whole.choices[0].finish_reason == "stop"
    assert whole.model == "gemini-2.5-flash-001"
    assert whole.usage is not None and whole.usage.prompt_tokens == 2
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: hello there"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
    (path, _, headers, body), (stream_path, query, _, _) = fake.requests
    assert path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert stream_path == "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    assert query == {"alt": "sse"}
    assert headers["x-goog-api-key"] == "gemini-key"
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert body["generationConfig"] == {"temperature": 0.2, "maxOutputTokens": 50,
                                        "stopSequences": ["END"], "seed": 3}


def test_images_go_inline_or_by_uri(gateway: RunningServer, fake: FakeGemini) -> None:
    content = [{"type": "text", "text": "What is this?"},
               {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}},
               {"type": "image_url", "image_url": {"url": "https://example.com/cat.webp"}}]
    with _client(gateway) as client:
        client.chat.completions.create(model="gemini-2.5-flash",
                                       messages=[{"role": "user", "content": content}])
    parts = fake.requests[0][3]["contents"][0]["parts"]
    assert parts[1] == {"inlineData": {"mimeType": "image/png", "data": "iVBORw0K"}}
    assert parts[2] == {"fileData": {"mimeType": "image/webp",
                                     "fileUri": "https://example.com/cat.webp"}}


def test_a_tool_call_round_trip_keeps_gemini_s_signature(
    gateway: RunningServer, fake: FakeGemini,
) -> None:
    with _client(gateway) as client:
        first = client.chat.completions.create(
            model="gemini-2.5-flash", messages=_user("tools"), tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "get_weather"}})
        call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
        # The answer goes back as the SDK's users send it; the fake refuses a
        # call sent back without the signature it made it with.
        second = client.chat.completions.create(
            model="gemini-2.5-flash", tools=[WEATHER], messages=[
                *_user("tools"), first.choices[0].message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21}'}])
        streamed = list(client.chat.completions.create(
            model="gemini-2.5-flash", messages=_user("tools"), tools=[WEATHER], stream=True))
    assert first.choices[0].finish_reason == "tool_calls"
    assert first.choices[0].message.content == "Checking."
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    # The signature rides in the id, which keeps to what every provider accepts.
    assert re.fullmatch(r"[A-Za-z0-9_-]+", call.id) and len(call.id) > len("call_")
    assert split_call_id(call.id)[1] == SIGNATURE
    assert second.choices[0].message.content == 'result: {"temp": 21}'
    sent = fake.requests[0][3]
    assert sent["tools"][0]["functionDeclarations"][0]["parametersJsonSchema"] == \
        WEATHER["function"]["parameters"]
    assert sent["toolConfig"] == {"functionCallingConfig": {
        "mode": "ANY", "allowedFunctionNames": ["get_weather"]}}
    reply = fake.requests[1][3]["contents"]
    assert [c["role"] for c in reply] == ["user", "model", "user"]
    assert reply[2]["parts"] == [{"functionResponse": {"name": "get_weather",
                                                       "response": {"temp": 21}}}]
    calls = [c.choices[0].delta.tool_calls for c in streamed
             if c.choices and c.choices[0].delta.tool_calls]
    assert len(calls) == 1 and calls[0][0].function.name == "get_weather"  # type: ignore[index]
    assert [c.choices[0].finish_reason for c in streamed if c.choices][-1] == "tool_calls"


def test_thinking_comes_back_as_reasoning(gateway: RunningServer, fake: FakeGemini) -> None:
    with _client(gateway) as client:
        answer = client.chat.completions.create(
            model="gemini-2.5-flash", messages=_user("think"), reasoning_effort="low",
            response_format={"type": "json_schema", "json_schema": {
                "name": "n", "schema": {"type": "object"}}})
    message = answer.choices[0].message
    assert message.content == "4"
    assert (message.model_extra or {})["reasoning_content"] == "Two and two make four."
    assert answer.usage is not None
    assert answer.usage.completion_tokens_details.reasoning_tokens == 5  # type: ignore[union-attr]
    assert answer.usage.completion_tokens == 8
    config = fake.requests[0][3]["generationConfig"]
    assert config["thinkingConfig"] == {"thinkingBudget": 1024, "includeThoughts": True}
    assert config["responseMimeType"] == "application/json"
    assert config["responseJsonSchema"] == {"type": "object"}


def test_safety_blocks_are_clear(gateway: RunningServer) -> None:
    with _client(gateway) as client:
        with pytest.raises(openai.BadRequestError) as blocked:
            client.chat.completions.create(model="gemini-2.5-flash", messages=_user("blocked"))
        with pytest.raises(openai.BadRequestError) as blocked_stream:
            list(client.chat.completions.create(model="gemini-2.5-flash",
                                                messages=_user("blocked"), stream=True))
        unsafe = client.chat.completions.create(model="gemini-2.5-flash",
                                                messages=_user("unsafe"))
    assert blocked.value.code == "content_filter"
    assert "blocked the prompt: SAFETY" in blocked.value.message
    assert blocked_stream.value.code == "content_filter"
    assert unsafe.choices[0].finish_reason == "content_filter"


def test_errors_are_mapped_to_status_and_kind(
    upstream: RunningServer, gateway_factory: Serve,
) -> None:
    config = _config(upstream)
    config["providers"].append({"name": "mock", "type": "mock", "models": ["mock-big"]})
    config["aliases"] = [{"name": "any", "targets": ["gemini/gemini-2.5-flash", "mock/mock-big"],
                          "fallback_on": ["context_window"]}]
    server = gateway_factory(config)
    with _client(server) as client:
        with pytest.raises(openai.APIStatusError) as failed:
            client.chat.completions.create(model="gemini-2.5-flash", messages=_user("500"))
        with pytest.raises(openai.BadRequestError) as too_long:
            client.chat.completions.create(model="gemini-2.5-flash", messages=_user("long"))
        fell_back = client.chat.completions.with_raw_response.create(
            model="any", messages=_user("long"))
        # Last: the provider's one key then rests for the 17 s Gemini asked.
        with pytest.raises(openai.RateLimitError) as limited:
            client.chat.completions.create(model="gemini-2.5-flash", messages=_user("429"))
    assert limited.value.response.headers["retry-after"] == "17"
    assert failed.value.status_code == 502
    assert too_long.value.code == "INVALID_ARGUMENT"
    assert fell_back.headers["x-sluiceway-provider"] == "mock"


def test_a_bad_key_is_the_gateways_auth_error(
    upstream: RunningServer, gateway_factory: Serve,
) -> None:
    server = gateway_factory(_config(upstream, api_key="wrong"))
    with _client(server) as client, pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model="gemini-2.5-flash", messages=_user("hi"))
    assert refused.value.status_code == 502
    assert refused.value.code == "upstream_auth_error"


def test_a_stream_that_fails_or_is_cut_ends_with_an_error_frame(gateway: RunningServer) -> None:
    with httpx.Client(base_url=gateway.base_url, timeout=30) as http:
        failed = http.post("/chat/completions", json={
            "model": "gemini-2.5-flash", "stream": True, "messages": _user("error-mid-stream")})
        cut = http.post("/chat/completions", json={
            "model": "gemini-2.5-flash", "stream": True, "messages": _user("no-finish")})
    assert failed.status_code == 200 and "overloaded" in failed.text
    assert '"code":"upstream_stream_error"' in failed.text.replace(" ", "")
    assert "upstream_stream_truncated" in cut.text
    assert "[DONE]" not in cut.text.split("upstream_stream_truncated")[0]


def test_anthropic_clients_reach_gemini_too(gateway: RunningServer) -> None:
    with anthropic.Anthropic(base_url=gateway.url, api_key="client", max_retries=0) as client:
        message = client.messages.create(model="gemini-2.5-flash", max_tokens=64,
                                         messages=[{"role": "user", "content": "hello"}])
        counted = client.messages.count_tokens(model="gemini-2.5-flash",
                                               messages=[{"role": "user", "content": "hello"}])
    assert message.content[0].text == "echo: hello"  # type: ignore[union-attr]
    assert counted.input_tokens == 42  # Gemini's own countTokens


def test_embeddings(gateway: RunningServer, fake: FakeGemini) -> None:
    with _client(gateway) as client:
        vectors = client.embeddings.create(model="embed", input=["a", "b"], dimensions=4,
                                           encoding_format="float")
        with pytest.raises(openai.BadRequestError) as ids:
            client.embeddings.create(model="embed", input=[[1, 2, 3]])
    assert [len(item.embedding) for item in vectors.data] == [4, 4]
    assert vectors.usage.prompt_tokens > 0
    path, _, _, body = fake.requests[0]
    assert path == "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    assert body["requests"][0] == {"model": "models/gemini-embedding-001",
                                   "content": {"parts": [{"text": "a"}]},
                                   "outputDimensionality": 4}
    assert ids.value.param == "input[0]"


def test_gemini_errors_reach_anthropic_clients_in_their_dialect(gateway: RunningServer) -> None:
    with anthropic.Anthropic(base_url=gateway.url, api_key="client", max_retries=0) as client:
        with pytest.raises(anthropic.BadRequestError) as blocked:
            client.messages.create(model="gemini-2.5-flash", max_tokens=64,
                                   messages=[{"role": "user", "content": "blocked"}])
        with pytest.raises(anthropic.RateLimitError) as limited:
            client.messages.create(model="gemini-2.5-flash", max_tokens=64,
                                   messages=[{"role": "user", "content": "429"}])
    assert blocked.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "SAFETY" in blocked.value.message
    assert limited.value.response.headers["retry-after"] == "17"


def test_calls_gemini_did_not_sign_go_with_the_documented_stand_in(
    gateway: RunningServer, fake: FakeGemini,
) -> None:
    """A conversation whose tool calls another model made (or a client wrote)."""
    with _client(gateway) as client:
        answer = client.chat.completions.create(model="gemini-2.5-flash", tools=[WEATHER],
                                                messages=[
            *_user("tools"),
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "toolu_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}},
                {"id": "toolu_2", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "toolu_2", "content": "rain"}])
        with pytest.raises(openai.BadRequestError) as several:
            client.chat.completions.create(model="gemini-2.5-flash", messages=_user("hi"), n=2)
    assert answer.choices[0].message.content == 'result: {"result": "sunny"}'
    model_turn = fake.requests[0][3]["contents"][1]["parts"]
    assert model_turn[0]["thoughtSignature"] == UNSIGNED
    assert "thoughtSignature" not in model_turn[1]
    assert several.value.param == "n"
