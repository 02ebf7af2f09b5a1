"""Lifecycle events: what happened to each request, for metrics, logs and traces.

The core and the policy plugins emit one event object at each step of a
request's way through the gateway; sinks registered by plugins (Prometheus,
the request log, OpenTelemetry) receive every event, in order, synchronously
on the event loop. That is why a sink must never block: it updates counters in
memory or hands the event to a queue that another thread or task drains. A
sink that raises is logged (at most once a minute per sink) and otherwise
ignored: a failing sink never fails a request.

When no sink is registered, :attr:`Events.enabled` is false and emitters skip
building events at all, so the request path pays nothing for them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .http.app import Gateway

__all__ = [
    "AttemptEnded",
    "AttemptStarted",
    "AuthDecided",
    "Event",
    "EventSink",
    "EventSinkType",
    "Events",
    "FirstToken",
    "LimitDecided",
    "PolicyDecided",
    "RequestEnded",
    "RequestStarted",
    "SessionLogin",
]

log = logging.getLogger("sluiceway.events")

# A failing sink is reported at most this often, so a broken one cannot flood the log.
_REPORT_EVERY = 60.0


@dataclass(slots=True, kw_only=True)
class Event:
    """Every event names its request; ``at`` is ``time.monotonic()`` when it happened.

    Events are read-only by contract: every sink gets the same object. They are
    not frozen dataclasses only because those cost twice as much to build, on
    every request."""

    request_id: str
    at: float = field(default_factory=time.monotonic)


@dataclass(slots=True, kw_only=True)
class RequestStarted(Event):
    """A request arrived: its route (``None``: no route matched), method, path, and
    the client address the server reported."""

    method: str
    path: str
    route: str | None
    client: str | None


@dataclass(slots=True, kw_only=True)
class AuthDecided(Event):
    """The auth chain's outcome: ``key_id`` of the principal when ``allowed``, else
    the error ``code`` (``invalid_api_key``, ``missing_api_key``...)."""

    allowed: bool
    key_id: str | None = None
    code: str | None = None


@dataclass(slots=True, kw_only=True)
class LimitDecided(Event):
    """A policy's decision on a request: ``policy`` is the plugin (``limits``,
    ``guard``, ``budgets``), ``limit`` what was checked (``requests``, ``tokens``,
    ``concurrency``, ``burst``, ``ip``, ``budget``)."""

    policy: str
    limit: str
    allowed: bool
    key_id: str | None = None


@dataclass(slots=True, kw_only=True)
class PolicyDecided(Event):
    """What a call policy did with a request or its answer, other than a limit's
    yes or no: a cache's ``hit``/``miss``/``bypass``/``stored``, a guardrail's
    ``block``/``redact``/``flag``. ``rule`` names what decided (``exact``,
    ``pii.email``, ``injection``...), ``stage`` where (``input`` or ``output``),
    ``count`` how many matches it found. Never the content itself."""

    policy: str
    rule: str
    action: str
    stage: str = "input"
    count: int = 1
    key_id: str | None = None
    model: str | None = None


@dataclass(slots=True, kw_only=True)
class AttemptStarted(Event):
    """One call to an upstream begins: ``attempt`` counts from 1 across fallbacks."""

    provider: str
    deployment: str
    model: str
    key_id: str | None
    attempt: int
    stream: bool


@dataclass(slots=True, kw_only=True)
class AttemptEnded(Event):
    """One call to an upstream ended. ``status`` is 200, or the status the gateway
    gives the failure (an upstream 500 is a 502, a timeout a 504); ``error`` the
    failure kind or ``None``;
    ``next`` what the loop does now: ``"done"``, ``"retry"`` (same deployment),
    ``"fallback"`` (another) or ``"give_up"``."""

    provider: str
    deployment: str
    model: str
    key_id: str | None
    attempt: int
    status: int
    latency: float
    error: str | None = None
    next: str = "done"


@dataclass(slots=True, kw_only=True)
class FirstToken(Event):
    """A stream's first upstream chunk reached the client: ``ttft`` is seconds
    since the request arrived."""

    provider: str
    model: str
    ttft: float


@dataclass(slots=True, kw_only=True)
class RequestEnded(Event):
    """The request is over (answered, refused, or the client left).

    ``usage`` holds ``prompt_tokens``, ``completion_tokens``, ``cached_tokens``
    (and ``reasoning_tokens`` when known); ``cost`` is in US dollars when a price
    is known; ``duration`` is arrival to last byte; ``upstream`` the time spent
    waiting on upstreams; ``overhead`` the gateway's own share (``duration`` -
    ``upstream``, for requests that reached one); ``answered_by`` the policy
    that answered the call itself (``"cache"``), if one did.
    """

    method: str
    path: str
    route: str | None
    status: int
    duration: float
    key_id: str | None = None
    model: str | None = None
    provider: str | None = None
    stream: bool = False
    error_type: str | None = None
    error_code: str | None = None
    usage: Mapping[str, int] | None = None
    cost: float | None = None
    upstream: float | None = None
    overhead: float | None = None
    attempts: int = 0
    disconnected: bool = False
    answered_by: str | None = None


@dataclass(slots=True, kw_only=True)
class SessionLogin(Event):
    """A provider logged in for the session store (:mod:`sluiceway.sessions`), or
    failed to. ``reason``: ``absent``, ``expired``, ``refresh`` (before expiry, in
    the background), ``rejected`` (the site refused the last session), ``warm``
    or ``forced`` (``sluiceway sessions warm``); ``outcome``: ``ok`` or
    ``failed``; ``duration``: the login's seconds. ``request_id`` is the request
    that needed it, ``""`` for a background refresh or the CLI."""

    provider: str
    reason: str
    outcome: str
    duration: float


@runtime_checkable
class EventSink(Protocol):
    """Receives every event. ``handle`` runs on the event loop for every event of
    every request: it must return at once (update memory, enqueue)."""

    def handle(self, event: Event) -> None: ...


EventSinkFactory = Callable[["Gateway"], EventSink]


@dataclass(frozen=True, slots=True)
class EventSinkType:
    """A sink a plugin registers: ``factory(gateway)`` builds it once, when the
    gateway is built. If the built object has a ``lifespan()`` method, the gateway
    enters it at startup and exits it at shutdown (as for middleware)."""

    name: str
    factory: EventSinkFactory


class Events:
    """The gateway's event bus: ``emit`` hands one event to every sink in turn."""

    __slots__ = ("_last_report", "enabled", "failures", "sinks")

    def __init__(self, sinks: Sequence[tuple[str, EventSink]] = ()) -> None:
        self.sinks: tuple[tuple[str, EventSink], ...] = tuple(sinks)
        self.enabled = bool(self.sinks)
        self.failures: dict[str, int] = {}
        self._last_report: dict[str, float] = {}

    def emit(self, event: Event) -> None:
        """Deliver ``event``; a sink's exception is counted and logged, never raised."""
        for name, sink in self.sinks:
            try:
                sink.handle(event)
            except Exception:
                self._report(name, event)

    def _report(self, name: str, event: Event) -> None:
        self.failures[name] = self.failures.get(name, 0) + 1
        now = time.monotonic()
        if now - self._last_report.get(name, -_REPORT_EVERY) >= _REPORT_EVERY:
            self._last_report[name] = now
            log.exception(
                "event sink %r failed on %s (%d failures so far); the request goes on",
                name, type(event).__name__, self.failures[name],
            )


def event_fields(event: Event) -> dict[str, Any]:
    """The event's fields as a dict (for logs and spans)."""
    return {name: getattr(event, name) for name in event.__dataclass_fields__}
