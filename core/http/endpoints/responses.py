"""``POST /v1/responses``: the Responses API, served through chat completions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...calls import first_and_rest
from ...errors import InvalidRequest
from ...wire.openai import parse_chat_request
from ...wire.responses import chat_body, response_object, responses_error
from ...wire.usage import Usage
from ..context import CONTEXT_KEY
from ..responses import send_json
from ..streaming_responses import relay_responses_stream
from .chat import call_headers

if TYPE_CHECKING:
    from ...calls import Settlements
    from ...calls.router import Deployment
    from ...components import Receive, Scope, Send

__all__ = ["responses"]


async def responses(scope: Scope, receive: Receive, send: Send) -> None:
    """Translate to a chat request, run it as a model call, answer a ``response``."""
    ctx = scope[CONTEXT_KEY]
    gateway = ctx.gateway
    body = await ctx.json()
    try:
        request = parse_chat_request(
            chat_body(body), request_id=ctx.request_id,
            max_messages=gateway.config.gateway.max_messages,
        )
    except InvalidRequest as refused:
        raise responses_error(refused) from None
    calls = gateway.calls
    call = calls.prepare("responses", ctx, request, stream=request.stream)
    if request.stream:

        async def attempt_stream(deployment: Deployment) -> Any:
            return await first_and_rest(deployment, deployment.provider.stream(request))

        async def relay(open_attempts: Any, settle: Settlements) -> None:
            async def open_stream() -> Any:
                first, rest = await open_attempts()
                return first, rest, call_headers(call)

            await relay_responses_stream(call, send, open_stream, settle, body)

        await calls.stream(call, relay, attempt_stream)
        return

    async def attempt(deployment: Deployment) -> dict[str, Any]:
        completion = await deployment.provider.chat(request)
        call.usage = Usage.from_openai(completion.get("usage"))
        return completion

    completion = await calls.whole(call, attempt)
    await send_json(send, 200, response_object(completion, body), headers=call_headers(call))
