"""``GET /info``: what this gateway is made of and the limits in force (no secrets)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...plugins.info import describe
from ..context import CONTEXT_KEY
from ..responses import send_json

if TYPE_CHECKING:
    from ...components import Receive, Scope, Send

__all__ = ["info"]


async def info(scope: Scope, receive: Receive, send: Send) -> None:
    """Version, plugins, providers, models, routes and limits, as JSON; plus the
    live request statistics under ``stats``."""
    ctx = scope[CONTEXT_KEY]
    gateway = ctx.gateway
    gateway.require_operator(ctx)
    await send_json(send, 200, {**describe(gateway), "stats": gateway.stats.snapshot(gateway)})
