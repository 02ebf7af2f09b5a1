"""What each log line says: the events of a request turned into JSON objects.

Everything here runs on the writer thread, never on the event loop: the sink
only hands over the events (read-only by the hook contract) and what it
remembered of the request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from sluiceway.api import (
    AttemptEnded,
    AttemptStarted,
    AuthDecided,
    Event,
    FirstToken,
    LimitDecided,
    PolicyDecided,
    RequestEnded,
    RequestStarted,
)

__all__ = [
    "LEVEL_NAMES", "Progress", "Queued", "Timestamps", "line_for", "request_line", "timestamp",
]

LEVEL_NAMES: Mapping[int, str] = MappingProxyType(
    {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning"}
)


class Progress:
    """What the sink remembers of a request until it ends: what ``RequestEnded``
    does not say itself. Mutated only on the event loop, and handed to the writer
    thread only once the request is over (and the sink has forgotten it)."""

    __slots__ = ("at", "client", "debug", "deployment", "fallbacks", "retries", "ttft")

    def __init__(self, at: float, client: str | None, debug: bool = False) -> None:
        self.at = at
        self.client = client
        self.debug = debug  # whether this request's DEBUG lines are written
        self.deployment: str | None = None
        self.ttft: float | None = None
        self.retries = 0
        self.fallbacks = 0


@dataclass(slots=True)
class Queued:
    """One line to write: its level, kind, wall-clock time, and what it is made of.
    Never changed once queued (not frozen: a frozen dataclass costs twice as much
    to build, on the event loop)."""

    level: int
    kind: str
    wall: float
    event: Event
    progress: Progress | None = None
    threshold: float = 0.0


def timestamp(wall: float) -> str:
    """ISO 8601 in UTC, to the millisecond: ``2025-05-01T12:00:00.123Z``."""
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


class Timestamps:
    """:func:`timestamp`, with the part up to the second made once per second
    (a writer's own, used by its thread only)."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, wall: float) -> str:
        second = int(wall)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{int((wall - second) * 1000):03d}Z"


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def request_line(item: Queued, ts: str, with_client: bool) -> dict[str, Any]:
    """The request's line (``request``), or its ``slow_request`` warning."""
    event = item.event
    assert isinstance(event, RequestEnded)
    progress = item.progress
    usage = event.usage or {}
    deployment: str | None = None
    ttft: float | None = None
    retries: int | None = None
    fallbacks: int | None = None
    client: str | None = None
    if progress is not None:
        deployment, ttft, client = progress.deployment, progress.ttft, progress.client
        retries, fallbacks = progress.retries, progress.fallbacks
    line: dict[str, Any] = {
        "ts": ts,
        "level": LEVEL_NAMES.get(item.level, "info"),
        "event": item.kind,
        "request_id": event.request_id,
        "key_id": event.key_id,
        "method": event.method,
        "path": event.path,
        "route": event.route,
        "model": event.model,
        "provider": event.provider,
        "deployment": deployment,
        "status": event.status,
        "error_type": event.error_type,
        "error_code": event.error_code,
        "duration_ms": _ms(event.duration),
        "ttft_ms": _ms(ttft),
        "upstream_ms": _ms(event.upstream),
        "overhead_ms": _ms(event.overhead),
        "attempts": event.attempts,
        "retries": retries,
        "fallbacks": fallbacks,
        "prompt_tokens": usage.get("prompt_tokens"),
        "completion_tokens": usage.get("completion_tokens"),
        "cached_tokens": usage.get("cached_tokens"),
        "reasoning_tokens": usage.get("reasoning_tokens"),
        "cost": event.cost,
        "stream": event.stream,
        "disconnected": event.disconnected,
        "answered_by": event.answered_by,
    }
    if with_client:
        line["client"] = client
    if item.kind == "slow_request":
        line["slow_request_ms"] = _ms(item.threshold)
    return line


def line_for(item: Queued, ts: str, with_client: bool) -> dict[str, Any]:
    """The JSON object of one queued line; ``ts`` is its time, formatted."""
    event = item.event
    if item.kind in ("request", "slow_request"):
        return request_line(item, ts, with_client)
    line: dict[str, Any] = {
        "ts": ts,
        "level": LEVEL_NAMES.get(item.level, "info"),
        "event": item.kind,
        "request_id": event.request_id,
    }
    if isinstance(event, RequestStarted):
        line.update(method=event.method, path=event.path, route=event.route)
        if with_client:
            line["client"] = event.client
    elif isinstance(event, AuthDecided):
        line.update(allowed=event.allowed, key_id=event.key_id, code=event.code)
    elif isinstance(event, LimitDecided):
        line.update(policy=event.policy, limit=event.limit, allowed=event.allowed,
                    key_id=event.key_id)
    elif isinstance(event, PolicyDecided):
        line.update(policy=event.policy, rule=event.rule, action=event.action,
                    stage=event.stage, count=event.count, key_id=event.key_id)
    elif isinstance(event, AttemptStarted):
        line.update(provider=event.provider, deployment=event.deployment, model=event.model,
                    attempt=event.attempt, stream=event.stream, key_id=event.key_id)
    elif isinstance(event, AttemptEnded):
        line.update(provider=event.provider, deployment=event.deployment, model=event.model,
                    attempt=event.attempt, status=event.status, latency_ms=_ms(event.latency),
                    error=event.error, next=event.next, key_id=event.key_id)
    elif isinstance(event, FirstToken):
        line.update(provider=event.provider, model=event.model, ttft_ms=_ms(event.ttft))
    elif isinstance(event, RequestEnded):
        line.update(status=event.status, duration_ms=_ms(event.duration),
                    error_code=event.error_code, disconnected=event.disconnected)
    return line
