"""``POST /v1/responses``: the Responses API, served through chat completions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...errors import InvalidRequest
from ...wire.openai import parse_chat_request
from ...wire.responses import chat_body, response_object
from ...wire.usage import Usage
from ..context import CONTEXT_KEY
from ..responses import send_json
from .chat import call_headers

if TYPE_CHECKING:
    from ...calls.router import Deployment
    from ...components import Receive, Scope, Send

__all__ = ["responses"]


async def responses(scope: Scope, receive: Receive, send: Send) -> None:
    """Translate to a chat request, run it as a model call, answer a ``response``."""
    ctx = scope[CONTEXT_KEY]
    gateway = ctx.gateway
    body = await ctx.json()
    request = parse_chat_request(
        chat_body(body), request_id=ctx.request_id,
        max_messages=gateway.config.gateway.max_messages,
    )
    if request.stream:
        raise InvalidRequest("Streamed responses are not served yet: send 'stream': false.",
                             param="stream", code="unsupported_parameter")
    call = gateway.calls.prepare("responses", ctx, request)

    async def attempt(deployment: Deployment) -> dict[str, Any]:
        completion = await deployment.provider.chat(request)
        call.usage = Usage.from_openai(completion.get("usage"))
        return completion

    completion = await gateway.calls.whole(call, attempt)
    await send_json(send, 200, response_object(completion, body), headers=call_headers(call))
