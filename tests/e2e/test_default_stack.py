"""The repository's default stack (plugins.toml: the mock provider) driven by the real
OpenAI SDK, sync and async, over a real hypercorn server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from sluiceway.testing import RunningServer

DEFAULT_CONFIG = Path(__file__).parent.parent.parent / "plugins.toml"
MESSAGES: list[Any] = [{"role": "user", "content": "Say hello to the gateway."}]

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}

PERSON_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
    },
    "required": ["name", "age", "tags"],
    "additionalProperties": False,
}


@pytest.fixture
def server(gateway_factory: Callable[..., RunningServer]) -> RunningServer:
    return gateway_factory(DEFAULT_CONFIG)


@pytest.fixture
def client(server: RunningServer) -> Iterator[openai.OpenAI]:
    # Closed at the end: an unclosed pool leaves sockets for a later test's GC.
    with openai.OpenAI(api_key="sk-anything", base_url=server.base_url, max_retries=0) as made:
        yield made


def test_the_request_from_the_readme_works(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="mock-gpt", messages=MESSAGES)
    assert reply.object == "chat.completion"
    assert reply.model == "mock-gpt"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_models_list_has_every_configured_model(client: openai.OpenAI) -> None:
    models = client.models.list()
    assert [m.id for m in models] == ["mock-gpt", "mock-gpt-mini", "mock-reasoner", "mock-embed"]
    assert {m.owned_by for m in models} == {"mock"}
    assert client.models.retrieve("mock-gpt-mini").id == "mock-gpt-mini"
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("no-such-model")
    assert info.value.code == "model_not_found"


def test_the_listed_embedding_model_embeds(client: openai.OpenAI) -> None:
    vectors = client.embeddings.create(model="mock-embed", input=["one", "two"])
    assert [len(item.embedding) for item in vectors.data] == [1536, 1536]
    assert vectors.data[0].embedding != vectors.data[1].embedding


def test_streamed_chunks_reassemble_to_the_plain_answer(client: openai.OpenAI) -> None:
    plain = client.chat.completions.create(model="mock-gpt", messages=MESSAGES, seed=7)
    chunks = list(
        client.chat.completions.create(
            model="mock-gpt",
            messages=MESSAGES,
            seed=7,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == plain.choices[0].message.content
    assert {c.id for c in chunks} == {chunks[0].id}
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finish == ["stop"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage == plain.usage


def test_usage_chunk_only_when_asked(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="mock-gpt", messages=MESSAGES, stream=True))
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


def test_raw_stream_ends_with_done(server: RunningServer) -> None:
    with httpx.stream(
        "POST",
        server.base_url + "/chat/completions",
        json={
            "model": "mock-gpt",
            "messages": MESSAGES,
            "stream": True,
        },
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines)
    for line in lines[:-1]:
        assert json.loads(line[6:])["object"] == "chat.completion.chunk"


def test_tools_round_trip(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="mock-gpt",
        messages=[{"role": "user", "content": "What is the weather in Oslo?"}],
        tools=[WEATHER_TOOL],
        tool_choice="required",  # type: ignore[list-item]
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    arguments = json.loads(call.function.arguments)  # type: ignore[union-attr]
    jsonschema.validate(arguments, WEATHER_TOOL["function"]["parameters"])  # type: ignore[index]

    streamed = list(
        client.chat.completions.create(
            model="mock-gpt",
            messages=[{"role": "user", "content": "What is the weather in Oslo?"}],
            tools=[WEATHER_TOOL],
            tool_choice="required",
            stream=True,  # type: ignore[list-item]
        )
    )
    deltas = [tc for c in streamed for tc in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].id and deltas[0].function and deltas[0].function.name == "get_weather"
    assert all(d.id is None for d in deltas[1:])
    joined = "".join(d.function.arguments or "" for d in deltas if d.function)
    jsonschema.validate(json.loads(joined), WEATHER_TOOL["function"]["parameters"])  # type: ignore[index]


def test_json_schema_output_validates(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="mock-gpt",
        messages=[{"role": "user", "content": "Describe a person."}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": PERSON_SCHEMA},
        },
    )
    jsonschema.validate(json.loads(reply.choices[0].message.content or ""), PERSON_SCHEMA)


async def test_async_client_plain_and_streamed(server: RunningServer) -> None:
    client = openai.AsyncOpenAI(api_key="sk-anything", base_url=server.base_url, max_retries=0)
    reply = await client.chat.completions.create(model="mock-gpt-mini", messages=MESSAGES)
    assert reply.choices[0].message.content
    stream = await client.chat.completions.create(
        model="mock-gpt-mini", messages=MESSAGES, stream=True
    )
    parts = [c.choices[0].delta.content or "" async for c in stream]
    assert "".join(parts) == reply.choices[0].message.content
    await client.close()


async def test_200_concurrent_streams_keep_their_own_content(server: RunningServer) -> None:
    client = openai.AsyncOpenAI(
        api_key="sk-anything",
        base_url=server.base_url,
        max_retries=0,
        http_client=openai.DefaultAsyncHttpxClient(
            limits=openai.DEFAULT_CONNECTION_LIMITS.__class__(max_connections=250)
        ),
    )
    prompts = [f"Request number {i}: tell me about topic {i * 7919 % 1000}." for i in range(200)]

    async def plain(prompt: str) -> str:
        reply = await client.chat.completions.create(
            model="mock-gpt", messages=[{"role": "user", "content": prompt}]
        )
        return reply.choices[0].message.content or ""

    async def streamed(prompt: str) -> str:
        stream = await client.chat.completions.create(
            model="mock-gpt", messages=[{"role": "user", "content": prompt}], stream=True
        )
        return "".join([c.choices[0].delta.content or "" async for c in stream])

    expected = [await plain(p) for p in prompts]
    assert len(set(expected)) > 150  # prompts really give different answers
    got = await asyncio.gather(*(streamed(p) for p in prompts))
    assert list(got) == expected
    await client.close()


# --- errors, each as the SDK sees it -------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "exception", "status", "code", "param"),
    [
        (
            {"model": "gpt-nope", "messages": MESSAGES},
            openai.NotFoundError,
            404,
            "model_not_found",
            "model",
        ),
        (
            {"model": "mock-gpt", "messages": []},
            openai.BadRequestError,
            400,
            "invalid_value",
            "messages",
        ),
        (
            {"model": "mock-gpt", "messages": [{"role": "wizard", "content": "x"}]},
            openai.BadRequestError,
            400,
            "invalid_value",
            "messages[0].role",
        ),
        (
            {"model": "mock-gpt", "messages": [{"role": "user"}]},
            openai.BadRequestError,
            400,
            "missing_required_parameter",
            "messages[0].content",
        ),
        (
            {"model": "mock-gpt", "messages": MESSAGES, "temperature": 7},
            openai.BadRequestError,
            400,
            "invalid_value",
            "temperature",
        ),
        (
            {"model": "mock-gpt", "messages": MESSAGES, "max_tokens": "many"},
            openai.BadRequestError,
            400,
            "invalid_type",
            "max_tokens",
        ),
        (
            {"model": "mock-gpt", "messages": MESSAGES, "tool_choice": "required"},
            openai.BadRequestError,
            400,
            "invalid_value",
            "tool_choice",
        ),
    ],
)
def test_bad_requests_arrive_as_sdk_errors(
    client: openai.OpenAI,
    kwargs: dict[str, Any],
    exception: type[openai.APIStatusError],
    status: int,
    code: str,
    param: str,
) -> None:
    with pytest.raises(exception) as info:
        client.chat.completions.create(**kwargs)
    assert info.value.status_code == status
    assert info.value.code == code
    assert info.value.param == param
    assert info.value.response.headers["x-request-id"]


def test_missing_model_field(server: RunningServer) -> None:
    # The SDK refuses to send a request without a model, so send it raw.
    response = httpx.post(server.base_url + "/chat/completions", json={"messages": MESSAGES})
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": "Missing required parameter: 'model'.",
        "type": "invalid_request_error",
        "code": "missing_required_parameter",
        "param": "model",
    }


@pytest.mark.parametrize(
    ("content", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"", 400, "invalid_json"),
        (b"[1, 2]", 400, "invalid_request_body"),
        (b'{"model": "mock-gpt", "messages": "hello"}', 400, "invalid_type"),
        (
            '{"model": "mock-gpt", "messages": [{"role": "user", "content": "\udc80"}]}'.encode(
                "utf-8", "surrogatepass"
            ),
            400,
            "invalid_json",
        ),
    ],
)
def test_malformed_bodies(server: RunningServer, content: bytes, status: int, code: str) -> None:
    response = httpx.post(
        server.base_url + "/chat/completions",
        content=content,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert error["code"] == code
    assert error["type"] == "invalid_request_error"


def test_oversized_body_is_refused_before_it_is_read(server: RunningServer) -> None:
    limit = server.gateway.config.gateway.max_body_size
    big = b'{"model": "mock-gpt", "messages": [], "pad": "' + b"x" * limit + b'"}'
    response = httpx.post(server.base_url + "/chat/completions", content=big)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"

    def chunked() -> Any:  # no Content-Length: the limit applies while reading
        for _ in range(limit // 65536 + 2):
            yield b"x" * 65536

    response = httpx.post(server.base_url + "/chat/completions", content=chunked())
    assert response.status_code == 413


def test_unknown_paths_and_wrong_methods(server: RunningServer) -> None:
    missing = httpx.post(server.base_url + "/embeddingz", json={})
    assert missing.status_code == 404
    assert missing.json()["error"] == {
        "message": "Invalid URL (POST /v1/embeddingz).",
        "type": "invalid_request_error",
        "code": "unknown_url",
        "param": None,
    }
    wrong = httpx.get(server.base_url + "/chat/completions")
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "POST"
    assert wrong.json()["error"]["code"] == "method_not_allowed"


def test_sdk_sees_405_and_404_as_typed_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.get("/nothing", cast_to=object)
    with pytest.raises(openai.APIStatusError) as info:
        client.delete("/chat/completions", cast_to=object)
    assert info.value.status_code == 405


def test_health_endpoints(server: RunningServer) -> None:
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(server.url + "/readyz").json() == {"status": "ready"}


def test_deeply_nested_json_is_a_400_not_a_crash(server: RunningServer) -> None:
    depth = 5000
    body = b'{"model": "mock-gpt", "messages": ' + b"[" * depth + b"]" * depth + b"}"
    response = httpx.post(server.base_url + "/chat/completions", content=body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "json_too_deep"


def test_too_many_messages_is_a_400_naming_messages(
    gateway_factory: Callable[..., RunningServer],
) -> None:
    config = {
        "gateway": {"plugins": ["mock"], "max_messages": 3},
        "providers": [{"name": "mock", "type": "mock", "models": ["mock-gpt"]}],
    }
    server = gateway_factory(config)
    client = openai.OpenAI(api_key="x", base_url=server.base_url, max_retries=0)
    assert client.chat.completions.create(model="mock-gpt", messages=MESSAGES * 3).choices
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="mock-gpt", messages=MESSAGES * 4)
    assert info.value.code == "too_many_messages"
    assert info.value.param == "messages"
