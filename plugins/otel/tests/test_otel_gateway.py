"""Spans of real requests through a real gateway on a socket (the mock provider,
the fake OpenAI upstream, api-keys and limits), read from the SDK's in-memory
exporter once the gateway has stopped."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode
from sluiceway_api_keys import KeyStore

from sluiceway.testing import RunningServer
from sluiceway.testing.fakes import FakeOpenAI, Reset, Status

Start = Callable[..., RunningServer]
Collect = Callable[[RunningServer], list[ReadableSpan]]
USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]


def servers(spans: Sequence[ReadableSpan]) -> list[ReadableSpan]:
    """The requests' spans, in the order the requests arrived."""
    found = [s for s in spans if s.kind is SpanKind.SERVER]
    return sorted(found, key=lambda s: s.start_time or 0)


def attempts(spans: Sequence[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    """The spans under ``parent``, by attempt number."""
    found = [s for s in spans
             if s.parent is not None and s.parent.span_id == parent.context.span_id]
    return sorted(found, key=lambda s: attrs(s)["sluiceway.attempt"])


def only_request(spans: Sequence[ReadableSpan]) -> tuple[ReadableSpan, list[ReadableSpan]]:
    (server,) = servers(spans)
    return server, attempts(spans, server)


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def sdk(server: RunningServer, key: str = "none") -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=server.base_url, max_retries=0, timeout=30)


def fake_provider(fake: FakeOpenAI, name: str = "up", model: str = "m",
                  **policy: Any) -> dict[str, Any]:
    return {"name": name, "type": "openai", "base_url": fake.url, "models": [model],
            "read_timeout": "5s", **policy}


def assert_inside(child: ReadableSpan, parent: ReadableSpan) -> None:
    assert child.context.trace_id == parent.context.trace_id
    assert child.parent is not None and child.parent.span_id == parent.context.span_id
    assert parent.start_time is not None and child.start_time is not None
    assert parent.end_time is not None and child.end_time is not None
    assert parent.start_time <= child.start_time <= child.end_time <= parent.end_time


# --------------------------------------------------------------------------
# Answered requests: mock provider
# --------------------------------------------------------------------------


def test_a_plain_chat_is_a_server_span_over_one_client_span(
    start: Start, collect: Collect, keys: KeyStore
) -> None:
    key = keys.create("crm")
    server = start(auth=True, otel={"service_name": "gw-test"})
    before = time.time_ns()
    with sdk(server, key.secret) as client:
        raw = client.chat.completions.with_raw_response.create(model="mock-gpt", messages=USER)
    after = time.time_ns()
    answer = raw.parse()
    assert answer.usage is not None
    spans = collect(server)

    request, (attempt,) = only_request(spans)
    assert request.name == "chat mock-gpt"
    assert request.kind is SpanKind.SERVER
    assert request.parent is None
    assert request.status.status_code is StatusCode.UNSET
    assert request.resource.attributes["service.name"] == "gw-test"
    # Placed in wall-clock time from the events' monotonic clock. (Only the start is
    # bounded by the client's view: the request ends once its last byte is sent.)
    assert request.start_time is not None and request.end_time is not None
    assert before <= request.start_time <= after
    assert request.start_time < request.end_time
    assert attrs(request) == {
        "sluiceway.request_id": raw.headers["x-request-id"],
        "sluiceway.key_id": key.record.id,
        "http.request.method": "POST",
        "url.path": "/v1/chat/completions",
        "http.route": "/v1/chat/completions",
        "http.response.status_code": 200,
        "client.address": "127.0.0.1",
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "mock-gpt",
        "gen_ai.request.stream": False,
        "gen_ai.provider.name": "mock",
        "gen_ai.response.model": "mock-gpt",
        "sluiceway.provider": "mock",
        "sluiceway.deployment": "mock/mock-gpt",
        "sluiceway.attempts": 1,
        "gen_ai.usage.input_tokens": answer.usage.prompt_tokens,
        "gen_ai.usage.output_tokens": answer.usage.completion_tokens,
        "sluiceway.upstream_duration": attrs(attempt)["sluiceway.attempt.latency"],
        "sluiceway.overhead": attrs(request)["sluiceway.overhead"],
    }
    assert attrs(request)["sluiceway.overhead"] >= 0
    assert [e.name for e in request.events] == ["sluiceway.auth"]
    assert dict(request.events[0].attributes or {}) == {"allowed": True}

    assert attempt.name == "chat mock-gpt"
    assert attempt.kind is SpanKind.CLIENT
    assert attempt.status.status_code is StatusCode.UNSET
    assert_inside(attempt, request)
    # The caller's key id, when the retry loop's events carry it.
    attempt_attrs = attrs(attempt)
    assert attempt_attrs.pop("sluiceway.key_id", key.record.id) == key.record.id
    assert attempt_attrs == {
        "sluiceway.request_id": raw.headers["x-request-id"],
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "mock",
        "gen_ai.request.model": "mock-gpt",
        "gen_ai.request.stream": False,
        "gen_ai.response.model": "mock-gpt",
        "gen_ai.usage.input_tokens": answer.usage.prompt_tokens,
        "gen_ai.usage.output_tokens": answer.usage.completion_tokens,
        "sluiceway.provider": "mock",
        "sluiceway.deployment": "mock/mock-gpt",
        "sluiceway.attempt": 1,
        "sluiceway.attempt.status": 200,
        "sluiceway.attempt.next": "done",
        "sluiceway.attempt.latency": attrs(attempt)["sluiceway.attempt.latency"],
    }
    assert attrs(attempt)["sluiceway.attempt.latency"] > 0
    # The key's secret is in no span.
    for span in spans:
        assert key.secret not in repr(dict(span.attributes or {}))


def test_a_streamed_chat_has_its_usage_and_time_to_first_chunk(
    start: Start, collect: Collect
) -> None:
    server = start()
    with sdk(server) as client:
        stream = client.chat.completions.create(
            model="mock-gpt", messages=USER, stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    usage = chunks[-1].usage
    assert usage is not None
    spans = collect(server)

    request, (attempt,) = only_request(spans)
    assert request.name == attempt.name == "chat mock-gpt"
    for span in (request, attempt):
        assert attrs(span)["gen_ai.request.stream"] is True
        assert attrs(span)["gen_ai.usage.input_tokens"] == usage.prompt_tokens
        assert attrs(span)["gen_ai.usage.output_tokens"] == usage.completion_tokens
        assert attrs(span)["gen_ai.response.time_to_first_chunk"] > 0
    (first_token,) = request.events
    assert first_token.name == "sluiceway.first_token"
    assert dict(first_token.attributes or {}) == {
        "ttft": attrs(request)["gen_ai.response.time_to_first_chunk"]
    }
    # The attempt's span covers the stream, not only its first chunk.
    assert_inside(attempt, request)
    assert attempt.end_time == request.end_time
    assert attempt.start_time is not None
    assert attempt.start_time <= first_token.timestamp <= attempt.end_time  # type: ignore[operator]


# --------------------------------------------------------------------------
# Retries, fallbacks and failures: a real OpenAI-compatible upstream
# --------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_a_retried_attempt_is_an_error_span_and_the_retry_answers(
    start: Start, collect: Collect, fake_openai: Callable[..., FakeOpenAI], stream: bool
) -> None:
    fake = fake_openai(chunks=3)
    fake.script(Status(500))
    server = start(providers=[fake_provider(fake)])
    response = httpx.post(
        server.base_url + "/chat/completions", timeout=30,
        json={"model": "m", "messages": USER, "stream": stream,
              "stream_options": {"include_usage": True}} if stream else
             {"model": "m", "messages": USER},
    )
    assert response.status_code == 200
    assert response.headers["x-sluiceway-attempts"] == "2"
    spans = collect(server)

    request, (failed, retried) = only_request(spans)
    assert request.name == "chat m"
    assert request.status.status_code is StatusCode.UNSET
    assert attrs(request)["sluiceway.attempts"] == 2
    assert attrs(request)["gen_ai.provider.name"] == "openai"
    for span in (failed, retried):
        assert_inside(span, request)
        assert span.name == "chat m"
        assert attrs(span)["server.address"] == "127.0.0.1"
        assert attrs(span)["server.port"] == fake.port
        assert attrs(span)["gen_ai.provider.name"] == "openai"
        assert attrs(span)["sluiceway.deployment"] == "up/m"
    assert failed.end_time is not None and retried.start_time is not None
    assert failed.end_time <= retried.start_time

    assert failed.status.status_code is StatusCode.ERROR
    assert attrs(failed)["sluiceway.attempt"] == 1
    assert attrs(failed)["error.type"] == "server"
    assert attrs(failed)["sluiceway.attempt.next"] == "retry"
    assert attrs(failed)["sluiceway.attempt.status"] == 502
    assert "gen_ai.usage.input_tokens" not in attrs(failed)

    assert retried.status.status_code is StatusCode.UNSET
    assert attrs(retried)["sluiceway.attempt"] == 2
    assert attrs(retried)["sluiceway.attempt.next"] == "done"
    assert "error.type" not in attrs(retried)
    # The fake's usage: prompt words, and one completion token per piece.
    assert attrs(retried)["gen_ai.usage.input_tokens"] == 2
    assert attrs(retried)["gen_ai.usage.output_tokens"] == 3
    assert attrs(request)["gen_ai.usage.output_tokens"] == 3


def test_a_fallback_names_the_next_deployment(
    start: Start, collect: Collect, fake_openai: Callable[..., FakeOpenAI]
) -> None:
    broken, healthy = fake_openai(), fake_openai()
    broken.always(Status(500))
    server = start(
        providers=[fake_provider(broken, "a", "m"), fake_provider(healthy, "b", "m2")],
        aliases=[{"name": "smart", "targets": ["a/m", "b/m2"]}],
    )
    response = httpx.post(server.base_url + "/chat/completions", timeout=30,
                          json={"model": "smart", "messages": USER})
    assert response.status_code == 200
    spans = collect(server)

    request, (first, second) = only_request(spans)
    assert request.name == "chat smart"
    assert attrs(request)["gen_ai.request.model"] == "smart"
    assert attrs(request)["gen_ai.response.model"] == "m2"
    assert attrs(request)["sluiceway.provider"] == "b"
    assert attrs(request)["sluiceway.deployment"] == "b/m2"
    assert (first.name, second.name) == ("chat m", "chat m2")
    assert attrs(first)["sluiceway.attempt.next"] == "fallback"
    assert attrs(first)["server.port"] == broken.port
    assert attrs(second)["server.port"] == healthy.port
    assert first.status.status_code is StatusCode.ERROR
    assert second.status.status_code is StatusCode.UNSET


def test_an_upstream_that_keeps_failing_makes_both_spans_errors(
    start: Start, collect: Collect, fake_openai: Callable[..., FakeOpenAI]
) -> None:
    fake = fake_openai()
    fake.always(Status(500))
    server = start(providers=[fake_provider(fake, max_retries=1)])
    with sdk(server) as client, pytest.raises(openai.InternalServerError) as failed:
        client.chat.completions.create(model="m", messages=USER)
    assert failed.value.status_code == 502
    spans = collect(server)

    request, (first, last) = only_request(spans)
    assert request.status.status_code is StatusCode.ERROR
    assert attrs(request)["http.response.status_code"] == 502
    assert attrs(request)["error.type"] == "upstream_error"
    assert attrs(request)["sluiceway.error.code"] == "upstream_error"
    assert "gen_ai.response.model" not in attrs(request)
    assert "gen_ai.usage.input_tokens" not in attrs(request)
    assert [attrs(s)["sluiceway.attempt.next"] for s in (first, last)] == ["retry", "give_up"]
    assert all(s.status.status_code is StatusCode.ERROR for s in (first, last))


def test_a_stream_cut_after_it_started_is_an_error_though_its_status_is_200(
    start: Start, collect: Collect, fake_openai: Callable[..., FakeOpenAI]
) -> None:
    fake = fake_openai(chunks=5)
    fake.script(Reset(after_chunks=2))
    server = start(providers=[fake_provider(fake)])
    received: list[str] = []
    with sdk(server) as client, pytest.raises(openai.APIError):
        for chunk in client.chat.completions.create(model="m", messages=USER, stream=True):
            received.extend(c.delta.content or "" for c in chunk.choices)
    assert received  # the 200 and the first chunks went out: nothing could be retried
    spans = collect(server)

    request, (attempt,) = only_request(spans)
    assert attrs(request)["http.response.status_code"] == 200
    assert request.status.status_code is StatusCode.ERROR
    assert attrs(request)["error.type"] == attrs(request)["sluiceway.error.code"]
    # The attempt had answered (its first chunk), then the stream it covers broke.
    assert attrs(attempt)["sluiceway.attempt.next"] == "done"
    assert attempt.status.status_code is StatusCode.ERROR
    assert attrs(attempt)["error.type"] == attrs(request)["error.type"]
    assert attempt.end_time == request.end_time


# --------------------------------------------------------------------------
# Refused requests and other routes
# --------------------------------------------------------------------------


def test_a_request_refused_by_auth_has_no_attempt(
    start: Start, collect: Collect, keys: KeyStore
) -> None:
    server = start(auth=True)
    with sdk(server, "sk-wrong-0123456789abcdef0123") as client, pytest.raises(
        openai.AuthenticationError
    ):
        client.chat.completions.create(model="mock-gpt", messages=USER)
    spans = collect(server)

    (request,) = spans
    assert request.name == "POST /v1/chat/completions"
    # A 4xx is the client's error, not the server's: the status stays unset.
    assert request.status.status_code is StatusCode.UNSET
    assert attrs(request)["http.response.status_code"] == 401
    assert attrs(request)["sluiceway.error.code"] == "invalid_api_key"
    assert "error.type" not in attrs(request)
    assert "sluiceway.key_id" not in attrs(request)
    assert attrs(request)["gen_ai.operation.name"] == "chat"
    (auth,) = request.events
    assert auth.name == "sluiceway.auth"
    assert dict(auth.attributes or {}) == {"allowed": False, "code": "invalid_api_key"}


def test_a_rate_limited_request_shows_the_limit(
    start: Start, collect: Collect, keys: KeyStore
) -> None:
    key = keys.create("tiny", rpm=1)
    server = start(auth=True, plugins=["limits"])
    with sdk(server, key.secret) as client:
        client.chat.completions.create(model="mock-gpt", messages=USER)
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="mock-gpt", messages=USER)
    spans = collect(server)

    answered, refused = servers(spans)
    assert attempts(spans, refused) == []
    assert attrs(refused)["http.response.status_code"] == 429
    assert attrs(refused)["sluiceway.key_id"] == key.record.id
    assert attrs(refused)["sluiceway.error.code"] == "rate_limit_exceeded"
    limits = [e for e in refused.events if e.name == "sluiceway.limit"]
    assert [dict(e.attributes or {}) for e in limits if not (e.attributes or {})["allowed"]] == [
        {"policy": "limits", "limit": "requests", "allowed": False}
    ]
    assert all((e.attributes or {})["allowed"] for e in answered.events)


