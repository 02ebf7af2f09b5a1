"""``POST /v1/responses``: the Responses API, served through chat completions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...errors import InvalidRequest
from ...wire.openai import parse_chat_request
from ...wire.responses import chat_body, response_object, responses_error
from ..context import CONTEXT_KEY
from ..responses import send_json
from ..streaming_responses import relay_responses_stream
from .chat import call_headers, run_chat_call

if TYPE_CHECKING:
    from ...calls import ModelCall, Settlements
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
    call = gateway.calls.prepare("responses", ctx, request, stream=request.stream)

    async def relay(call: ModelCall, send: Send, open_stream: Any, settle: Settlements) -> None:
        await relay_responses_stream(call, send, open_stream, settle, body)

    completion = await run_chat_call(call, request, send, relay)
    if completion is not None:
        await send_json(send, 200, response_object(completion, body),
                        headers=call_headers(call))
