"""``POST /v1/chat/completions``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..context import CONTEXT_KEY
from ..responses import send_json
from ..streaming import relay_openai_stream, until_disconnect
from ..wire.openai import parse_chat_request

if TYPE_CHECKING:
    from ..components import Receive, Scope, Send
    from ..context import RequestContext

__all__ = ["chat_completions"]


async def chat_completions(scope: Scope, receive: Receive, send: Send) -> None:
    """Validate, route, and answer with a completion or an SSE stream."""
    ctx: RequestContext = scope[CONTEXT_KEY]
    request = parse_chat_request(await ctx.json(), request_id=ctx.request_id)
    gateway = ctx.gateway
    deployment = gateway.router.resolve(request.model)
    gateway.access.check(ctx.principal, request.model)
    request.upstream_model = deployment.upstream_model
    ctx.state["provider"] = deployment.provider_name
    if request.stream:
        await relay_openai_stream(ctx, send, request, deployment.provider.stream(request))
        return
    result = await until_disconnect(ctx, deployment.provider.chat(request))
    await send_json(send, 200, result)
