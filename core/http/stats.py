"""Live request statistics kept by the core, for ``/metrics`` (JSON) and ``/info``.

Counting happens in the request context middleware: a few integer updates per
request, whether or not anything reads them. Everything else (who is in flight
and for how long) is read from the gateway's in-flight set when asked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import Gateway

__all__ = ["RequestStats"]


class RequestStats:
    """Totals since the gateway was built: requests seen and finished, the most in
    flight at once, and the summed duration of finished requests."""

    __slots__ = ("finished", "max_concurrent", "seconds", "total")

    def __init__(self) -> None:
        self.total = 0
        self.finished = 0
        self.max_concurrent = 0
        self.seconds = 0.0

    def started(self, in_flight: int) -> None:
        self.total += 1
        if in_flight > self.max_concurrent:
            self.max_concurrent = in_flight

    def ended(self, duration: float) -> None:
        self.finished += 1
        self.seconds += duration

    def snapshot(self, gateway: Gateway) -> dict[str, Any]:
        """The JSON stats: totals, what is in flight now, and the free capacity."""
        active = [
            {
                "id": ctx.request_id,
                "route": ctx.route.name if ctx.route is not None else None,
                "model": ctx.call.group.name if ctx.call is not None else None,
                "key_id": ctx.principal.key_id if ctx.principal is not None else None,
                "duration_s": round(ctx.elapsed, 6),
            }
            # The longest-running first.
            for ctx in sorted(gateway.inflight, key=lambda ctx: ctx.started)
        ]
        capacity = gateway.capacity
        pools = {}
        for provider, group_pool in _pools(gateway):
            pools[provider] = {
                "active": group_pool.active,
                "queued": group_pool.waiting,
                "available": group_pool.available,
                "concurrency": group_pool.concurrency,
            }
        return {
            "total_requests": self.total,
            "finished_requests": self.finished,
            "concurrent_requests": len(gateway.inflight),
            "max_concurrent_requests": self.max_concurrent,
            "average_response_time_s": (
                round(self.seconds / self.finished, 6) if self.finished else None
            ),
            "available_slots": capacity.available if capacity is not None else None,
            "providers": pools,
            "active_requests": active,
        }


def _pools(gateway: Gateway) -> list[tuple[str, Any]]:
    """Each provider's pool (shared by its deployments), by provider name."""
    seen: dict[str, Any] = {}
    for group in gateway.router.groups():
        for deployment in group.deployments:
            seen.setdefault(deployment.provider_name, deployment.pool)
    return sorted(seen.items())
