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

from typing import TYPE_CHECKING, Any

from ...calls import first_and_rest
from ...calls.answers import call_headers
from ...errors import InvalidRequest, UpstreamError
from ...wire.anthropic_request import chat_request, parse_messages_request
from ...wire.estimate import estimate_input_tokens
from ...wire.messages_to_chat import anthropic_message
from ...wire.usage import Usage
from ..context import CONTEXT_KEY
from ..responses import send_json
from ..streaming import relay_event_stream
from ..streaming_anthropic import (
    EventSource,
    NativeEvents,
    TranslatedEvents,
)

if TYPE_CHECKING:
    from ...calls import ModelCall, Settlements
    from ...calls.router import Deployment
    from ...components import ChatRequest, MessagesRequest, Receive, Scope, Send
    from ..context import RequestContext

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


async def _prepare(ctx: RequestContext, *, count_only: bool) -> ModelCall:
    """The validated request's model call, once the caller may use its model."""
    request = parse_messages_request(
        await ctx.json(),
        request_id=ctx.request_id,
        max_messages=ctx.gateway.config.gateway.max_messages,
        count_only=count_only,
        beta=ctx.header(b"anthropic-beta"),
        version=ctx.header(b"anthropic-version"),
    )
    return ctx.gateway.calls.prepare(
        "count_tokens" if count_only else "messages", ctx, request, stream=request.stream
    )


async def messages(scope: Scope, receive: Receive, send: Send) -> None:
    """Validate, route, and answer with an Anthropic message or event stream."""
    ctx: RequestContext = scope[CONTEXT_KEY]
    calls = ctx.gateway.calls
    call = await _prepare(ctx, count_only=False)
    request: MessagesRequest = call.request  # type: ignore[assignment]
    canonical = _Canonical(request)
    if request.stream:

        async def open_events(deployment: Deployment) -> EventSource:
            provider = deployment.provider
            name = deployment.provider_name
            native = deployment.capabilities.anthropic_messages_stream
            if native is not None:
                first, rest = await first_and_rest(deployment, native(request))
                return NativeEvents(call, first, rest, name)
            first, rest = await first_and_rest(deployment, provider.stream(canonical.get()))
            return TranslatedEvents(call, first, rest, name, model=request.model)

        async def relay(out: Send, open_attempts: Any, settle: Settlements) -> None:
            async def open_stream() -> tuple[EventSource, list[Header]]:
                return await open_attempts(), call_headers(call)

            await relay_event_stream(call, out, open_stream, settle)

        await calls.stream(call, relay, open_events, send)
        return

    async def answer(deployment: Deployment) -> dict[str, Any]:
        native = deployment.capabilities.anthropic_messages
        if native is not None:
            message = await native(request)
            if not isinstance(message, dict):
                raise UpstreamError(
                    f"Provider {deployment.provider_name!r} answered with something "
                    "that is not an Anthropic message.",
                    code="upstream_invalid_response",
                )
            call.usage = Usage.from_anthropic(message.get("usage"))
            return message
        completion = await deployment.provider.chat(canonical.get())
        call.usage = Usage.from_openai(completion.get("usage"))
        return anthropic_message(completion, model=request.model)

    await calls.whole(call, answer, send)


async def count_tokens(scope: Scope, receive: Receive, send: Send) -> None:
    """``{"input_tokens": n}`` for a Messages body, from the provider that would
    serve it. Not counted as a model call: no retries, no pool slot, nothing
    against the deployment's health, and only the call policies that ask for
    ``count_tokens`` calls see it (the bundled limits and budgets do not)."""
    ctx: RequestContext = scope[CONTEXT_KEY]
    call = await _prepare(ctx, count_only=True)
    request: MessagesRequest = call.request  # type: ignore[assignment]

    async def count(deployment: Deployment) -> int:
        capabilities = deployment.capabilities
        if capabilities.anthropic_count_tokens is not None:
            return await capabilities.anthropic_count_tokens(request)
        if capabilities.count_tokens is not None:
            return await capabilities.count_tokens(_translated(request))
        return estimate_input_tokens(request.body)

    tokens = await ctx.gateway.calls.single(call, count)
    deployment = call.deployment
    assert deployment is not None
    headers = [
        (b"x-sluiceway-provider", deployment.provider_name.encode("latin-1", "replace")),
        (b"x-sluiceway-model", deployment.upstream_model.encode("latin-1", "replace")),
    ]
    await send_json(send, 200, {"input_tokens": tokens}, headers=headers)
