"""``HttpUpstream``: the plumbing every HTTP provider shares, driven through a small
provider for a made-up API, as a third-party author would write it, against a
real local upstream that speaks that API (and misbehaves on request)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import openai
import pytest

import sluiceway.api as sluiceway
from sluiceway.testing import RunningServer, read_body, wait_until
from sluiceway.testing.conformance import HttpProviderConformance

Factory = Callable[..., RunningServer]
USER = [{"role": "user", "content": "hello there"}]


# [docs:http_provider]
class TextGenOptions(sluiceway.HttpOptions, forbid_unknown_fields=True, kw_only=True):
    """A ``type = "textgen"`` table: the shared HTTP options, plus where the API is."""

    base_url: str


class TextGenProvider:
    """POST {base_url}/generate answers {"text", "tokens"}; with "stream": true, it
    sends events {"delta": ...} and then an event named "done" with the token count."""

    def __init__(self, ctx: sluiceway.ProviderContext) -> None:
        self.name = ctx.name
        self.url = ctx.options.base_url.rstrip("/") + "/generate"
        self.http = sluiceway.HttpUpstream(
            ctx, ctx.options, headers={"content-type": "application/json"},
            # Its errors are {"error": "text"}: the usual mapping reads them.
            credential=lambda secret: {"x-textgen-key": secret}, errors=sluiceway.status_error,
        )

    def body(self, request: sluiceway.ChatRequest, stream: bool) -> bytes:
        prompt = "\n".join(str(m.get("content")) for m in request.messages)
        return msgspec.json.encode({"prompt": prompt, "stream": stream})

    async def chat(self, request: sluiceway.ChatRequest) -> dict[str, Any]:
        model = request.upstream_model
        answer = await self.http.post_json(self.url, self.body(request, False), model)
        if not isinstance(answer, dict) or not isinstance(answer.get("text"), str):
            raise self.http.invalid("something that is not a TextGen answer")
        return sluiceway.completion_object(
            id=sluiceway.completion_id(), model=model,
            choices=[{"index": 0, "finish_reason": "stop",
                      "message": {"role": "assistant", "content": answer["text"]}}],
            usage=sluiceway.usage_object(
                sluiceway.estimate_input_tokens(request.body), answer["tokens"]),
        )

    async def stream(self, request: sluiceway.ChatRequest) -> AsyncIterator[dict[str, Any]]:
        model, chunk_id, created = request.upstream_model, sluiceway.completion_id(), 0
        async with self.http.stream(self.url, self.body(request, True), model) as batches:
            async for events in batches:  # one batch per network read
                for event in events:
                    data = msgspec.json.decode(event.data)
                    if event.event == "done":
                        yield sluiceway.chunk_object(
                            id=chunk_id, model=model, created=created,
                            choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}],
                        )
                        yield sluiceway.chunk_object(
                            id=chunk_id, model=model, created=created, choices=[],
                            usage=sluiceway.usage_object(
                                sluiceway.estimate_input_tokens(request.body), data["tokens"]),
                        )
                        return
                    yield sluiceway.chunk_object(
                        id=chunk_id, model=model, created=created,
                        choices=[{"index": 0, "delta": {"content": data["delta"]},
                                  "finish_reason": None}],
                    )
        raise self.http.invalid("a stream that ended before its done event")

    async def aclose(self) -> None:
        await self.http.aclose()
# [/docs:http_provider]


class TextGenPlugin:
    @sluiceway.hookimpl
    def register_provider_types(self, register: Callable[[sluiceway.ProviderType], None]) -> None:
        register(sluiceway.ProviderType(
            name="textgen", factory=TextGenProvider, config_model=TextGenOptions,
        ))


class TextGenUpstream:
    """The made-up API, served for real; ``mode`` picks how it misbehaves."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.keys: list[str | None] = []
        self.finished = 0
        self.disconnected = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        headers = dict(scope["headers"])
        self.keys.append(headers.get(b"x-textgen-key", b"").decode() or None)
        request = json.loads(body)
        if self.mode == "429":
            await self._answer(send, 429, b'{"error":"slow down"}', retry_after="7")
        elif self.mode == "html":
            await self._answer(send, 200, b"<html>proxy</html>", content_type=b"text/html")
        elif not request["stream"]:
            words = request["prompt"].split()
            await self._answer(send, 200, json.dumps({"text": " ".join(reversed(words)),
                                                     "tokens": len(words)}).encode())
        else:
            await self._stream(receive, send, request["prompt"].split())

    async def _answer(self, send: Any, status: int, body: bytes, *,
                      content_type: bytes = b"application/json", retry_after: str = "") -> None:
        headers = [(b"content-type", content_type)]
        if retry_after:
            headers.append((b"retry-after", retry_after.encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _stream(self, receive: Any, send: Any, words: list[str]) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        gone = asyncio.ensure_future(receive())  # only http.disconnect can come now
        try:
            for word in words:
                if gone.done():
                    self.disconnected += 1
                    return
                event = b"data: " + json.dumps({"delta": word + " "}).encode() + b"\n\n"
                await send({"type": "http.response.body", "body": event, "more_body": True})
                if self.mode == "slow":
                    await asyncio.sleep(0.05)
            done = b"event: done\ndata: " + json.dumps({"tokens": len(words)}).encode() + b"\n\n"
            await send({"type": "http.response.body", "body": done})
            self.finished += 1
        finally:
            gone.cancel()


@pytest.fixture
def textgen(serve_asgi: Factory, gateway_factory: Factory) -> tuple[TextGenUpstream, RunningServer]:
    upstream = TextGenUpstream()
    api = serve_asgi(upstream)
    gateway = gateway_factory(
        {"providers": [{
            "name": "tg", "type": "textgen", "base_url": api.url, "models": ["tg-1"],
            "api_keys": [{"name": "a", "key": "env:TEXTGEN_TEST_KEY"}],
        }]},
        plugins=[("textgen", TextGenPlugin())],
    )
    return upstream, gateway


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEXTGEN_TEST_KEY", "tg-secret-1")


def _client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(api_key="unused", base_url=server.base_url, max_retries=0)


def test_a_provider_on_http_upstream_answers_and_streams(
    textgen: tuple[TextGenUpstream, RunningServer],
) -> None:
    upstream, server = textgen
    with _client(server) as client:
        reply = client.chat.completions.create(model="tg-1", messages=USER)
        assert reply.choices[0].message.content == "there hello"
        assert reply.usage is not None and reply.usage.completion_tokens == 2
        stream = client.chat.completions.create(
            model="tg-1", messages=USER, stream=True, stream_options={"include_usage": True},
        )
        chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "hello there "
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2
    # The key went in the header the provider's credential() named.
    assert upstream.keys == ["tg-secret-1", "tg-secret-1"]


def test_http_upstream_maps_errors_and_rests_the_key(
    textgen: tuple[TextGenUpstream, RunningServer],
) -> None:
    upstream, server = textgen
    upstream.mode = "429"
    with _client(server) as client:
        with pytest.raises(openai.RateLimitError) as limited:
            client.chat.completions.create(model="tg-1", messages=USER)
        assert "slow down" in str(limited.value)
        upstream.mode = "ok"
        # The upstream's Retry-After rested the only key: the next call does not
        # reach the upstream, and the client is told how long to wait.
        with pytest.raises(openai.RateLimitError) as resting:
            client.chat.completions.create(model="tg-1", messages=USER)
    assert len(upstream.keys) == 1
    assert 1 <= float(resting.value.response.headers["retry-after"]) <= 7


def test_http_upstream_refuses_an_answer_that_is_not_an_event_stream(
    textgen: tuple[TextGenUpstream, RunningServer],
) -> None:
    upstream, server = textgen
    upstream.mode = "html"
    with _client(server) as client:
        with pytest.raises(openai.APIStatusError) as plain:
            client.chat.completions.create(model="tg-1", messages=USER)
        assert plain.value.status_code == 502
        assert plain.value.code == "upstream_invalid_response"
        with pytest.raises(openai.APIStatusError) as streamed:
            list(client.chat.completions.create(model="tg-1", messages=USER, stream=True))
        assert streamed.value.status_code == 502
        assert "'text/html' to a stream request, not an event stream" in str(streamed.value)


def test_http_upstream_closes_the_upstream_when_the_client_hangs_up(
    textgen: tuple[TextGenUpstream, RunningServer],
) -> None:
    upstream, server = textgen
    upstream.mode = "slow"
    words = " ".join(f"w{i}" for i in range(40))
    with _client(server) as client:
        stream = client.chat.completions.create(
            model="tg-1", messages=[{"role": "user", "content": words}], stream=True,
        )
        next(iter(stream))
        next(iter(stream))
        stream.close()
    assert wait_until(lambda: upstream.disconnected != 0, within=5)
    assert upstream.disconnected == 1
    assert upstream.finished == 0


def test_http_upstream_names_the_provider_when_the_upstream_is_gone(
    gateway_factory: Factory, unused_tcp_port: int,
) -> None:
    server = gateway_factory(
        {"providers": [{
            "name": "tg", "type": "textgen", "base_url": f"http://127.0.0.1:{unused_tcp_port}",
            "models": ["tg-1"], "api_key": "env:TEXTGEN_TEST_KEY",
        }]},
        plugins=[("textgen", TextGenPlugin())],
    )
    with _client(server) as client, pytest.raises(openai.APIStatusError) as gone:
        client.chat.completions.create(model="tg-1", messages=USER)
    assert gone.value.status_code == 502
    assert "Provider 'tg'" in str(gone.value)


class TestTextGenConformance(HttpProviderConformance):
    """The conformance suite, as a third-party author runs it on a provider that is
    not installed yet: the plugin object goes in ``plugin_objects``."""

    plugin_objects = (("textgen", TextGenPlugin()),)
    model = "tg-1"

    @pytest.fixture
    def upstream_url(self, serve_asgi: Factory) -> str:
        return serve_asgi(TextGenUpstream()).url

    def provider_table(self, url: str) -> dict[str, Any]:
        return {"type": "textgen", "base_url": url, "api_key": "tg-secret-1",
                "models": [self.model]}
