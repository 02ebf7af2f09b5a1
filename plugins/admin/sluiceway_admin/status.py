"""What the admin API reports of a running gateway: providers, pools, breakers, and
the sessions of web-login providers."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sluiceway.api import Gateway

__all__ = ["providers_status", "sessions_status"]


def _breaker(health: Any, now: float) -> dict[str, Any]:
    state = health.state
    if state == "open" and now >= health.open_until:
        state = "half_open"  # the next request goes through as a probe
    rest = max(health.open_until - now, 0.0) if state == "open" else 0.0
    return {"state": state, "rest_s": round(rest, 3), "reason": health.open_reason
            if state != "closed" else None}


def providers_status(gateway: Gateway) -> list[dict[str, Any]]:
    """Each provider: its pool's occupancy and each deployment's breaker, in-flight
    count and latency."""
    now = time.monotonic()
    providers: dict[str, dict[str, Any]] = {}
    seen: set[int] = set()
    for group in gateway.router.groups():
        for deployment in group.deployments:
            pool = deployment.pool
            entry = providers.setdefault(deployment.provider_name, {
                "name": deployment.provider_name,
                "pool": {"active": pool.active, "queued": pool.waiting,
                         "concurrency": pool.concurrency},
                "deployments": [],
            })
            if id(deployment.health) in seen:
                continue  # a model listed and in an alias: one deployment
            seen.add(id(deployment.health))
            health = deployment.health
            entry["deployments"].append({
                "model": deployment.upstream_model, "group": group.name,
                **_breaker(health, now), "inflight": health.inflight,
                "latency_ms": round(health.latency * 1000, 3)
                if health.latency is not None else None,
            })
    return sorted(providers.values(), key=lambda entry: entry["name"])


def sessions_status(gateway: Gateway) -> list[dict[str, Any]]:
    """Each web-login provider's session as this instance holds it (never its
    contents): whether one is held, until when, and the logins made."""
    rows = []
    for name, handle in sorted(gateway.sessions.handles.items()):
        session = handle.current
        expires = getattr(session, "expires_at", None) if session is not None else None
        rows.append({
            "provider": name,
            "held": session is not None,
            "expires_at": datetime.fromtimestamp(expires, UTC).isoformat()
            if isinstance(expires, int | float) and expires > 0 else None,
            "logins": handle.logins,
        })
    return rows
