"""The openai provider, end to end and up close.

End to end: the real openai SDK -> a real gateway on hypercorn -> FakeOpenAI (a
raw asyncio upstream on its own loopback port, with scripted faults). Up close:
the provider object called directly against the same fake, for what only the
provider can show (which key was picked and rested, each error's ``kind``).
"""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import openai
import pytest
from sluiceway_openai import (
    KeyOptions,
    OpenAIOptions,
    OpenAIProvider,
    UpstreamAuthError,
    UpstreamHTTPError,
    UpstreamStatusError,
)

from sluiceway import (
    ChatRequest,
    ConfigError,
    Duration,
    GatewayError,
    ModelEntry,
    ProviderContext,
    RateLimited,
    Secret,
    UpstreamError,
    UpstreamTimeout,
    create_app,
)
from sluiceway.testing import RunningServer
from sluiceway.testing.fakes import (
    ChunkDelay,
    Close,
    Comments,
    ErrorEvent,
    FakeOpenAI,
    Hang,
    NoDone,
    Reset,
    Stall,
    Status,
)

StartFake = Callable[..., FakeOpenAI]
StartGateway = Callable[..., RunningServer]

UPSTREAM_KEY = "sk-upstream-secret"


def _config(base_url: str, **options: Any) -> dict[str, Any]:
    provider = {
        "name": "up", "type": "openai", "base_url": base_url,
        "api_key": "env:SLUICEWAY_TEST_UPSTREAM_KEY", "read_timeout": "10s",
        # The core's retry loop is tested in the core; here one answer is one attempt.
        "max_retries": 0,
        "models": [{"name": "gpt-x", "upstream": "real-model"}],
        **options,
    }
    return {"gateway": {"plugins": ["openai"]}, "providers": [provider]}


@pytest.fixture(autouse=True)
def _upstream_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICEWAY_TEST_UPSTREAM_KEY", UPSTREAM_KEY)
    monkeypatch.setenv("SLUICEWAY_TEST_KEY_A", "sk-a")
    monkeypatch.setenv("SLUICEWAY_TEST_KEY_B", "sk-b")


@pytest.fixture
def fake(fake_openai: StartFake) -> FakeOpenAI:
    return fake_openai(chunks=3)


@pytest.fixture
def gateway(fake: FakeOpenAI, gateway_factory: StartGateway) -> RunningServer:
    return gateway_factory(_config(fake.url))


def _client(server: RunningServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.base_url, api_key="client-key", max_retries=0)


def _messages(content: str = "hi") -> list[Any]:
    return [{"role": "user", "content": content}]


# -- the provider up close ------------------------------------------------------

MakeProvider = Callable[..., OpenAIProvider]


@pytest.fixture
async def make_provider(fake: FakeOpenAI) -> AsyncIterator[MakeProvider]:
    """Build providers against the fake (``api_keys`` as ``(name, secret, weight)``)."""
    made: list[OpenAIProvider] = []

    def build(
        *, keys: list[tuple[str, str, float]] | None = None, base_url: str | None = None,
        models: tuple[str, ...] = ("real-model",), **options: Any,
    ) -> OpenAIProvider:
        if keys is not None:
            options["api_keys"] = [KeyOptions(key=Secret(secret), weight=weight, name=name)
                                   for name, secret, weight in keys]
        else:
            options.setdefault("api_key", Secret(UPSTREAM_KEY))
        context = ProviderContext(
            name="up", models=[ModelEntry(name=m) for m in models],
            options=OpenAIOptions(base_url=base_url or fake.url, **options),
            gateway=cast(Any, None),  # the provider uses only http_client()
        )
        provider = OpenAIProvider(context)
        made.append(provider)
        return provider

    yield build
    for provider in made:
        await provider.aclose()


def _request(*, stream: bool = False, model: str = "real-model") -> ChatRequest:
    messages = _messages()
    body = {"model": "gpt-x", "messages": messages, "stream": stream}
    return ChatRequest(body, model="gpt-x", messages=messages, stream=stream,
                       upstream_model=model)


