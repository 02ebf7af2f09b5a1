"""Per-request state, created once at the edge and carried in the ASGI scope."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import msgspec

from ..errors import ClientDisconnected, InvalidRequest, PayloadTooLarge, RequestTimeout

if TYPE_CHECKING:
    from ..calls import ModelCall
    from ..components import Principal, Receive, Route, Scope
    from .app import Gateway

__all__ = ["CONTEXT_KEY", "RequestContext", "absorb_cancel"]

CONTEXT_KEY = "sluiceway.context"

_decode = msgspec.json.Decoder().decode

# Reasons the handler's own timers interrupt a request for; they are absorbed
# by the handler, while outside reasons end the request.
_TIMER_REASONS = frozenset({"deadline", "body_timeout"})


def absorb_cancel() -> bool:
    """Undo our own cancellation of this task; False if it was cancelled from
    outside as well (then that cancellation must go on)."""
    task = asyncio.current_task()
    assert task is not None
    task.uncancel()
    return task.cancelling() == 0


class RequestContext:
    """What the gateway knows about one request.

    Found at ``scope["sluiceway.context"]`` by every middleware and endpoint.
    The body is read and parsed at most once (:meth:`body`, :meth:`json`), so
    later stages reuse it. ``call`` is the request's
    :class:`~sluiceway.ModelCall` on routes that call a model (``None`` until
    the call is prepared, and on other routes). ``state`` is free for plugins;
    namespace keys by plugin name.
    """

    __slots__ = (
        "_body",
        "_body_started",
        "_json",
        "call",
        "gateway",
        "interrupted",
        "pending_interrupt",
        "principal",
        "receive",
        "request_id",
        "responded",
        "route",
        "scope",
        "started",
        "state",
        "task",
    )

    def __init__(self, gateway: Gateway, scope: Scope, receive: Receive, request_id: str) -> None:
        self.gateway = gateway
        self.scope = scope
        self.receive = receive
        self.request_id = request_id
        self.started = time.perf_counter()
        self.route: Route | None = None
        self.principal: Principal | None = None
        # The request's model call, once its body is parsed and its model resolved.
        self.call: ModelCall | None = None
        self.state: dict[str, Any] = {}
        self.task: asyncio.Task[Any] | None = None
        # Why the request task was cancelled from outside: "client_disconnected"
        # or "shutdown". Handlers read it to decide how to end the response.
        self.interrupted: str | None = None
        # An outside reason (hang-up, shutdown) that arrived while one of the
        # handler's own timers had already interrupted the task.
        self.pending_interrupt: str | None = None
        # True once the final body message is sent: nothing may cancel the task after.
        self.responded = False
        self._body: bytes | None = None
        self._body_started = False
        self._json: Any = None

    def header(self, name: bytes) -> str | None:
        """The first value of a request header (``name`` in lower case), or ``None``."""
        for key, value in self.scope["headers"]:
            if key == name:
                decoded: str = value.decode("latin-1")
                return decoded
        return None

    def query_params(self) -> dict[str, str]:
        """The URL's query parameters (the last of a repeated one), decoded."""
        raw = self.scope.get("query_string", b"")
        return dict(parse_qsl(raw.decode("latin-1"))) if raw else {}

    async def body(self) -> bytes:
        """The request body, read once. Refused with 413 past ``max_body_size``
        (before it is all read, and at once when Content-Length says so), and
        with 408 if it does not arrive within ``body_timeout``."""
        if self._body is not None:
            return self._body
        settings = self.gateway.config.gateway
        limit = settings.max_body_size
        declared = self.header(b"content-length")
        if declared is not None and declared.isascii() and declared.isdecimal():
            if int(declared) > limit:
                raise PayloadTooLarge(f"Request body is larger than the limit of {limit} bytes.")
        chunks: list[bytes] = []
        size = 0
        self._body_started = True
        # A timer handle that interrupts the task costs far less than
        # asyncio.timeout on every request, and it almost never fires.
        timer = asyncio.get_running_loop().call_later(
            settings.body_timeout, self.interrupt, "body_timeout"
        )
        try:
            while True:
                message = await self.receive()
                if message["type"] == "http.disconnect":
                    raise ClientDisconnected("the client hung up while sending the body")
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(
                        f"Request body is larger than the limit of {limit} bytes."
                    )
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
        except asyncio.CancelledError:
            if not self.resume("body_timeout"):
                raise
            raise RequestTimeout(
                f"The request body did not arrive within {settings.body_timeout:g}s."
            ) from None
        finally:
            timer.cancel()
        self._body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return self._body

    async def discard_unread_body(self, up_to: int = 65536, wait: float = 1.0) -> bool:
        """Before answering without reading the body (a refusal by auth or a
        policy): read and drop a small unread body, so that the connection can
        serve the client's next request. False when the connection cannot be
        reused (a body partly read, larger than ``up_to``, or slow): the answer
        should then say ``connection: close``, or a pooling client may send its
        next request into a connection the server is closing."""
        if self._body is not None:
            return True
        if self._body_started or self.gateway.draining:
            return False  # shutting down: answer now; the connection closes anyway
        declared = self.header(b"content-length")
        if declared is None and self.header(b"transfer-encoding") is None:
            return True  # no body at all
        if declared is not None and (not declared.isdecimal() or int(declared) > up_to):
            return False
        self._body_started = True
        size = 0
        try:
            async with asyncio.timeout(wait):
                while True:
                    message = await self.receive()
                    if message["type"] == "http.disconnect":
                        return False
                    size += len(message.get("body", b""))
                    if size > up_to:
                        return False
                    if not message.get("more_body", False):
                        return True
        except TimeoutError:
            return False
        except asyncio.CancelledError:
            # Our own interruption (shutdown, a hang-up) while draining: give up on
            # the connection, but still send the answer.
            if self.interrupted is None or not absorb_cancel():
                raise
            return False

    async def json(self) -> Any:
        """The body parsed as JSON, once; 400 if it is not JSON."""
        if self._json is None:
            body = await self.body()
            if not body:
                raise InvalidRequest(
                    "The request body is empty; expected a JSON object.", code="invalid_json"
                )
            try:
                self._json = _decode(body)
            except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                raise InvalidRequest(
                    f"We could not parse the JSON body of your request: {exc}.",
                    code="invalid_json",
                ) from None
            except RecursionError:
                # msgspec stops at Python's recursion limit (about 1000 levels).
                raise InvalidRequest(
                    "The JSON body is nested too deeply.", code="json_too_deep"
                ) from None
        return self._json

    def interrupt(self, reason: str) -> None:
        """Cancel the request's task from outside, recording why. Does nothing once
        the response is complete."""
        if self.responded:
            return
        if self.interrupted is not None:
            if self.interrupted in _TIMER_REASONS and reason not in _TIMER_REASONS:
                self.pending_interrupt = reason
            return
        if self.task is not None and not self.task.done():
            self.interrupted = reason
            self.task.cancel(reason)

    def resume(self, reason: str) -> bool:
        """Absorb our own interruption for ``reason`` (a timer of the handler's that
        fired), so the handler can answer instead; False if it was anything else."""
        if self.interrupted != reason or self.task is None:
            return False
        if self.pending_interrupt is not None:
            # The client left (or the gateway is stopping) meanwhile: that wins.
            self.interrupted, self.pending_interrupt = self.pending_interrupt, None
            return False
        self.interrupted = None
        self.task.uncancel()
        if self.task.cancelling():
            return False  # cancelled from outside as well: let that through
        return True

    @property
    def elapsed(self) -> float:
        """Seconds since the request arrived."""
        return time.perf_counter() - self.started
