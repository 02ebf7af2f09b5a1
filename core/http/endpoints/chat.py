"""``POST /v1/chat/completions``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ...calls import first_and_rest
from ...calls.answers import call_headers
from ...wire.openai import parse_chat_request
from ...wire.usage import Usage
from ..context import CONTEXT_KEY
from ..streaming import relay_openai_stream

if TYPE_CHECKING:
    from ...calls import ModelCall, Settlements
    from ...calls.router import Deployment
    from ...components import ChatRequest, Receive, Scope, Send

__all__ = ["ChatRelay", "chat_completions", "run_chat_call"]


async def chat_completions(scope: Scope, receive: Receive, send: Send) -> None:
    """Validate, route, and answer with a completion or an SSE stream."""
    ctx = scope[CONTEXT_KEY]
    gateway = ctx.gateway
    request = parse_chat_request(
        await ctx.json(), request_id=ctx.request_id,
        max_messages=gateway.config.gateway.max_messages,
    )
    call = gateway.calls.prepare("chat", ctx, request, stream=request.stream)

    async def relay(call: ModelCall, send: Send, open_stream: Any, settle: Settlements) -> None:
        await relay_openai_stream(call, send, open_stream, settle,
                                  include_usage=request.include_usage)

    await run_chat_call(call, request, send, relay)


ChatRelay = Callable[["ModelCall", "Send", Any, "Settlements"], Awaitable[None]]


async def run_chat_call(
    call: ModelCall, request: ChatRequest, send: Send, relay: ChatRelay,
) -> None:
    """Run a call a provider answers with ``chat`` or ``stream``: a stream goes out
    through ``relay(call, send, open_stream, settle)``, a whole answer as the
    provider's completion."""
    calls = call.context.gateway.calls
    if request.stream:

        async def attempt_stream(deployment: Deployment) -> Any:
            return await first_and_rest(deployment, deployment.provider.stream(request))

        async def relay_opened(out: Send, open_attempts: Any, settle: Settlements) -> None:
            async def open_stream() -> Any:
                first, rest = await open_attempts()
                return first, rest, call_headers(call)

            await relay(call, out, open_stream, settle)

        await calls.stream(call, relay_opened, attempt_stream, send)
        return

    async def attempt(deployment: Deployment) -> dict[str, Any]:
        completion = await deployment.provider.chat(request)
        call.usage = Usage.from_openai(completion.get("usage"))
        return completion

    await calls.whole(call, attempt, send)
