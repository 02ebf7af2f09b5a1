"""``POST /v1/responses``: the Responses API in front of any provider.

As for ``/v1/messages``, each attempt goes to one deployment: a provider that
serves the Responses API natively (``responses`` / ``responses_stream``, see
:class:`sluiceway.Provider`) gets the client's own body with only ``model``
replaced, so ``previous_response_id``, reasoning items and built-in tools reach
it; any other gets the canonical chat body (translated once, at parse time) and
its answer comes back as a ``response``. What chat cannot say is refused only
when no deployment of the model could take it as it is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...calls import first_and_rest
from ...calls.answers import call_headers
from ...components import ResponsesRequest
from ...errors import InvalidRequest, UpstreamError
from ...wire.openai import parse_chat_request
from ...wire.responses import chat_body, response_object, responses_error
from ...wire.usage import Usage
from ..context import CONTEXT_KEY
from ..streaming import EventSource, relay_event_stream
from ..streaming_responses import NativeResponses, TranslatedResponses

if TYPE_CHECKING:
    from ...calls import ModelCall, Settlements
    from ...calls.router import Deployment
    from ...components import ChatRequest, Receive, Scope, Send
    from ..context import RequestContext

__all__ = ["responses"]

Header = tuple[bytes, bytes]


def _prepare(ctx: RequestContext, body: Any
             ) -> tuple[ModelCall, ChatRequest, ResponsesRequest, InvalidRequest | None]:
    """The call, its canonical chat request, the native request, and what a
    provider without the Responses API must refuse, if anything."""
    refusals: list[InvalidRequest] = []
    chat = chat_body(body, refusals)
    max_messages = ctx.gateway.config.gateway.max_messages
    try:
        request = parse_chat_request(chat, request_id=ctx.request_id, max_messages=max_messages)
    except InvalidRequest as refused:
        if not refusals:
            raise responses_error(refused) from None
        # What is left once chat's refusals are left out may not stand on its own (a
        # tool_choice naming a built-in tool): a native provider still takes it all.
        refusals.append(refused)
        request = parse_chat_request(
            {"model": chat.get("model"), "messages": chat["messages"],
             "stream": bool(chat.get("stream"))},
            request_id=ctx.request_id, max_messages=max_messages)
    native = ResponsesRequest(body, model=request.model, stream=request.stream,
                              request_id=ctx.request_id)
    call = ctx.gateway.calls.prepare("responses", ctx, request, stream=request.stream)
    call.native = native
    refusal = responses_error(refusals[0]) if refusals else None
    if refusal is not None:
        # Only a provider with the Responses API can take this body as it is.
        serves = _streams_natively if request.stream else _answers_natively
        if not any(serves(d) for d in call.group.deployments):
            raise refusal
        call.serves = serves
    return call, request, native, refusal


def _answers_natively(deployment: Deployment) -> bool:
    return deployment.capabilities.responses is not None


def _streams_natively(deployment: Deployment) -> bool:
    return deployment.capabilities.responses_stream is not None


async def responses(scope: Scope, receive: Receive, send: Send) -> None:
    """Validate, route, and answer with a ``response`` or its event stream."""
    ctx: RequestContext = scope[CONTEXT_KEY]
    calls = ctx.gateway.calls
    body = await ctx.json()
    call, request, native_request, refusal = _prepare(ctx, body)
    if native_request.stream:

        async def open_events(deployment: Deployment) -> EventSource:
            name = deployment.provider_name
            native = deployment.capabilities.responses_stream
            if native is not None:
                native_request.upstream_model = deployment.upstream_model
                first, rest = await first_and_rest(deployment, native(native_request))
                return NativeResponses(call, first, rest, name)
            if refusal is not None:
                raise refusal
            stream = deployment.provider.stream(request)
            first, rest = await first_and_rest(deployment, stream)
            return TranslatedResponses(call, first, rest, name, body)

        async def relay(out: Send, open_attempts: Any, settle: Settlements) -> None:
            async def open_stream() -> tuple[EventSource, list[Header]]:
                return await open_attempts(), call_headers(call)

            await relay_event_stream(call, out, open_stream, settle)

        await calls.stream(call, relay, open_events, send)
        return

    async def answer(deployment: Deployment) -> dict[str, Any]:
        native = deployment.capabilities.responses
        if native is not None:
            native_request.upstream_model = deployment.upstream_model
            response = await native(native_request)
            if not isinstance(response, dict):
                raise UpstreamError(
                    f"Provider {deployment.provider_name!r} answered with something that "
                    "is not a response object.",
                    code="upstream_invalid_response",
                )
            call.usage = Usage.from_responses(response.get("usage"))
            return response
        if refusal is not None:
            raise refusal
        completion = await deployment.provider.chat(request)
        call.usage = Usage.from_openai(completion.get("usage"))
        return response_object(completion, body)

    await calls.whole(call, answer, send)