async def _failure(provider: OpenAIProvider, *, stream: bool = False) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        if stream:
            async for _ in provider.stream(_request(stream=True)):
                pass
        else:
            await provider.chat(_request())
    return caught.value


def _key_of(request_headers: dict[str, str]) -> str:
    return request_headers["authorization"].removeprefix("Bearer ")


async def test_keys_are_spread_by_weight(fake: FakeOpenAI, make_provider: MakeProvider) -> None:
    provider = make_provider(keys=[("a", "sk-a", 1), ("b", "sk-b", 3)])
    for _ in range(20):
        await asyncio.gather(*(provider.chat(_request()) for _ in range(50)))
    counts = Counter(_key_of(seen.headers) for seen in fake.requests)
    assert sum(counts.values()) == 1000
    # Expected 25 % / 75 %; ±6 points is over 4 standard deviations at n = 1000.
    assert abs(counts["sk-a"] / 1000 - 0.25) <= 0.06, counts


async def test_a_refused_key_rests_and_the_error_offers_an_alternate(
    fake: FakeOpenAI, make_provider: MakeProvider
) -> None:
    provider = make_provider(keys=[("a", "sk-a", 1), ("b", "sk-b", 1)], key_cooldown=Duration(60))
    fake.script(Status(401, body={"error": {"message": "Incorrect API key provided: sk-a***",
                                            "type": "invalid_request_error",
                                            "code": "invalid_api_key"}}))
    error = await _failure(provider)
    assert isinstance(error, UpstreamAuthError)
    assert (error.kind, error.status, error.code) == ("auth", 502, "upstream_auth_error")
    assert error.alternate is True
    assert "sk-a" not in error.message  # the upstream's message may quote the key
    assert provider.keys is not None
    refused = _key_of(fake.requests[-1].headers)
    (refused_key,) = [k for k in provider.keys.keys if k.secret == refused]
    assert 59 < provider.keys.resting_for(refused_key) <= 60
    for _ in range(10):
        await provider.chat(_request())
    assert {_key_of(r.headers) for r in fake.requests[1:]} == {"sk-a", "sk-b"} - {refused}


async def test_the_last_key_is_refused_without_resting(
    fake: FakeOpenAI, make_provider: MakeProvider
) -> None:
    provider = make_provider()
    fake.script(Status(403))
    error = await _failure(provider, stream=True)
    assert isinstance(error, UpstreamAuthError) and error.alternate is False
    assert error.status == 502 and error.kind == "auth"
    assert provider.keys is not None and provider.keys.resting_for(provider.keys.keys[0]) == 0
    await provider.chat(_request())  # still used: its refusal stays visible as such


async def test_a_rate_limited_key_rests_for_its_retry_after(
    fake: FakeOpenAI, make_provider: MakeProvider
) -> None:
    provider = make_provider(keys=[("a", "sk-a", 1), ("b", "sk-b", 1)], key_cooldown=Duration(7))
    fake.script(Status(429, headers={"retry-after-ms": "20000", "retry-after": "5"}),
                Status(429, headers={"retry-after": "9999"}), Status(429))
    first = await _failure(provider)
    assert isinstance(first, RateLimited)
    assert (first.kind, first.alternate, first.retry_after) == ("rate_limit", True, 20.0)
    assert provider.keys is not None
    rested = next(k for k in provider.keys.keys if provider.keys.resting_for(k) > 0)
    assert 19 < provider.keys.resting_for(rested) <= 20
    # The other key: its long Retry-After is kept for resting but capped on the error.
    second = await _failure(provider)
    assert isinstance(second, RateLimited) and second.alternate is False
    assert second.retry_after == 120
    other = next(k for k in provider.keys.keys if k is not rested)
    assert provider.keys.resting_for(other) > 9000
    # Both resting: the provider refuses at once, without asking the upstream.
    asked = len(fake.requests)
    resting = await _failure(provider)
    assert isinstance(resting, RateLimited) and resting.code == "upstream_keys_resting"
    assert resting.retry_after is not None and 19 < resting.retry_after <= 20
    assert len(fake.requests) == asked


