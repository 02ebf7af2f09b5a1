"""``POST /v1/messages`` and ``POST /v1/messages/count_tokens``: the Anthropic
Messages API in front of any provider.

Each attempt of the core's retry loop goes to one deployment. A provider that
speaks Anthropic natively (``anthropic_messages`` and friends, see
:class:`sluiceway.Provider`) gets the client's own body, with only ``model``
replaced; any other provider gets the canonical OpenAI form, translated once,
on first need, and its answer is translated back. So an alias may mix both
kinds, and a body the canonical shape cannot express (server tools, say) still
reaches a native provider whole.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..context import CONTEXT_KEY
from ..dispatch import first_and_rest
from ..errors import InvalidRequest, UpstreamError
from ..responses import send_json
from ..streaming import until_disconnect
from ..streaming_anthropic import (
    EventSource,
    NativeEvents,
    TranslatedEvents,
    relay_anthropic_stream,
)
from ..wire.anthropic_request import chat_request, estimate_input_tokens, parse_messages_request
from ..wire.translate import openai_usage
from ..wire.translate_ingress import anthropic_message
from .chat import served_headers

if TYPE_CHECKING:
    from ..components import ChatRequest, MessagesRequest, Receive, Scope, Send
    from ..context import RequestContext
    from ..router import Deployment, ModelGroup

__all__ = ["count_tokens", "messages"]

Header = tuple[bytes, bytes]


def _translated(request: MessagesRequest) -> ChatRequest:
    """The canonical request; a body the schema let through but that cannot be
    translated (a text block whose ``text`` is not a string...) is the client's
    400, not the gateway's 500."""
    try:
        return chat_request(request)
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        raise InvalidRequest(
            f"The request's content cannot be read: {type(exc).__name__}: {exc}"
        ) from None


class _Canonical:
    """The request in the canonical shape, translated at most once, when a
    provider that does not speak Anthropic is first tried."""

    __slots__ = ("_chat", "request")

    def __init__(self, request: MessagesRequest) -> None:
        self.request = request
        self._chat: ChatRequest | None = None

    def get(self) -> ChatRequest:
        if self._chat is None:
            self._chat = _translated(self.request)
        self._chat.upstream_model = self.request.upstream_model
        return self._chat


async def _parse(
    ctx: RequestContext, *, count_only: bool
) -> tuple[MessagesRequest, ModelGroup]:
    """The validated request and its model group, once the caller may use it."""
    request = parse_messages_request(
        await ctx.json(),
        request_id=ctx.request_id,
        max_messages=ctx.gateway.config.gateway.max_messages,
        count_only=count_only,
        beta=ctx.header(b"anthropic-beta"),
        version=ctx.header(b"anthropic-version"),
    )
    group = ctx.gateway.router.resolve(request.model)
    ctx.gateway.access.check(ctx.principal, request.model)
    return request, group


async def messages(scope: Scope, receive: Receive, send: Send) -> None:
    """Validate, route, and answer with an Anthropic message or event stream."""
    ctx: RequestContext = scope[CONTEXT_KEY]
    gateway = ctx.gateway
    request, group = await _parse(ctx, count_only=False)
    canonical = _Canonical(request)
    dispatcher = gateway.dispatcher
    capacity = gateway.capacity
    if capacity is not None:
        await until_disconnect(ctx, capacity.acquire(group.timeout - ctx.elapsed))
    try:
        if request.stream:

            async def open_events(deployment: Deployment) -> EventSource:
                provider = deployment.provider
                name = deployment.provider_name
                native = getattr(provider, "anthropic_messages_stream", None)
                if native is not None:
                    first, rest = await first_and_rest(deployment, native(request))
                    return NativeEvents(ctx, first, rest, name)
                first, rest = await first_and_rest(deployment, provider.stream(canonical.get()))
                return TranslatedEvents(ctx, first, rest, name, model=request.model)

            async def open_stream() -> tuple[EventSource, list[Header]]:
                source, attempts = await dispatcher.run(
                    ctx, group, request, open_events, hold=True
                )
                return source, served_headers(ctx, attempts)

            await relay_anthropic_stream(ctx, send, open_stream)
            return

        async def answer(deployment: Deployment) -> tuple[dict[str, Any], Any]:
            provider = deployment.provider
            native = getattr(provider, "anthropic_messages", None)
            if native is not None:
                message = await native(request)
                if not isinstance(message, dict):
                    raise UpstreamError(
                        f"Provider {deployment.provider_name!r} answered with something "
                        "that is not an Anthropic message.",
                        code="upstream_invalid_response",
                    )
                return message, openai_usage(message.get("usage"))
            completion = await provider.chat(canonical.get())
            return anthropic_message(completion, model=request.model), completion.get("usage")

        (message, usage), attempts = await until_disconnect(
            ctx, dispatcher.run(ctx, group, request, answer, hold=False)
        )
        # Streams record it as they go; middleware (limits, metrics) reads it after.
        ctx.state["usage"] = usage
        await send_json(send, 200, message, headers=served_headers(ctx, attempts))
    finally:
        if capacity is not None:
            capacity.release()


async def count_tokens(scope: Scope, receive: Receive, send: Send) -> None:
    """``{"input_tokens": n}`` for a Messages body, from the provider that would
    serve it. Not a model call: no retries, no pool slot, not counted against
    the deployment's health or the caller's limits."""
    ctx: RequestContext = scope[CONTEXT_KEY]
    request, group = await _parse(ctx, count_only=True)
    order = group.order(request)
    now = time.monotonic()
    deployment = next((d for d in order if d.health.available(now)), order[0])
    request.upstream_model = deployment.upstream_model
    provider = deployment.provider
    ctx.state["provider"] = deployment.provider_name
    native = getattr(provider, "anthropic_count_tokens", None)
    counter = getattr(provider, "count_tokens", None)
    if native is not None:
        tokens = await until_disconnect(ctx, native(request))
    elif counter is not None:
        tokens = await until_disconnect(ctx, counter(_translated(request)))
    else:
        tokens = estimate_input_tokens(request.body)
    headers = [
        (b"x-sluiceway-provider", deployment.provider_name.encode("latin-1", "replace")),
        (b"x-sluiceway-model", deployment.upstream_model.encode("latin-1", "replace")),
    ]
    await send_json(send, 200, {"input_tokens": tokens}, headers=headers)
