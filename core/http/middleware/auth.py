"""Runs the configured chain of auth strategies and records the principal."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ...errors import AuthenticationFailed, GatewayError
from ...events import AuthDecided
from ..context import CONTEXT_KEY

if TYPE_CHECKING:
    from ...components import ASGIApp, AuthStrategy, Receive, Scope, Send

__all__ = ["AuthMiddleware"]


class AuthMiddleware:
    """Asks each strategy in chain order; the first to return a principal wins.

    A strategy that raises ends the chain (a present but invalid credential is
    not an anonymous request). Public routes (health checks) skip the chain;
    unknown paths go through it, so they cannot be used to probe the gateway.
    With an empty chain this middleware is not installed at all.
    """

    def __init__(self, app: ASGIApp, strategies: Sequence[AuthStrategy]) -> None:
        self.app = app
        self.strategies = tuple(strategies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ctx = scope[CONTEXT_KEY]
        if ctx.route is None or not ctx.route.public:
            events = ctx.gateway.events
            try:
                for strategy in self.strategies:
                    principal = await strategy.authenticate(ctx)
                    if principal is not None:
                        ctx.principal = principal
                        break
                else:
                    raise AuthenticationFailed(
                        "Missing credentials: send your API key as 'Authorization: Bearer "
                        "<key>' (or in an 'x-api-key' header).",
                        code="missing_api_key",
                    )
            except GatewayError as refused:
                if events.enabled:
                    events.emit(AuthDecided(request_id=ctx.request_id, allowed=False,
                                            code=refused.code))
                raise
            if events.enabled:
                events.emit(AuthDecided(request_id=ctx.request_id, allowed=True,
                                        key_id=principal.key_id))
        await self.app(scope, receive, send)