async def test_a_rate_limit_without_retry_after_rests_for_the_cooldown(
    fake: FakeOpenAI, make_provider: MakeProvider
) -> None:
    provider = make_provider(key_cooldown=Duration(7))
    fake.script(Status(429))
    error = await _failure(provider)
    assert isinstance(error, RateLimited) and error.retry_after is None
    assert provider.keys is not None
    assert 6 < provider.keys.resting_for(provider.keys.keys[0]) <= 7


@pytest.mark.parametrize("error_body", [
    {"error": {"message": "Too long.", "type": "invalid_request_error",
               "code": "context_length_exceeded", "param": "messages"}},
    {"error": {"message": "This model's maximum context length is 8192 tokens.",
               "type": "invalid_request_error", "code": None}},
    {"error": {"message": "Too many tokens in the prompt", "type": "invalid_request_error"}},
])
async def test_context_length_errors_are_context_window(
    fake: FakeOpenAI, make_provider: MakeProvider, error_body: dict[str, Any]
) -> None:
    provider = make_provider()
    fake.script(Status(400, body=error_body))
    error = await _failure(provider)
    assert isinstance(error, UpstreamStatusError)
    assert (error.kind, error.status) == ("context_window", 400)


@pytest.mark.parametrize(("status", "kind", "cls"), [
    (400, "client", UpstreamStatusError), (404, "client", UpstreamStatusError),
    (422, "client", UpstreamStatusError), (500, "server", UpstreamHTTPError),
    (503, "server", UpstreamHTTPError), (529, "server", UpstreamHTTPError),
])
async def test_statuses_are_classified(
    fake: FakeOpenAI, make_provider: MakeProvider, status: int, kind: str, cls: type
) -> None:
    provider = make_provider()
    fake.script(Status(status))
    error = await _failure(provider)
    assert isinstance(error, cls) and error.kind == kind
    assert error.status == (status if status < 500 else 502)
    if isinstance(error, UpstreamHTTPError):
        assert error.upstream_status == status


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize("backend", ["aiohttp", "httpx2"])
async def test_connect_failures_and_timeouts_keep_their_kind(
    fake: FakeOpenAI, make_provider: MakeProvider, backend: str
) -> None:
    refused = make_provider(base_url=f"http://127.0.0.1:{_closed_port()}/v1", backend=backend)
    error = await _failure(refused)
    assert isinstance(error, UpstreamError) and error.kind == "connect"
    assert error.code == "upstream_connect_error"
    slow = make_provider(read_timeout=Duration(0.2), backend=backend)
    fake.script(Hang())
    error = await _failure(slow)
    assert isinstance(error, UpstreamTimeout) and error.kind == "timeout"


@pytest.mark.parametrize("backend", ["aiohttp", "httpx2"])
async def test_a_stall_mid_stream_is_an_upstream_timeout(
    fake: FakeOpenAI, make_provider: MakeProvider, backend: str
) -> None:
    provider = make_provider(read_timeout=Duration(0.3), backend=backend)
    fake.script(Stall(after_chunks=2, seconds=30))
    received: list[bytes | dict[str, Any]] = []
    with pytest.raises(UpstreamTimeout) as caught:  # the stall is 30 s: only the read timeout
        async for chunk in provider.stream(_request(stream=True)):
            received.append(chunk)
    assert len(received) == 2
    assert caught.value.kind == "timeout" and caught.value.message.startswith("Provider 'up'")
    assert await fake.wait_for(lambda: fake.disconnects == 1)  # the upstream was let go


async def test_pool_timeout_bounds_the_wait_for_a_connection(
    fake: FakeOpenAI, make_provider: MakeProvider
) -> None:
    provider = make_provider(max_connections=1, pool_timeout=Duration(0.2),
                             connect_timeout=Duration(0.1))
    fake.script(Hang())
    hung = asyncio.create_task(provider.chat(_request()))
    assert await fake.wait_for(lambda: fake.active == 1)
    error = await _failure(provider)  # the only connection hangs for ever: pool_timeout ends it
    assert isinstance(error, UpstreamTimeout) and error.kind == "connect"
    hung.cancel()
    with pytest.raises(asyncio.CancelledError):
        await hung


