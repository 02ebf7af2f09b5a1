"""``GET /healthz`` (the process answers) and ``GET /readyz`` (it takes traffic)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..context import CONTEXT_KEY
from ..responses import send_json

if TYPE_CHECKING:
    from ...components import Receive, Scope, Send

__all__ = ["healthz", "readyz"]


async def healthz(scope: Scope, receive: Receive, send: Send) -> None:
    """Always 200 while the process can answer at all."""
    await send_json(send, 200, {"status": "ok"})


async def readyz(scope: Scope, receive: Receive, send: Send) -> None:
    """200 once started, 503 while starting or draining for shutdown."""
    gateway = scope[CONTEXT_KEY].gateway
    if gateway.ready:
        await send_json(send, 200, {"status": "ready"})
    else:
        state = "draining" if gateway.draining else "starting"
        await send_json(send, 503, {"status": state}, headers=[(b"retry-after", b"1")])
