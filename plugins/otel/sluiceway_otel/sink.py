"""The event sink: a request's lifecycle events become OpenTelemetry spans.

Each request is one ``SERVER`` span; each upstream attempt one ``CLIENT`` span
under it. Nothing is built while the request runs: ``handle`` notes the events
of the request in memory (a few appends), and when ``RequestEnded`` arrives the
spans are made at once with the events' own times, so the span's name and
attributes are final and a request costs the tracer one burst of work. The
spans go to a ``BatchSpanProcessor``, whose thread exports them: the event loop
never waits for a collector.

The times are the events' ``at`` (``time.monotonic()``), turned into epoch
nanoseconds with one offset taken when the sink is built: spans are placed in
wall-clock time but keep the monotonic clock's exact durations.

The state of the requests in flight is bounded: at most ``max_open`` requests,
none older than ``max_age``; a request forgotten that way still gets its server
span when it ends (from ``RequestEnded``), without its attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace as trace_api
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from sluiceway.api import (
    AttemptEnded,
    AttemptStarted,
    AuthDecided,
    Event,
    FirstToken,
    LimitDecided,
    RequestEnded,
    RequestStarted,
    SessionLogin,
)

from . import attributes as a
from .exporters import ExporterFactory
from .options import OtelOptions

__all__ = ["ProviderInfo", "RouteInfo", "TraceSink"]

log = logging.getLogger("sluiceway.otel")

# Per request, at most this many attempts and auth/limit notes are kept: the retry
# loop is bounded already, this only guards against a runaway emitter.
_MAX_ATTEMPTS = 64
_MAX_NOTES = 32


@dataclass(frozen=True, slots=True)
class RouteInfo:
    """What a span needs of a route: its path template and whether it calls a model."""

    path: str
    calls_model: bool


@dataclass(frozen=True, slots=True)
class ProviderInfo:
    """What a span needs of a ``[[providers]]`` table: its ``gen_ai.provider.name``
    and the upstream's address (``None`` for in-process providers such as ``mock``)."""

    system: str
    address: str | None = None
    port: int | None = None


_Note = AuthDecided | LimitDecided | SessionLogin


@dataclass(slots=True)
class _Attempt:
    started: AttemptStarted
    ended: AttemptEnded | None = None
    first_chunk_at: float | None = None


@dataclass(slots=True)
class _Request:
    """What the events of one request in flight said so far."""

    started: RequestStarted
    attempts: list[_Attempt] = field(default_factory=list)
    notes: list[_Note] = field(default_factory=list)
    first_token: FirstToken | None = None
    key_id: str | None = None
    carrier: dict[str, str] | None = None


