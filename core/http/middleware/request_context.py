"""The outermost middleware: request id, context, in-flight tracking, error rendering.

Whatever an inner layer raises becomes a well-formed error response in the
route's dialect here. A response that has already started cannot change its
status, so streaming endpoints render their own mid-stream errors; anything
that still reaches this layer after the start is logged, and the server ends
the connection. A client that hung up, or a request the gateway interrupted
itself, ends quietly: there is nobody to answer, and nothing went wrong.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from typing import TYPE_CHECKING

from ...errors import ClientDisconnected, GatewayError, ServiceUnavailable
from ...events import RequestEnded, RequestStarted
from ...wire import anthropic, openai
from ..context import CONTEXT_KEY, RequestContext
from ..responses import encode_headers, send_bytes

if TYPE_CHECKING:
    from ...components import ASGIApp, Message, Receive, Scope, Send
    from ..app import Gateway

__all__ = ["RequestContextMiddleware", "render_error"]

log = logging.getLogger("sluiceway.request")

_WELL_FORMED_ID = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")
_ANTHROPIC_ID_HEADER = b"request-id"


class _InternalError(GatewayError):
    status = 500
    error_type = "server_error"
    default_code = "internal_error"


async def render_error(send: Send, error: GatewayError, dialect: str, request_id: str) -> None:
    """Send ``error`` as a complete response in the client's dialect.

    Public as ``sluiceway.send_error``: middleware that wraps an application of
    its own (outside a gateway, where no outer layer renders errors) answers
    with it. On the Anthropic dialect the status follows Anthropic's conventions
    and ``retry-after`` is capped (see :mod:`sluiceway.wire.anthropic`)."""
    if dialect == "anthropic":
        await send_bytes(
            send,
            anthropic.error_status(error),
            anthropic.error_body(error, request_id),
            headers=encode_headers(anthropic.error_headers(error.headers)),
        )
        return
    await send_bytes(
        send, error.status, openai.error_body(error), headers=encode_headers(error.headers)
    )


async def _close_unless_drained(ctx: RequestContext, error: GatewayError) -> None:
    """A refusal sent before the body was read: drop a small body so the connection
    stays usable, or say ``connection: close``. Without it, the server closes a
    connection whose request was never read while a pooling client may already
    be sending its next request into it."""
    if not await ctx.discard_unread_body():
        error.headers["connection"] = "close"


def _drop_tracebacks(error: BaseException | None) -> None:
    """Let go of the frames a handled error's traceback (and its causes') holds: they
    hold the request's objects, and through them the error itself. Only for errors
    that are logged and answered already, when the request is over."""
    seen = 0
    while error is not None and seen < 8:  # a chain is short; a loop in one is not followed
        error.__traceback__ = None
        error = error.__cause__ or error.__context__
        seen += 1


def request_ended(
    ctx: RequestContext, status: int, failure: GatewayError | None
) -> RequestEnded:
    """The :class:`~sluiceway.events.RequestEnded` of a request, from its context
    and, on a model-calling route, its :class:`~sluiceway.ModelCall`."""
    scope = ctx.scope
    call = ctx.call
    duration = ctx.elapsed
    principal = ctx.principal
    if call is None:
        return RequestEnded(
            request_id=ctx.request_id, method=scope["method"], path=scope["path"],
            route=ctx.route.name if ctx.route is not None else None,
            status=status or (failure.status if failure is not None else 0),
            duration=duration,
            key_id=principal.key_id if principal is not None else None,
            error_type=failure.error_type if failure is not None else None,
            error_code=failure.code if failure is not None else None,
            disconnected=ctx.interrupted == "client_disconnected" or "disconnected" in ctx.state,
        )
    attempts = call.attempts
    deployment = attempts.deployment
    upstream = None
    if attempts.count:
        upstream = attempts.upstream_seconds + attempts.backoff_seconds
    if failure is None and status == 200:  # a stream that failed after its 200 went out
        failure = call.error
    usage = call.usage
    return RequestEnded(
        request_id=ctx.request_id,
        method=scope["method"], path=scope["path"],
        route=ctx.route.name if ctx.route is not None else None,
        status=status or (failure.status if failure is not None else 0),
        duration=duration,
        key_id=principal.key_id if principal is not None else None,
        model=call.group.name,
        provider=deployment.provider_name if deployment is not None else None,
        stream=call.stream,
        error_type=failure.error_type if failure is not None else None,
        error_code=failure.code if failure is not None else None,
        usage=usage.counts() if usage is not None else None,
        cost=call.cost,
        upstream=upstream,
        overhead=max(duration - upstream, 0.0) if upstream is not None else None,
        attempts=attempts.count,
        disconnected=(call.disconnected or ctx.interrupted == "client_disconnected"
                      or "disconnected" in ctx.state),
        answered_by=call.answered_by,
    )


class RequestContextMiddleware:
    """Creates the :class:`RequestContext`, tags every response with ``x-request-id``
    and turns every failure into a correctly-shaped error response."""

    def __init__(self, app: ASGIApp, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway
        self.id_header = gateway.config.gateway.request_id_header.lower().encode("latin-1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = None
        for key, value in scope["headers"]:
            if key == self.id_header:
                if _WELL_FORMED_ID.match(value):
                    request_id = value.decode("ascii")
                break
        if request_id is None:
            request_id = "req_" + os.urandom(12).hex()
        ctx = RequestContext(self.gateway, scope, receive, request_id)
        scope[CONTEXT_KEY] = ctx
        ctx.route = self.gateway.routes.match(scope, ctx)
        encoded_id = request_id.encode("ascii")
        if ctx.route is not None:
            dialect = ctx.route.dialect
        else:
            dialect = ctx.state.get("path_dialect", "openai")
        id_headers = [(self.id_header, encoded_id)]
        if dialect == "anthropic" and self.id_header != _ANTHROPIC_ID_HEADER:
            # What the Anthropic SDK reads into ``request_id`` on answers and errors.
            id_headers.append((_ANTHROPIC_ID_HEADER, encoded_id))
        response_started = False
        status = 0
        failure: GatewayError | None = None

        async def send_with_id(message: Message) -> None:
            nonlocal response_started, status
            kind = message["type"]
            if kind == "http.response.start":
                response_started = True
                status = message["status"]
                # A new message: the caller's may be shared between requests.
                message = {**message, "headers": [*message.get("headers", ()), *id_headers]}
            elif kind == "http.response.body" and not message.get("more_body", False):
                ctx.responded = True
            await send(message)

        gateway = self.gateway
        events = gateway.events
        if events.enabled:
            events.emit(RequestStarted(
                request_id=request_id, method=scope["method"], path=scope["path"],
                route=ctx.route.name if ctx.route is not None else None,
                client=scope["client"][0] if scope.get("client") else None,
            ))
        task = ctx.task = asyncio.current_task()
        inflight = gateway.inflight
        inflight.add(ctx)
        stats = gateway.stats
        stats.started(len(inflight))
        try:
            if not gateway.started:
                await gateway.ensure_started()
            await self.app(scope, receive, send_with_id)
        except GatewayError as error:
            failure = error
            if response_started:
                log.warning("request %s: %s after the response started", request_id, error)
            else:
                await _close_unless_drained(ctx, error)
                await render_error(send_with_id, error, dialect, request_id)
        except ClientDisconnected:
            ctx.state["disconnected"] = True
            log.debug("request %s: client disconnected", request_id)
        except asyncio.CancelledError:
            if ctx.interrupted is None or task is None:
                raise
            # Our own interruption, not the server's: absorb it.
            task.uncancel()
            if task.cancelling():
                raise
            if ctx.interrupted == "shutdown" and not response_started:
                failure = ServiceUnavailable(
                    "The gateway is shutting down; retry shortly.",
                    code="server_shutdown",
                    retry_after=1,
                    headers={"connection": "close"},
                )
                await render_error(send_with_id, failure, dialect, request_id)
            else:
                log.debug("request %s: ended early (%s)", request_id, ctx.interrupted)
        except Exception:
            log.exception("request %s failed", request_id)
            failure = _InternalError(
                f"The gateway hit an internal error (request id {request_id}).")
            if not response_started:
                await _close_unless_drained(ctx, failure)
                await render_error(send_with_id, failure, dialect, request_id)
        finally:
            inflight.discard(ctx)
            stats.ended(ctx.elapsed)
            if events.enabled:
                events.emit(request_ended(ctx, status, failure))
            # The context, its scope, its call and a failure's traceback (whose frames
            # hold them all) point at each other: unlinked here, they are freed by
            # reference counting as the request ends, and never wait for the cyclic
            # garbage collector, whose passes stall every request in flight.
            call, ctx.call = ctx.call, None
            if call is not None:
                _drop_tracebacks(call.error)
                call.error = None
            _drop_tracebacks(failure)
            failure = None
            scope.pop(CONTEXT_KEY, None)
