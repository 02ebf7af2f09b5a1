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

from ..context import CONTEXT_KEY, RequestContext
from ..errors import ClientDisconnected, GatewayError, ServiceUnavailable
from ..responses import encode_headers, send_bytes
from ..wire import anthropic, openai

if TYPE_CHECKING:
    from ..app import Gateway
    from ..components import ASGIApp, Message, Receive, Scope, Send

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

        async def send_with_id(message: Message) -> None:
            nonlocal response_started
            kind = message["type"]
            if kind == "http.response.start":
                response_started = True
                # A new message: the caller's may be shared between requests.
                message = {**message, "headers": [*message.get("headers", ()), *id_headers]}
            elif kind == "http.response.body" and not message.get("more_body", False):
                ctx.responded = True
            await send(message)

        gateway = self.gateway
        task = ctx.task = asyncio.current_task()
        inflight = gateway.inflight
        inflight.add(ctx)
        try:
            if not gateway.started:
                await gateway.ensure_started()
            await self.app(scope, receive, send_with_id)
        except GatewayError as error:
            if response_started:
                log.warning("request %s: %s after the response started", request_id, error)
            else:
                await render_error(send_with_id, error, dialect, request_id)
        except ClientDisconnected:
            log.debug("request %s: client disconnected", request_id)
        except asyncio.CancelledError:
            if ctx.interrupted is None or task is None:
                raise
            # Our own interruption, not the server's: absorb it.
            task.uncancel()
            if task.cancelling():
                raise
            if ctx.interrupted == "shutdown" and not response_started:
                await render_error(
                    send_with_id,
                    ServiceUnavailable(
                        "The gateway is shutting down; retry shortly.",
                        code="server_shutdown",
                        retry_after=1,
                    ),
                    dialect,
                    request_id,
                )
            else:
                log.debug("request %s: ended early (%s)", request_id, ctx.interrupted)
        except Exception:
            log.exception("request %s failed", request_id)
            if not response_started:
                await render_error(
                    send_with_id,
                    _InternalError(f"The gateway hit an internal error (request id {request_id})."),
                    dialect,
                    request_id,
                )
        finally:
            inflight.discard(ctx)
