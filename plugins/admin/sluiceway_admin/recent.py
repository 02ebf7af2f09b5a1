"""What the admin API reports of traffic: the last requests, and spend per day.

:class:`TrafficLog` is an event sink: every ``RequestEnded`` goes into a ring of
the last ``recent_requests`` (what ``GET /admin/v1/requests`` lists) and into the
day's totals per key and per model (requests, tokens, US dollars), kept for
:data:`DAYS` days. It lives in each instance's memory; with ``[state] backend =
"redis"`` it is also written to Redis
(:class:`~sluiceway_admin.shared_traffic.SharedTraffic`), and the admin API reads
what every instance saw.
"""

from __future__ import annotations

import collections
import contextlib
import time
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sluiceway.api import RequestEnded

if TYPE_CHECKING:
    from sluiceway.api import Event, Gateway

    from .shared_traffic import SharedTraffic

__all__ = ["DAYS", "TrafficLog"]

DAYS = 31


def _day(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d")


class TrafficLog:
    """The last requests and the daily totals of one instance."""

    def __init__(self, size: int, shared: SharedTraffic | None = None) -> None:
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=size)
        # day -> ("key" | "model", name) -> totals
        self.days: dict[str, dict[tuple[str, str], dict[str, float]]] = {}
        # With [state] in Redis: what every instance saw, kept there too.
        self.shared = shared

    def lifespan(self) -> AbstractAsyncContextManager[None]:
        """Entered at startup: runs the writer of the shared log, if any."""
        return self.shared.lifespan() if self.shared is not None else contextlib.nullcontext()

    def handle(self, event: Event) -> None:
        if not isinstance(event, RequestEnded) or (event.route or "").startswith("admin"):
            return  # the admin API and the dashboard's own polling are not traffic
        now = time.time()
        usage = dict(event.usage or {})
        row = {
            "request_id": event.request_id, "at": now, "path": event.path,
            "route": event.route, "status": event.status,
            "duration_ms": round(event.duration * 1000, 3), "key_id": event.key_id,
            "model": event.model, "provider": event.provider, "stream": event.stream,
            "error_code": event.error_code, "usage": usage or None, "cost": event.cost,
        }
        self.recent.append(row)
        tokens = usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0)
        spent = ([("key", event.key_id or "anonymous", tokens, event.cost or 0.0),
                  ("model", event.model, tokens, event.cost or 0.0)]
                 if event.model is not None else [])
        if self.shared is not None:
            self.shared.put(row, spent)
        if event.model is None:
            return  # not a model call: nothing to spend
        day = self.days.setdefault(_day(now), {})
        for kind, name in (("key", event.key_id or "anonymous"), ("model", event.model)):
            totals = day.setdefault((kind, name), {"requests": 0, "tokens": 0, "cost": 0.0})
            totals["requests"] += 1
            totals["tokens"] += tokens
            totals["cost"] += event.cost or 0.0
        if len(self.days) > DAYS:
            del self.days[min(self.days)]

    def spend(self, by: str, days: int) -> list[dict[str, Any]]:
        """Totals per day and per ``by`` (``"key"`` or ``"model"``), newest day first."""
        rows = []
        for day in sorted(self.days, reverse=True)[:days]:
            for (kind, name), totals in sorted(self.days[day].items()):
                if kind == by:
                    rows.append({"day": day, by: name, "requests": int(totals["requests"]),
                                 "tokens": int(totals["tokens"]),
                                 "cost": round(totals["cost"], 10)})
        return rows


    async def recent_rows(self) -> list[dict[str, Any]]:
        """The last requests, newest first: every instance's with shared state."""
        if self.shared is not None:
            return await self.shared.recent()
        return list(reversed(self.recent))

    async def spend_rows(self, by: str, days: int) -> list[dict[str, Any]]:
        if self.shared is not None:
            return await self.shared.spend(by, days)
        return self.spend(by, days)


def create_log(gateway: Gateway) -> TrafficLog:
    from .options import load_options

    config = gateway.config
    size = load_options(config).recent_requests
    shared = None
    if config.state.backend == "redis" and config.state.url:
        from .shared_traffic import SharedTraffic

        shared = SharedTraffic(config.state.url, config.state.key_prefix + "admin:", size, DAYS)
    return TrafficLog(size, shared)
