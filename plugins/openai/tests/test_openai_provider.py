"""The openai provider end to end: the real openai SDK -> a real gateway on
hypercorn -> a fake OpenAI-compatible upstream on its own loopback port.

The fake upstream picks its behaviour from the last user message, so each test
says what the upstream does in the request it sends.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from typing import Any

import openai
import pytest

from sluiceway.testing import RunningServer

Scope = dict[str, Any]

CHUNK_TEXTS = ["Hel", "lo", " there"]
USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


def _chunk(content: str | None, *, finish: str | None = None) -> dict[str, Any]:
    delta = {} if content is None else {"content": content}
    return {
        "id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1,
        "model": "real-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


class FakeOpenAI:
    """An OpenAI-compatible upstream as a raw ASGI app; records what it receives."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        data = json.loads(body)
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.requests.append({"path": scope["path"], "headers": headers, "body": data})
        scenario = data["messages"][-1]["content"]
        if scenario == "400":
            error = {"error": {"message": "You sent something odd.",
                               "type": "invalid_request_error", "code": "odd_request",
                               "param": "messages"}}
            await _respond(send, 400, json.dumps(error).encode())
        elif scenario == "400-text":
            await _respond(send, 400, b"<html>\n  Bad   request\n</html>", b"text/html")
        elif scenario == "429":
            error = {"error": {"message": "Slow down.", "type": "rate_limit_error",
                               "code": "rate_limit_exceeded", "param": None}}
            await _respond(send, 429, json.dumps(error).encode(),
                           extra=[(b"retry-after", b"3")])
        elif scenario == "500":
            await _respond(send, 500, b"<html>Internal meltdown</html>", b"text/html")
        elif data.get("stream"):
            await self._stream(send, scenario)
        else:
            completion = {
                "id": "chatcmpl-up", "object": "chat.completion", "created": 1,
                "model": data["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "Hello there"}}],
                "usage": USAGE,
            }
            await _respond(send, 200, json.dumps(completion).encode())

    async def _stream(self, send: Any, scenario: str) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})

        async def frame(payload: bytes) -> None:
            await send({"type": "http.response.body", "body": payload, "more_body": True})

        await frame(b": keep-alive comment\n\n")
        for index, text in enumerate(CHUNK_TEXTS):
            await frame(b"data: " + json.dumps(_chunk(text)).encode() + b"\n\n")
            if index == 0 and scenario == "error-mid-stream":
                error = {"error": {"message": "The model fell over.", "type": "server_error",
                                   "code": "model_crashed"}}
                await frame(b"data: " + json.dumps(error).encode() + b"\n\n")
                break
            if index == 0:
                # A frame split across two network writes must be reassembled.
                await frame(b": ping\n\n")
        else:
            await frame(b"data: " + json.dumps(_chunk(None, finish="stop")).encode() + b"\n\n")
            usage_chunk = {**_chunk(None), "choices": [], "usage": USAGE}
            await frame(b"data: " + json.dumps(usage_chunk).encode() + b"\n\n")
            if scenario != "no-done":
                await frame(b"data: [DONE]\n\n")
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _respond(
    send: Any, status: int, body: bytes, content_type: bytes = b"application/json",
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), *(extra or [])]})
    await send({"type": "http.response.body", "body": body})


def _config(base_url: str) -> dict[str, Any]:
    return {
        "gateway": {"plugins": ["openai"]},
        "providers": [{
            "name": "up", "type": "openai", "base_url": base_url,
            "api_key": "env:SLUICEWAY_TEST_UPSTREAM_KEY", "read_timeout": "10s",
            "models": [{"name": "gpt-x", "upstream": "real-model"}],
        }],
    }


@pytest.fixture
def upstream(serve_asgi: Callable[..., RunningServer]) -> tuple[FakeOpenAI, RunningServer]:
    fake = FakeOpenAI()
    return fake, serve_asgi(fake)


@pytest.fixture
def gateway(
    upstream: tuple[FakeOpenAI, RunningServer],
    gateway_factory: Callable[..., RunningServer],
    monkeypatch: pytest.MonkeyPatch,
) -> RunningServer:
    monkeypatch.setenv("SLUICEWAY_TEST_UPSTREAM_KEY", "sk-upstream-secret")
    return gateway_factory(_config(upstream[1].url + "/v1"))


def _client(server: RunningServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.base_url, api_key="client-key", max_retries=0)


def _messages(content: str) -> list[Any]:
    return [{"role": "user", "content": content}]


async def test_chat_rewrites_model_and_authenticates_upstream(
    gateway: RunningServer, upstream: tuple[FakeOpenAI, RunningServer]
) -> None:
    async with _client(gateway) as client:
        result = await client.chat.completions.create(
            model="gpt-x", messages=_messages("hi"), temperature=0.5, extra_body={"seed_x": 1},
        )
    assert result.choices[0].message.content == "Hello there"
    assert result.usage is not None and result.usage.total_tokens == 10
    (seen,) = upstream[0].requests
    assert seen["path"] == "/v1/chat/completions"
    assert seen["headers"]["authorization"] == "Bearer sk-upstream-secret"
    # Only the model changes; fields the core does not know pass through.
    assert seen["body"] == {"model": "real-model", "messages": _messages("hi"),
                            "temperature": 0.5, "seed_x": 1}