async def test_a_mid_stream_error_event_is_classified(
    fake: FakeOpenAI, make_provider: MakeProvider
) -> None:
    provider = make_provider()
    fake.script(ErrorEvent(after_chunks=0, message="maximum context length exceeded",
                           code=None), ErrorEvent(after_chunks=1, code="overloaded"))
    first = await _failure(provider, stream=True)
    assert first.kind == "context_window"
    second = await _failure(provider, stream=True)
    assert (second.kind, second.code) == ("server", "overloaded")


# -- options --------------------------------------------------------------------


def test_options_are_validated() -> None:
    config = _config("http://127.0.0.1:9/v1", backend="requests")
    with pytest.raises(ConfigError, match=r"providers\[0\]\.backend"):
        create_app(config)


def test_api_key_and_api_keys_are_exclusive() -> None:
    config = _config("http://127.0.0.1:9/v1", api_keys=[{"key": "env:SLUICEWAY_TEST_KEY_A"}])
    with pytest.raises(ConfigError, match="mutually exclusive"):
        create_app(config)


@pytest.mark.parametrize(("keys", "match"), [
    ([{"key": "env:SLUICEWAY_TEST_KEY_A", "weight": 0}], r"api_keys\[0\]\.weight"),
    ([{"key": "env:SLUICEWAY_TEST_KEY_A", "name": "key-2"}, {"key": "env:SLUICEWAY_TEST_KEY_B"}],
     "two api_keys are named 'key-2'"),
    ([{"key": "env:SLUICEWAY_TEST_NOT_SET"}], r"api_keys\[0\]\.key: environment variable"),
    ([{"key": "env:SLUICEWAY_TEST_KEY_A", "unknown": 1}], r"api_keys\[0\]\.unknown"),
])
def test_api_keys_are_validated(keys: list[dict[str, Any]], match: str) -> None:
    config = _config("http://127.0.0.1:9/v1", api_keys=keys)
    del config["providers"][0]["api_key"]
    with pytest.raises(ConfigError, match=match):
        create_app(config)


def test_a_model_no_key_may_serve_is_a_startup_error() -> None:
    options = OpenAIOptions(base_url="http://127.0.0.1:9/v1", api_keys=[
        KeyOptions(key=Secret("sk-a"), models=["gpt-4o*"])])
    context = ProviderContext(name="up", models=[ModelEntry(name="x", upstream="real-model")],
                              options=options, gateway=cast(Any, None))
    with pytest.raises(ConfigError, match="'real-model'"):
        OpenAIProvider(context)


# -- end to end through the gateway ------------------------------------------


async def test_chat_rewrites_model_and_authenticates_upstream(
    gateway: RunningServer, fake: FakeOpenAI
) -> None:
    async with _client(gateway) as client:
        result = await client.chat.completions.create(
            model="gpt-x", messages=_messages("hi"), temperature=0.5, extra_body={"seed_x": 1},
        )
    assert result.choices[0].message.content == "echo: hi"
    assert result.usage is not None and result.usage.total_tokens == 4
    (seen,) = fake.requests
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    # Only the model changes; fields the core does not know pass through.
    assert seen.body == {"model": "real-model", "messages": _messages("hi"),
                         "temperature": 0.5, "seed_x": 1}


async def test_stream_without_include_usage_drops_the_usage_chunk(
    gateway: RunningServer, fake: FakeOpenAI
) -> None:
    fake.script(Comments())  # keep-alive comments are skipped
    async with _client(gateway) as client:
        stream = await client.chat.completions.create(
            model="gpt-x", messages=_messages("hi"), stream=True,
        )
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: hi"
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"
    (seen,) = fake.requests
    assert seen.body["model"] == "real-model"
    assert seen.body["stream_options"] == {"include_usage": True}


