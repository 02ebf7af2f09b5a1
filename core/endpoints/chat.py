"""``POST /v1/chat/completions``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from ..context import CONTEXT_KEY
from ..responses import send_json
from ..streaming import relay_openai_stream, until_disconnect
from ..wire.openai import parse_chat_request

if TYPE_CHECKING:
    from ..components import Receive, Scope, Send
    from ..context import RequestContext
    from ..dispatch import Attempts

Chunk = dict[str, Any] | bytes
Header = tuple[bytes, bytes]

__all__ = ["chat_completions", "served_headers"]


async def chat_completions(scope: Scope, receive: Receive, send: Send) -> None:
    """Validate, route, and answer with a completion or an SSE stream."""
    ctx: RequestContext = scope[CONTEXT_KEY]
    gateway = ctx.gateway
    request = parse_chat_request(
        await ctx.json(), request_id=ctx.request_id,
        max_messages=gateway.config.gateway.max_messages,
    )
    group = gateway.router.resolve(request.model)
    gateway.access.check(ctx.principal, request.model)
    dispatcher = gateway.dispatcher
    capacity = gateway.capacity
    if capacity is not None:
        await until_disconnect(ctx, capacity.acquire(group.timeout - ctx.elapsed))
    try:
        if request.stream:

            async def open_stream() -> tuple[Chunk, AsyncIterator[Chunk], list[Header]]:
                first, rest, attempts = await dispatcher.stream(ctx, group, request)
                return first, rest, served_headers(ctx, attempts)

            await relay_openai_stream(ctx, send, request, open_stream)
            return
        result, attempts = await until_disconnect(ctx, dispatcher.chat(ctx, group, request))
        # Streams record it chunk by chunk; middleware (limits, metrics) reads it after.
        ctx.state["usage"] = result.get("usage")
        await send_json(send, 200, result, headers=served_headers(ctx, attempts))
    finally:
        if capacity is not None:
            capacity.release()


def served_headers(ctx: RequestContext, attempts: Attempts) -> list[Header]:
    """Where the answer came from, and what the gateway itself cost."""
    deployment = attempts.deployment
    assert deployment is not None
    ctx.state["provider"] = deployment.provider_name
    overhead = ctx.elapsed - attempts.upstream_seconds - attempts.backoff_seconds
    return [
        (b"x-sluiceway-provider", deployment.provider_name.encode("latin-1", "replace")),
        (b"x-sluiceway-model", deployment.upstream_model.encode("latin-1", "replace")),
        (b"x-sluiceway-attempts", str(attempts.count).encode()),
        (b"x-sluiceway-overhead-ms", f"{max(overhead, 0.0) * 1000:.2f}".encode()),
    ]