async def test_stream_without_include_usage_drops_the_usage_chunk(
    gateway: RunningServer, upstream: tuple[FakeOpenAI, RunningServer]
) -> None:
    async with _client(gateway) as client:
        stream = await client.chat.completions.create(
            model="gpt-x", messages=_messages("hi"), stream=True,
        )
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(CHUNK_TEXTS)
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"
    (seen,) = upstream[0].requests
    assert seen["body"]["model"] == "real-model"
    assert seen["body"]["stream_options"] == {"include_usage": True}


async def test_stream_with_include_usage_ends_with_usage(
    gateway: RunningServer, upstream: tuple[FakeOpenAI, RunningServer]
) -> None:
    async with _client(gateway) as client:
        stream = await client.chat.completions.create(
            model="gpt-x", messages=_messages("hi"), stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 10
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(CHUNK_TEXTS)
    assert upstream[0].requests[0]["body"]["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("stream", [False, True])
async def test_upstream_400_is_passed_through(gateway: RunningServer, stream: bool) -> None:
    async with _client(gateway) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(
                model="gpt-x", messages=_messages("400"), stream=stream,
            )
    error = caught.value
    assert error.status_code == 400
    assert error.body == {"message": "You sent something odd.", "type": "invalid_request_error",
                          "code": "odd_request", "param": "messages"}


async def test_upstream_400_without_json_is_normalised(gateway: RunningServer) -> None:
    async with _client(gateway) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model="gpt-x", messages=_messages("400-text"))
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["message"] == "The upstream answered HTTP 400: <html> Bad request </html>"
    assert body["type"] == "invalid_request_error"


async def test_upstream_429_keeps_retry_after(gateway: RunningServer) -> None:
    async with _client(gateway) as client:
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(model="gpt-x", messages=_messages("429"))
    assert caught.value.response.headers["retry-after"] == "3"
    assert caught.value.code == "rate_limit_exceeded"


@pytest.mark.parametrize("stream", [False, True])
async def test_upstream_500_becomes_502(gateway: RunningServer, stream: bool) -> None:
    async with _client(gateway) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(
                model="gpt-x", messages=_messages("500"), stream=stream,
            )
    assert caught.value.status_code == 502
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["type"] == "upstream_error"
    assert body["message"] == "Provider 'up' failed with HTTP 500: <html>Internal meltdown</html>"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize("stream", [False, True])
async def test_connection_refused_becomes_502(
    gateway_factory: Callable[..., RunningServer], monkeypatch: pytest.MonkeyPatch, stream: bool,
) -> None:
    monkeypatch.setenv("SLUICEWAY_TEST_UPSTREAM_KEY", "sk-upstream-secret")
    gateway = gateway_factory(_config(f"http://127.0.0.1:{_closed_port()}/v1"))
    async with _client(gateway) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(
                model="gpt-x", messages=_messages("hi"), stream=stream,
            )
    assert caught.value.status_code == 502
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["code"] == "upstream_connect_error"
    assert body["message"].startswith("Provider 'up': Could not connect to the upstream")


async def test_stream_without_done_is_an_error_not_a_silent_end(gateway: RunningServer) -> None:
    received: list[str] = []
    async with _client(gateway) as client:
        stream = await client.chat.completions.create(
            model="gpt-x", messages=_messages("no-done"), stream=True,
        )
        with pytest.raises(openai.APIError) as caught:
            async for chunk in stream:
                if chunk.choices:
                    received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == "".join(CHUNK_TEXTS)
    assert caught.value.code == "upstream_stream_truncated"
    assert "without [DONE]" in caught.value.message


async def test_error_frame_mid_stream_raises_api_error(gateway: RunningServer) -> None:
    received: list[str] = []
    async with _client(gateway) as client:
        stream = await client.chat.completions.create(
            model="gpt-x", messages=_messages("error-mid-stream"), stream=True,
        )
        with pytest.raises(openai.APIError) as caught:
            async for chunk in stream:
                received.append(chunk.choices[0].delta.content or "")
    assert received == [CHUNK_TEXTS[0]]
    assert caught.value.code == "model_crashed"
    assert "The model fell over." in caught.value.message


def test_options_are_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    from sluiceway import ConfigError, create_app

    config = _config("http://127.0.0.1:9/v1")
    config["providers"][0]["backend"] = "requests"
    monkeypatch.setenv("SLUICEWAY_TEST_UPSTREAM_KEY", "x")
    with pytest.raises(ConfigError, match=r"providers\[0\]\.backend"):
        create_app(config)


async def test_httpx2_backend_serves_chat_and_stream(
    upstream: tuple[FakeOpenAI, RunningServer],
    gateway_factory: Callable[..., RunningServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLUICEWAY_TEST_UPSTREAM_KEY", "sk-upstream-secret")
    config = _config(upstream[1].url + "/v1")
    config["providers"][0]["backend"] = "httpx2"
    gateway = gateway_factory(config)
    async with _client(gateway) as client:
        result = await client.chat.completions.create(model="gpt-x", messages=_messages("hi"))
        stream = await client.chat.completions.create(
            model="gpt-x", messages=_messages("hi"), stream=True,
        )
        chunks = [chunk async for chunk in stream]
    assert result.choices[0].message.content == "Hello there"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "".join(CHUNK_TEXTS)