async def test_stream_with_include_usage_ends_with_usage(
    gateway: RunningServer, fake: FakeOpenAI
) -> None:
    async with _client(gateway) as client:
        stream = await client.chat.completions.create(
            model="gpt-x", messages=_messages("hi"), stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 4
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: hi"


@pytest.mark.parametrize("stream", [False, True])
async def test_upstream_400_is_passed_through(
    gateway: RunningServer, fake: FakeOpenAI, stream: bool
) -> None:
    inner = {"message": "You sent something odd.", "type": "invalid_request_error",
             "code": "odd_request", "param": "messages"}
    fake.script(Status(400, body={"error": inner}))
    async with _client(gateway) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(
                model="gpt-x", messages=_messages(), stream=stream,
            )
    assert caught.value.status_code == 400
    assert caught.value.body == inner


async def test_upstream_400_without_json_is_normalised(
    gateway: RunningServer, fake: FakeOpenAI
) -> None:
    fake.script(Status(400, body=b"<html>\n  Bad   request\n</html>"))
    async with _client(gateway) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model="gpt-x", messages=_messages())
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["message"] == "The upstream answered HTTP 400: <html> Bad request </html>"
    assert body["type"] == "invalid_request_error"


async def test_context_length_reaches_the_client_as_a_400(
    gateway: RunningServer, fake: FakeOpenAI
) -> None:
    fake.script(Status(400, body={"error": {"message": "Too long.", "code":
                                            "context_length_exceeded"}}))
    async with _client(gateway) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model="gpt-x", messages=_messages())
    assert caught.value.code == "context_length_exceeded"


async def test_upstream_429_keeps_retry_after(gateway: RunningServer, fake: FakeOpenAI) -> None:
    fake.script(Status(429, headers={"retry-after": "3"},
                       body={"error": {"message": "Slow down.", "type": "rate_limit_error",
                                       "code": "rate_limit_exceeded"}}))
    async with _client(gateway) as client:
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(model="gpt-x", messages=_messages())
    assert caught.value.response.headers["retry-after"] == "3"
    assert caught.value.code == "rate_limit_exceeded"


@pytest.mark.parametrize("stream", [False, True])
async def test_upstream_500_becomes_502(
    gateway: RunningServer, fake: FakeOpenAI, stream: bool
) -> None:
    fake.script(Status(500, body=b"<html>Internal meltdown</html>"))
    async with _client(gateway) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(
                model="gpt-x", messages=_messages(), stream=stream,
            )
    assert caught.value.status_code == 502
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["type"] == "upstream_error"
    assert body["message"] == "Provider 'up' failed with HTTP 500: <html>Internal meltdown</html>"


@pytest.mark.parametrize("stream", [False, True])
async def test_connection_refused_becomes_502(
    gateway_factory: StartGateway, stream: bool,
) -> None:
    gateway = gateway_factory(_config(f"http://127.0.0.1:{_closed_port()}/v1"))
    async with _client(gateway) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(
                model="gpt-x", messages=_messages(), stream=stream,
            )
    assert caught.value.status_code == 502
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["code"] == "upstream_connect_error"
    assert body["message"].startswith("Provider 'up': Could not connect to the upstream")


async def test_a_refused_key_is_replaced_by_another_at_once(
    fake: FakeOpenAI, gateway_factory: StartGateway
) -> None:
    config = _config(fake.url, api_keys=[{"key": "env:SLUICEWAY_TEST_KEY_A", "name": "a"},
                                         {"key": "env:SLUICEWAY_TEST_KEY_B", "name": "b"}])
    del config["providers"][0]["api_key"]
    gateway = gateway_factory(config)
    fake.script(Status(401))
    async with _client(gateway) as client:
        response = await client.chat.completions.with_raw_response.create(
            model="gpt-x", messages=_messages())
    assert response.parse().choices[0].message.content == "echo: hi"
    assert response.headers["x-sluiceway-attempts"] == "2"
    first, second = (_key_of(r.headers) for r in fake.requests)
    assert {first, second} == {"sk-a", "sk-b"}


