"""The sink on its own, fed events by hand: times, bounds on what it keeps,
attempts that never ended, events before startup, flushing, the global provider."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from opentelemetry import trace as trace_api
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from sluiceway_otel import OtelOptions, ProviderInfo, RouteInfo, TraceSink

from sluiceway.events import (
    AttemptEnded,
    AttemptStarted,
    FirstToken,
    RequestEnded,
    RequestStarted,
    SessionLogin,
)

ROUTES = {"chat": RouteInfo("/v1/chat/completions", calls_model=True)}
PROVIDERS = {"up": ProviderInfo("openai", "llm.example.com", 443)}
SECOND = 1_000_000_000


def make_sink(exporter: InMemorySpanExporter, **options: Any) -> TraceSink:
    return TraceSink(OtelOptions(**options), exporter=lambda: exporter,
                     routes=ROUTES, providers=PROVIDERS, version="9.9")


def started(request_id: str, at: float) -> RequestStarted:
    return RequestStarted(request_id=request_id, at=at, method="POST",
                          path="/v1/chat/completions", route="chat", client="10.0.0.1")


def ended(request_id: str, at: float, duration: float, **fields: Any) -> RequestEnded:
    values: dict[str, Any] = {"method": "POST", "path": "/v1/chat/completions",
                              "route": "chat", "status": 200, "model": "m", "provider": "up"}
    return RequestEnded(request_id=request_id, at=at, duration=duration, **{**values, **fields})


def attempt(request_id: str, at: float, number: int = 1, stream: bool = False) -> AttemptStarted:
    return AttemptStarted(request_id=request_id, at=at, provider="up", deployment="up/m-v2",
                          model="m-v2", key_id=None, attempt=number, stream=stream)


def attempt_ended(request_id: str, at: float, number: int = 1, **fields: Any) -> AttemptEnded:
    return AttemptEnded(request_id=request_id, at=at, provider="up", deployment="up/m-v2",
                        model="m-v2", key_id=None, attempt=number,
                        **{"status": 200, "latency": 0.5, **fields})


def by_kind(spans: tuple[ReadableSpan, ...], kind: SpanKind) -> list[ReadableSpan]:
    return [s for s in spans if s.kind is kind]


async def test_spans_keep_the_events_times_and_durations() -> None:
    exporter = InMemorySpanExporter()
    sink = make_sink(exporter)
    async with sink.lifespan():
        sink.handle(started("r1", 1000.0))
        sink.handle(attempt("r1", 1000.25))
        sink.handle(attempt_ended("r1", 1000.75))
        sink.handle(ended("r1", 1001.5, 1.5, usage={"prompt_tokens": 3, "completion_tokens": 4,
                                                    "cached_tokens": 1, "reasoning_tokens": 2}))
    spans = exporter.get_finished_spans()
    (server,) = by_kind(spans, SpanKind.SERVER)
    (client,) = by_kind(spans, SpanKind.CLIENT)
    assert server.start_time is not None and server.end_time is not None
    assert client.start_time is not None and client.end_time is not None
    # Exact: one offset turns every monotonic time into epoch nanoseconds.
    assert server.end_time - server.start_time == 3 * SECOND // 2
    assert client.start_time - server.start_time == SECOND // 4
    assert client.end_time - server.start_time == 3 * SECOND // 4
    # The offset is the clocks' difference now (a generous margin, not a timing test).
    expected = time.time_ns() - time.monotonic_ns() + 1000 * SECOND
    assert abs(server.start_time - expected) < SECOND
    assert server.resource.attributes["service.version"] == "9.9"
    assert server.resource.attributes["service.name"] == "sluiceway"
    assert client.name == "chat m-v2"
    assert dict(client.attributes or {}).items() >= {
        "server.address": "llm.example.com", "server.port": 443,
        "gen_ai.provider.name": "openai", "gen_ai.usage.input_tokens": 3,
        "gen_ai.usage.output_tokens": 4, "gen_ai.usage.cache_read.input_tokens": 1,
        "gen_ai.usage.reasoning.output_tokens": 2,
    }.items()


async def test_an_attempt_that_never_ended_is_cancelled_at_the_requests_end() -> None:
    exporter = InMemorySpanExporter()
    sink = make_sink(exporter)
    async with sink.lifespan():
        sink.handle(started("r1", 10.0))
        sink.handle(attempt("r1", 10.1, stream=True))
        sink.handle(ended("r1", 12.0, 2.0, status=0, disconnected=True, stream=True))
    spans = exporter.get_finished_spans()
    (server,) = by_kind(spans, SpanKind.SERVER)
    (client,) = by_kind(spans, SpanKind.CLIENT)
    assert client.end_time == server.end_time
    assert client.status.status_code is StatusCode.ERROR
    assert dict(client.attributes or {})["error.type"] == "cancelled"
    assert "sluiceway.attempt.next" not in dict(client.attributes or {})
    # The client went away: not the gateway's error.
    assert server.status.status_code is StatusCode.UNSET
    assert dict(server.attributes or {})["sluiceway.disconnected"] is True
    assert "http.response.status_code" not in dict(server.attributes or {})


async def test_first_token_times_the_attempt_from_its_own_start() -> None:
    exporter = InMemorySpanExporter()
    sink = make_sink(exporter)
    async with sink.lifespan():
        sink.handle(started("r1", 10.0))
        sink.handle(attempt("r1", 10.5, stream=True))
        sink.handle(attempt_ended("r1", 10.75))
        sink.handle(FirstToken(request_id="r1", at=11.0, provider="up", model="m", ttft=1.0))
        sink.handle(ended("r1", 14.0, 4.0, stream=True))
    spans = exporter.get_finished_spans()
    (server,) = by_kind(spans, SpanKind.SERVER)
    (client,) = by_kind(spans, SpanKind.CLIENT)
    assert dict(server.attributes or {})["gen_ai.response.time_to_first_chunk"] == 1.0
    assert dict(client.attributes or {})["gen_ai.response.time_to_first_chunk"] == 0.5
    assert dict(client.attributes or {})["sluiceway.attempt.latency"] == 0.5
    assert client.end_time == server.end_time  # the stream's span lasts until its end


async def test_at_most_max_open_requests_are_followed() -> None:
    exporter = InMemorySpanExporter()
    sink = make_sink(exporter, max_open=2)
    async with sink.lifespan():
        for number, request_id in enumerate(("a", "b", "c")):
            sink.handle(started(request_id, 100.0 + number))
        assert (sink.open_requests, sink.dropped) == (2, 1)
        # "a" was forgotten: its attempt is not followed, its end still makes a span.
        sink.handle(attempt("a", 103.0))
        sink.handle(attempt("b", 103.0))
        sink.handle(ended("a", 104.0, 4.0))
        sink.handle(ended("b", 104.0, 3.0))
        sink.handle(ended("c", 104.0, 2.0))
        assert sink.open_requests == 0
    spans = exporter.get_finished_spans()
    servers = {dict(s.attributes or {})["sluiceway.request_id"]: s for s in spans
               if s.kind is SpanKind.SERVER}
    assert sorted(servers) == ["a", "b", "c"]
    a, b = servers["a"], servers["b"]
    assert a.end_time is not None and a.start_time is not None
    assert a.end_time - a.start_time == 4 * SECOND  # from RequestEnded.duration
    assert "client.address" not in dict(a.attributes or {})
    clients = by_kind(spans, SpanKind.CLIENT)
    assert [c.parent.span_id for c in clients if c.parent] == [b.context.span_id]


async def test_a_request_older_than_max_age_is_forgotten() -> None:
    exporter = InMemorySpanExporter()
    sink = make_sink(exporter, max_age="10s")
    async with sink.lifespan():
        sink.handle(started("old", 100.0))
        sink.handle(started("young", 105.0))
        sink.handle(started("new", 111.0))
        assert (sink.open_requests, sink.dropped) == (2, 1)
        sink.handle(started("newest", 116.0))
        assert (sink.open_requests, sink.dropped) == (2, 2)


async def test_a_reused_request_id_forgets_the_first() -> None:
    exporter = InMemorySpanExporter()
    sink = make_sink(exporter)
    async with sink.lifespan():
        sink.handle(started("same", 1.0))
        sink.handle(started("same", 2.0))
        assert (sink.open_requests, sink.dropped) == (1, 1)


async def test_events_before_startup_are_kept_for_the_requests_spans() -> None:
    # A gateway started lazily by its first request emits RequestStarted first.
    exporter = InMemorySpanExporter()
    sink = make_sink(exporter)
    sink.handle(started("r1", 1.0))
    assert sink.tracer_provider is None
    async with sink.lifespan():
        assert isinstance(sink.tracer_provider, TracerProvider)
        sink.handle(attempt("r1", 1.5))
        sink.handle(attempt_ended("r1", 2.0))
        sink.handle(ended("r1", 2.5, 1.5))
    assert sink.tracer_provider is None
    assert len(exporter.get_finished_spans()) == 2


async def test_force_flush_exports_while_running() -> None:
    exporter = InMemorySpanExporter()
    sink = make_sink(exporter, schedule_delay="1h")
    async with sink.lifespan():
        sink.handle(started("r1", 1.0))
        sink.handle(ended("r1", 2.0, 1.0))
        assert await asyncio.to_thread(sink.force_flush)
        assert len(exporter.get_finished_spans()) == 1


async def test_exporter_none_builds_nothing() -> None:
    sink = TraceSink(OtelOptions(exporter="none"), exporter=None)
    assert not sink.enabled
    async with sink.lifespan():
        sink.handle(started("r1", 1.0))
        assert sink.open_requests == 0
        assert sink.tracer_provider is None
        sink.handle(ended("r1", 2.0, 1.0))
    assert sink.force_flush()


async def test_set_global_installs_the_gateways_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    installed: list[object] = []
    monkeypatch.setattr(trace_api, "set_tracer_provider", installed.append)
    sink = make_sink(InMemorySpanExporter(), set_global=True)
    async with sink.lifespan():
        provider = sink.tracer_provider
        assert provider is not None
        assert installed == [provider]
    quiet = make_sink(InMemorySpanExporter())
    async with quiet.lifespan():
        assert installed == [provider]  # not set again


async def test_a_failed_request_without_attempts_is_an_error_span() -> None:
    exporter = InMemorySpanExporter()
    sink = make_sink(exporter)
    async with sink.lifespan():
        sink.handle(started("r1", 1.0))
        sink.handle(ended("r1", 2.0, 1.0, status=503, error_type="service_unavailable",
                          error_code="server_shutdown", provider=None))
    (server,) = exporter.get_finished_spans()
    assert server.status.status_code is StatusCode.ERROR
    assert server.status.description == "server_shutdown"
    attributes = dict(server.attributes or {})
    assert attributes["error.type"] == "server_shutdown"
    assert attributes["sluiceway.error.code"] == "server_shutdown"
    assert "gen_ai.provider.name" not in attributes


async def test_a_login_the_request_waited_for_is_an_event_on_its_span() -> None:
    exporter = InMemorySpanExporter()
    sink = make_sink(exporter)
    async with sink.lifespan():
        sink.handle(started("r1", 1.0))
        sink.handle(SessionLogin(request_id="r1", at=3.0, provider="web", reason="expired",
                                 outcome="ok", duration=1.75))
        # A background renewal belongs to no request.
        sink.handle(SessionLogin(request_id="", at=3.5, provider="web", reason="refresh",
                                 outcome="ok", duration=0.5))
        sink.handle(ended("r1", 4.0, 3.0))
    (server,) = exporter.get_finished_spans()
    (login,) = server.events
    assert login.name == "sluiceway.session_login"
    assert dict(login.attributes or {}) == {"provider": "web", "reason": "expired",
                                            "outcome": "ok", "duration": 1.75}
    assert server.start_time is not None
    assert login.timestamp - server.start_time == 2 * SECOND