class TraceSink:
    """Receives every lifecycle event and exports the spans of each request.

    Built once per gateway; :meth:`lifespan` opens a ``TracerProvider`` of its
    own at startup and shuts it down (exporting what is queued) at shutdown.
    """

    def __init__(
        self,
        options: OtelOptions,
        *,
        exporter: ExporterFactory | None,
        routes: Mapping[str, RouteInfo] | None = None,
        providers: Mapping[str, ProviderInfo] | None = None,
        version: str = "",
    ) -> None:
        self.options = options
        self.enabled = exporter is not None
        self._exporter = exporter
        self._routes = dict(routes or {})
        self._providers = dict(providers or {})
        self._version = version
        self._max_open = options.max_open
        self._max_age = float(options.max_age)
        # epoch ns = monotonic s * 1e9 + offset, taken once.
        self._offset = time.time_ns() - time.monotonic_ns()
        self._open: OrderedDict[str, _Request] = OrderedDict()
        self._propagator = TraceContextTextMapPropagator()
        self._provider: TracerProvider | None = None
        self._tracer: Tracer | None = None
        # Requests forgotten before they ended (max_open, max_age, a reused id).
        self.dropped = 0

    # -- lifecycle ---------------------------------------------------------

    def lifespan(self) -> AbstractAsyncContextManager[None]:
        """Entered by the gateway at startup; exits after every request has ended,
        exporting the queued spans (in a thread: the loop is not held up)."""
        return self._lifespan()

    @contextlib.asynccontextmanager
    async def _lifespan(self) -> AsyncIterator[None]:
        if self._exporter is None:
            yield
            return
        provider = self._new_provider(self._exporter)
        self._provider = provider
        self._tracer = provider.get_tracer("sluiceway_otel", self._version or None)
        if self.options.set_global:
            trace_api.set_tracer_provider(provider)
        try:
            yield
        finally:
            self._tracer = None
            self._provider = None
            self._open.clear()
            await asyncio.to_thread(provider.shutdown)

    def _new_provider(self, exporter: ExporterFactory) -> TracerProvider:
        options = self.options
        service = options.service_name or os.environ.get("OTEL_SERVICE_NAME") or "sluiceway"
        resource_attributes: dict[str, Any] = {"service.name": service}
        if self._version:
            resource_attributes["service.version"] = self._version
        provider = TracerProvider(
            sampler=ParentBased(TraceIdRatioBased(options.sample_ratio)),
            resource=Resource.create(resource_attributes),
            shutdown_on_exit=False,
        )
        provider.add_span_processor(BatchSpanProcessor(
            exporter(),
            max_queue_size=options.max_queue_size,
            schedule_delay_millis=float(options.schedule_delay) * 1000,
            max_export_batch_size=min(512, options.max_queue_size),
        ))
        return provider

    @property
    def tracer_provider(self) -> TracerProvider | None:
        """This gateway's provider while it runs (``None`` before startup and after
        shutdown, or when ``exporter = "none"``)."""
        return self._provider

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Export what is queued now; blocks, so call it from another thread."""
        provider = self._provider
        return provider.force_flush(timeout_millis) if provider is not None else True

    @property
    def providers(self) -> Mapping[str, ProviderInfo]:
        """What the spans say of each ``[[providers]]`` table, by name."""
        return self._providers

    @property
    def open_requests(self) -> int:
        """Requests followed now (started, not yet ended)."""
        return len(self._open)

    # -- events ------------------------------------------------------------

    def handle(self, event: Event) -> None:
        """Note ``event``; on ``RequestEnded``, build and end the request's spans."""
        if not self.enabled:
            return
        if isinstance(event, RequestStarted):
            self._start(event)
            return
        if isinstance(event, RequestEnded):
            self._end(event, self._open.pop(event.request_id, None))
            return
        request = self._open.get(event.request_id)
        if request is None:
            return
        if isinstance(event, AttemptStarted):
            if len(request.attempts) < _MAX_ATTEMPTS:
                request.attempts.append(_Attempt(event))
        elif isinstance(event, AttemptEnded):
            for attempt in reversed(request.attempts):
                if attempt.started.attempt == event.attempt and attempt.ended is None:
                    attempt.ended = event
                    break
        elif isinstance(event, FirstToken):
            if request.first_token is None:
                request.first_token = event
                if request.attempts:
                    request.attempts[-1].first_chunk_at = event.at
        elif isinstance(event, AuthDecided | LimitDecided | SessionLogin):
            if isinstance(event, AuthDecided) and event.allowed:
                request.key_id = event.key_id
            if len(request.notes) < _MAX_NOTES:
                request.notes.append(event)

    def continue_trace(self, request_id: str, traceparent: str, tracestate: str | None) -> None:
        """The client's W3C trace context for this request (see ``propagate``)."""
        request = self._open.get(request_id)
        if request is not None:
            carrier = {"traceparent": traceparent}
            if tracestate:
                carrier["tracestate"] = tracestate
            request.carrier = carrier

    def _start(self, event: RequestStarted) -> None:
        opened = self._open
        oldest = event.at - self._max_age
        while opened:
            request_id, request = next(iter(opened.items()))
            if request.started.at >= oldest and len(opened) < self._max_open:
                break
            del opened[request_id]
            self.dropped += 1
        if opened.pop(event.request_id, None) is not None:
            # A client reused a request id while the first was in flight: the
            # events that follow cannot be told apart, so the first is forgotten.
            self.dropped += 1
        opened[event.request_id] = _Request(event)

    # -- spans -------------------------------------------------------------

    def _ns(self, at: float) -> int:
        return int(at * 1e9) + self._offset

    def _end(self, ended: RequestEnded, request: _Request | None) -> None:
        tracer = self._tracer
        if tracer is None:
            return
        route = self._routes.get(ended.route) if ended.route is not None else None
        calls_model = route is not None and route.calls_model
        if ended.model and calls_model:
            name = f"{a.CHAT} {ended.model}"
        elif route is not None:
            name = f"{ended.method} {route.path}"
        else:
            name = ended.method
        parent: Context | None = None
        if request is not None and request.carrier is not None:
            parent = self._propagator.extract(request.carrier)
        started_at = request.started.at if request is not None else ended.at - ended.duration
        server = tracer.start_span(
            name, context=parent, kind=SpanKind.SERVER, start_time=self._ns(started_at)
        )
        if not server.is_recording():
            server.end(end_time=self._ns(ended.at))
            return
        server.set_attributes(self._server_attributes(ended, request, route, calls_model))
        if _server_error(ended):
            server.set_status(Status(StatusCode.ERROR, ended.error_code or ended.error_type))
        if request is not None:
            for note in request.notes:
                server.add_event(*_note(note), timestamp=self._ns(note.at))
            if request.first_token is not None:
                token = request.first_token
                server.add_event(a.EVENT_FIRST_TOKEN, {"ttft": token.ttft},
                                 timestamp=self._ns(token.at))
            if request.attempts:
                context = trace_api.set_span_in_context(server)
                answered = _answering(request.attempts)
                for attempt in request.attempts:
                    self._attempt_span(tracer, context, attempt, ended, attempt is answered)
        server.end(end_time=self._ns(ended.at))

    def _server_attributes(
        self, ended: RequestEnded, request: _Request | None, route: RouteInfo | None,
        calls_model: bool,
    ) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            a.REQUEST_ID: ended.request_id,
            a.HTTP_REQUEST_METHOD: ended.method,
            a.URL_PATH: ended.path,
        }
        if route is not None:
            attrs[a.HTTP_ROUTE] = route.path
        if ended.status:
            attrs[a.HTTP_RESPONSE_STATUS_CODE] = ended.status
        if request is not None and request.started.client:
            attrs[a.CLIENT_ADDRESS] = request.started.client
        key_id = ended.key_id or (request.key_id if request is not None else None)
        if key_id:
            attrs[a.KEY_ID] = key_id
        if calls_model:
            attrs[a.GEN_AI_OPERATION_NAME] = a.CHAT
            attrs[a.GEN_AI_REQUEST_STREAM] = ended.stream
        if ended.model:
            attrs[a.GEN_AI_REQUEST_MODEL] = ended.model
        if ended.provider:
            attrs[a.PROVIDER] = ended.provider
            attrs[a.GEN_AI_PROVIDER_NAME] = self._system(ended.provider)
        if request is not None and (answered := _answering(request.attempts)) is not None:
            attrs[a.GEN_AI_RESPONSE_MODEL] = answered.started.model
            attrs[a.DEPLOYMENT] = answered.started.deployment
        if ended.attempts:
            attrs[a.ATTEMPTS] = ended.attempts
        if ended.usage:
            _usage(attrs, ended.usage)
        if request is not None and request.first_token is not None:
            attrs[a.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = request.first_token.ttft
        if ended.cost is not None:
            attrs[a.COST] = ended.cost
        if ended.upstream is not None:
            attrs[a.UPSTREAM_DURATION] = ended.upstream
        if ended.overhead is not None:
            attrs[a.OVERHEAD] = ended.overhead
        if ended.disconnected:
            attrs[a.DISCONNECTED] = True
        if ended.error_code or ended.error_type:
            attrs[a.ERROR_CODE] = ended.error_code or ended.error_type
        if _server_error(ended):
            attrs[a.ERROR_TYPE] = ended.error_code or ended.error_type or str(ended.status)
        return attrs

    def _attempt_span(
        self, tracer: Tracer, context: Context, attempt: _Attempt, ended: RequestEnded,
        answered: bool,
    ) -> None:
        started, result = attempt.started, attempt.ended
        # A stream's attempt "ends" when its first chunk is in; its span covers the
        # whole stream, as a GenAI client span covers the response until its end.
        if result is None or (answered and started.stream):
            end_at = ended.at
        else:
            end_at = result.at
        span: Span = tracer.start_span(
            f"{a.CHAT} {started.model}", context=context, kind=SpanKind.CLIENT,
            start_time=self._ns(started.at),
        )
        provider = self._providers.get(started.provider)
        attrs: dict[str, Any] = {
            a.GEN_AI_OPERATION_NAME: a.CHAT,
            a.GEN_AI_PROVIDER_NAME: self._system(started.provider),
            a.GEN_AI_REQUEST_MODEL: started.model,
            a.GEN_AI_REQUEST_STREAM: started.stream,
            a.REQUEST_ID: started.request_id,
            a.PROVIDER: started.provider,
            a.DEPLOYMENT: started.deployment,
            a.ATTEMPT: started.attempt,
        }
        if provider is not None and provider.address:
            attrs[a.SERVER_ADDRESS] = provider.address
            if provider.port is not None:
                attrs[a.SERVER_PORT] = provider.port
        if started.key_id:
            attrs[a.KEY_ID] = started.key_id
        if attempt.first_chunk_at is not None:
            attrs[a.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = attempt.first_chunk_at - started.at
        if result is None:
            attrs[a.ERROR_TYPE] = "cancelled"
            span.set_status(Status(StatusCode.ERROR, "the request ended before the attempt"))
        else:
            attrs[a.ATTEMPT_STATUS] = result.status
            attrs[a.ATTEMPT_NEXT] = result.next
            attrs[a.ATTEMPT_LATENCY] = result.latency
            if result.error is not None:
                attrs[a.ERROR_TYPE] = result.error
                span.set_status(Status(StatusCode.ERROR, f"{result.error}, {result.next}"))
        if answered:
            attrs[a.GEN_AI_RESPONSE_MODEL] = started.model
            if ended.usage:
                _usage(attrs, ended.usage)
            if started.stream and ended.status < 400 and (ended.error_code or ended.error_type):
                # The stream this span covers failed after its first chunk.
                attrs[a.ERROR_TYPE] = ended.error_code or ended.error_type
                span.set_status(Status(StatusCode.ERROR, "the stream failed after it started"))
        span.set_attributes(attrs)
        span.end(end_time=self._ns(end_at))

    def _system(self, provider: str) -> str:
        info = self._providers.get(provider)
        return info.system if info is not None else provider


def _server_error(ended: RequestEnded) -> bool:
    """As the HTTP conventions say of server spans, a 5xx is the server's error and
    a refusal (4xx) is not: it is told by its status and code. A stream that failed
    after its 200 went out is an error too."""
    if ended.status >= 500:
        return True
    return ended.status < 400 and bool(ended.error_code or ended.error_type)


def _answering(attempts: list[_Attempt]) -> _Attempt | None:
    """The attempt whose answer the client got, if any."""
    for attempt in reversed(attempts):
        if attempt.ended is not None and attempt.ended.error is None:
            return attempt
    return None


def _usage(attrs: dict[str, Any], usage: Mapping[str, int]) -> None:
    for key, attribute in a.USAGE:
        value = usage.get(key)
        if value is not None:
            attrs[attribute] = value


def _note(event: _Note) -> tuple[str, dict[str, Any]]:
    if isinstance(event, AuthDecided):
        attrs: dict[str, Any] = {"allowed": event.allowed}
        if event.code:
            attrs["code"] = event.code
        return a.EVENT_AUTH, attrs
    if isinstance(event, SessionLogin):
        return a.EVENT_SESSION_LOGIN, {"provider": event.provider, "reason": event.reason,
                                       "outcome": event.outcome, "duration": event.duration}
    return a.EVENT_LIMIT, {"policy": event.policy, "limit": event.limit,
                           "allowed": event.allowed}