async def _read_until_error(stream: Any, received: list[str]) -> openai.APIError:
    with pytest.raises(openai.APIError) as caught:
        async for chunk in stream:
            if chunk.choices:
                received.append(chunk.choices[0].delta.content or "")
    return caught.value


async def test_stream_without_done_is_an_error_not_a_silent_end(
    gateway: RunningServer, fake: FakeOpenAI
) -> None:
    fake.script(NoDone())
    received: list[str] = []
    async with _client(gateway) as client:
        stream = await client.chat.completions.create(
            model="gpt-x", messages=_messages(), stream=True,
        )
        error = await _read_until_error(stream, received)
    assert "".join(received) == "echo: hi"
    assert error.code == "upstream_stream_truncated"
    assert "without [DONE]" in error.message


async def test_error_frame_mid_stream_raises_api_error(
    gateway: RunningServer, fake: FakeOpenAI
) -> None:
    fake.script(ErrorEvent(after_chunks=1, message="The model fell over.", code="model_crashed"))
    received: list[str] = []
    async with _client(gateway) as client:
        stream = await client.chat.completions.create(
            model="gpt-x", messages=_messages(), stream=True,
        )
        error = await _read_until_error(stream, received)
    assert len(received) == 1
    assert error.code == "model_crashed"
    assert "The model fell over." in error.message


async def test_a_stall_mid_stream_ends_in_a_timeout_frame(
    fake: FakeOpenAI, gateway_factory: StartGateway
) -> None:
    gateway = gateway_factory(_config(fake.url, read_timeout="300ms"))
    fake.script(Stall(after_chunks=2, seconds=30))
    received: list[str] = []
    async with _client(gateway) as client:
        stream = await client.chat.completions.create(
            model="gpt-x", messages=_messages(), stream=True,
        )
        error = await _read_until_error(stream, received)
    assert len(received) == 2
    assert error.code == "upstream_timeout"
    assert await fake.wait_for(lambda: fake.disconnects == 1)


@pytest.mark.parametrize("fault", [Reset(after_chunks=2), Close(after_chunks=2)])
async def test_a_broken_connection_mid_stream_ends_in_an_error_frame(
    gateway: RunningServer, fake: FakeOpenAI, fault: Reset | Close
) -> None:
    fake.script(fault)
    received: list[str] = []
    async with _client(gateway) as client:
        stream = await client.chat.completions.create(
            model="gpt-x", messages=_messages(), stream=True,
        )
        error = await _read_until_error(stream, received)
    assert len(received) == 2
    assert error.code == "upstream_read_error"


async def test_a_client_leaving_mid_stream_lets_the_upstream_go(
    fake_openai: StartFake, gateway_factory: StartGateway
) -> None:
    fake = fake_openai(chunks=50)
    gateway = gateway_factory(_config(fake.url))
    fake.script(ChunkDelay(0.1))
    async with _client(gateway) as client:
        stream = await client.chat.completions.create(
            model="gpt-x", messages=_messages(), stream=True,
        )
        async for _ in stream:
            break
        assert fake.active == 1
        await stream.close()
        # 50 chunks 0.1 s apart would take 5 s on their own: seeing the hang-up
        # before that means it was passed upstream.
        assert await fake.wait_for(lambda: fake.disconnects == 1, within=4.0)
    assert fake.active == 0


async def test_httpx2_backend_serves_chat_and_stream(
    fake: FakeOpenAI, gateway_factory: StartGateway
) -> None:
    gateway = gateway_factory(_config(fake.url, backend="httpx2"))
    async with _client(gateway) as client:
        result = await client.chat.completions.create(model="gpt-x", messages=_messages())
        stream = await client.chat.completions.create(
            model="gpt-x", messages=_messages(), stream=True,
        )
        chunks = [chunk async for chunk in stream]
    assert result.choices[0].message.content == "echo: hi"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "echo: hi"