def test_other_routes_are_named_by_method_and_route(start: Start, collect: Collect) -> None:
    server = start()
    assert httpx.get(server.base_url + "/models").status_code == 200
    assert httpx.get(server.base_url + "/models/mock-gpt").status_code == 200
    assert httpx.get(server.url + "/no/such/path").status_code == 404
    spans = collect(server)

    models, model, unknown = servers(spans)
    assert models.name == "GET /v1/models"
    assert model.name == "GET /v1/models/{model}"
    assert attrs(model)["http.route"] == "/v1/models/{model}"
    assert attrs(model)["url.path"] == "/v1/models/mock-gpt"
    assert unknown.name == "GET"
    assert "http.route" not in attrs(unknown)
    assert attrs(unknown)["http.response.status_code"] == 404
    for span in (models, model, unknown):
        assert not any(name.startswith("gen_ai.") for name in attrs(span))
        assert attempts(spans, span) == []


# --------------------------------------------------------------------------
# Trace context and sampling
# --------------------------------------------------------------------------

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


def test_propagate_continues_the_clients_trace(start: Start, collect: Collect) -> None:
    server = start(otel={"propagate": True})
    headers = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", "tracestate": "vendor=abc"}
    response = httpx.post(server.base_url + "/chat/completions", headers=headers, timeout=30,
                          json={"model": "mock-gpt", "messages": USER})
    assert response.status_code == 200
    spans = collect(server)

    request, (attempt,) = only_request(spans)
    assert request.parent is not None and request.parent.is_remote
    assert request.parent.span_id == int(PARENT_ID, 16)
    assert request.context.trace_id == attempt.context.trace_id == int(TRACE_ID, 16)
    assert request.context.trace_state.to_header() == "vendor=abc"


def test_without_propagate_the_clients_traceparent_is_ignored(
    start: Start, collect: Collect
) -> None:
    server = start()
    headers = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}
    httpx.post(server.base_url + "/chat/completions", headers=headers, timeout=30,
               json={"model": "mock-gpt", "messages": USER})
    request, _ = only_request(collect(server))
    assert request.parent is None
    assert request.context.trace_id != int(TRACE_ID, 16)


def test_a_client_that_asks_not_to_sample_is_not_traced(start: Start, collect: Collect) -> None:
    server = start(otel={"propagate": True})
    headers = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-00"}
    response = httpx.post(server.base_url + "/chat/completions", headers=headers, timeout=30,
                          json={"model": "mock-gpt", "messages": USER})
    assert response.status_code == 200
    assert collect(server) == []


def test_sample_ratio_zero_records_nothing_and_serves_everything(
    start: Start, collect: Collect
) -> None:
    server = start(otel={"sample_ratio": 0})
    with sdk(server) as client:
        for _ in range(3):
            client.chat.completions.create(model="mock-gpt", messages=USER)
    assert collect(server) == []


def test_the_cost_of_a_priced_answer_is_on_the_request_span(
    start: Start, collect: Collect
) -> None:
    server = start(plugins=["costs"], plugin_options={
        "costs": {"prices": {"mock-gpt": {"input": 1.0, "output": 2.0}}},
    })
    with sdk(server) as client:
        answer = client.chat.completions.create(model="mock-gpt", messages=USER)
    assert answer.usage is not None
    request, (attempt,) = only_request(collect(server))
    expected = (answer.usage.prompt_tokens * 1.0 + answer.usage.completion_tokens * 2.0) / 1e6
    assert attrs(request)["sluiceway.cost_usd"] == pytest.approx(expected)
    assert "sluiceway.cost_usd" not in attrs(attempt)
