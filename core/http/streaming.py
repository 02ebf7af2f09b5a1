"""Relaying a provider's chunks to the client as server-sent events.

The response is committed (status 200 sent) only when the first chunk has
arrived, so a provider that fails before producing anything still gets a proper
HTTP error status. After that, a failure becomes an error frame in the stream
and a clean end: never a silent cut, which the OpenAI SDK would take for a
complete answer. A client that hangs up cancels the provider's work at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from ..errors import GatewayError, ServiceUnavailable, UpstreamError
from ..events import FirstToken
from ..wire import openai
from ..wire.sse import DONE, data_frame
from ..wire.usage import Usage
from .context import absorb_cancel

if TYPE_CHECKING:
    from ..calls.call import ModelCall
    from ..calls.dispatch import HeldStream
    from ..components import Send
    from .context import RequestContext

__all__ = [
    "SSE_HEADERS",
    "DisconnectWatch",
    "EventSource",
    "absorb_cancel",
    "end_with_error",
    "first_token",
    "relay_event_stream",
    "relay_openai_stream",
    "shutdown_error",
    "stream_failed",
    "until_disconnect",
]

log = logging.getLogger("sluiceway.stream")
_encode = msgspec.json.Encoder().encode

T = TypeVar("T")
Chunk = dict[str, Any] | bytes

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]

_SHUTDOWN_MESSAGE = "The gateway is shutting down; the stream was ended early."


class EventSource:
    """An opened stream: its first item, the rest (holding the deployment's pool
    slot), and how each item becomes SSE bytes. Closed exactly once by the relay."""

    __slots__ = ("call", "first", "provider", "rest")

    def __init__(self, call: ModelCall, first: Any, rest: HeldStream[Any],
                 provider: str) -> None:
        self.call = call
        self.first = first
        self.rest = rest
        self.provider = provider

    def render(self, item: Any) -> bytes:
        """The frames for one item (empty when it gives none)."""
        raise NotImplementedError

    def head(self) -> bytes:
        """The frames that open the stream, before the first item's."""
        return b""

    def tail(self) -> bytes:
        """The closing frames, once the rest is exhausted; raises if the stream
        ended too early."""
        raise NotImplementedError

    def error_frame(self, error: GatewayError) -> bytes:
        """The frame that ends a stream failing after it started, in its dialect."""
        raise NotImplementedError

    async def aclose(self) -> None:
        await self.rest.aclose()


SourceOpener = Callable[[], Awaitable[tuple[EventSource, list[tuple[bytes, bytes]]]]]


async def relay_event_stream(
    call: ModelCall, send: Send, open_stream: SourceOpener, finish: Finish
) -> None:
    """Open a stream (an :class:`EventSource` and the response headers) and send its
    frames; ``finish()`` (the call's settlement) runs just before the last one. The
    client's hang-up is watched from the start, so it also cancels the wait for
    the first chunk. A failure after the start ends with the source's error frame."""
    watcher = DisconnectWatch(call.context)
    committed = False
    source: EventSource | None = None

    def error_frame(error: GatewayError) -> bytes:
        assert source is not None  # only a committed stream gets an error frame
        return source.error_frame(error)

    try:
        source, headers = await open_stream()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [*SSE_HEADERS, *headers]})
        committed = True
        await send({"type": "http.response.body",
                    "body": source.head() + source.render(source.first), "more_body": True})
        first_token(call)
        async for item in source.rest:
            frames = source.render(item)
            if frames:
                await send({"type": "http.response.body", "body": frames, "more_body": True})
        tail = source.tail()
        await finish()
        await send({"type": "http.response.body", "body": tail, "more_body": False})
    except (asyncio.CancelledError, Exception) as exc:
        await stream_failed(call, send, exc, committed=committed, finish=finish,
                            frame=error_frame)
    finally:
        watcher.stop()
        if source is not None:
            await source.aclose()


async def _watch_disconnect(ctx: RequestContext) -> None:
    while True:
        message = await ctx.receive()
        if message["type"] == "http.disconnect":
            ctx.interrupt("client_disconnected")
            return


# A request answered sooner than this never pays for a watcher task; one that
# takes longer is watched from then on, so a hang-up is noticed within 20 ms.
WATCH_AFTER = 0.02


class DisconnectWatch:
    """Cancels the request (``ctx.interrupt``) when its client hangs up."""

    __slots__ = ("_ctx", "_handle", "_task")

    def __init__(self, ctx: RequestContext) -> None:
        self._ctx = ctx
        self._task: asyncio.Task[None] | None = None
        self._handle: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            WATCH_AFTER, self._start
        )

    def _start(self) -> None:
        self._handle = None
        self._task = asyncio.get_running_loop().create_task(_watch_disconnect(self._ctx))

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        if self._task is not None:
            # Let go of it: once cancelled it holds its error, whose frames hold us.
            self._task.cancel()
            self._task = None


def shutdown_error() -> ServiceUnavailable:
    return ServiceUnavailable(_SHUTDOWN_MESSAGE, code="server_shutdown", retry_after=1)


async def until_disconnect(ctx: RequestContext, work: Awaitable[T]) -> T:
    """Await ``work`` while watching for the client to hang up (which cancels it)
    or for the gateway to shut down (which answers 503)."""
    watcher = DisconnectWatch(ctx)
    try:
        return await work
    except asyncio.CancelledError:
        if ctx.interrupted == "shutdown" and absorb_cancel():
            raise shutdown_error() from None
        raise
    finally:
        watcher.stop()


_USAGE_OBJECT = b'"usage":{'
_USAGE_OBJECT_SPACED = b'"usage": {'
_decode = msgspec.json.Decoder().decode


def _usage_chunk(data: bytes) -> dict[str, Any] | None:
    """The chunk, if it carries a usage object; ``None`` otherwise or if it is not JSON."""
    try:
        chunk = _decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    if isinstance(chunk, dict) and isinstance(chunk.get("usage"), dict):
        return chunk
    return None


def _error_frame(error: GatewayError) -> bytes:
    return data_frame(openai.error_body(error))


StreamOpener = Callable[
    [], Awaitable[tuple[Chunk, AsyncIterator[Chunk], list[tuple[bytes, bytes]]]]
]
Finish = Callable[[], Awaitable[None]]


def first_token(call: ModelCall) -> None:
    """The first chunk reached the client: record the time to first token."""
    call.ttft = ttft = call.context.elapsed
    if call.events_enabled:
        deployment = call.deployment
        call.emit(FirstToken(
            request_id=call.request_id,
            provider=deployment.provider_name if deployment is not None else "",
            model=call.group.name, ttft=ttft,
        ))


async def relay_openai_stream(
    call: ModelCall, send: Send, open_stream: StreamOpener, finish: Finish,
    *, include_usage: bool,
) -> None:
    """Open a stream (its first chunk, the rest, and response headers) and send it
    as OpenAI server-sent events ending in ``data: [DONE]``; ``finish()`` runs
    just before the last frame (the call's settlement). The client's hang-up is
    watched from the start, so it also cancels the wait for the first chunk."""
    ctx = call.context
    watcher = DisconnectWatch(ctx)
    committed = False
    chunks: AsyncIterator[Chunk] | None = None

    async def write(chunk: Chunk) -> None:
        if isinstance(chunk, bytes):
            # Pass-through chunks stay bytes. Upstreams asked for usage put
            # "usage":null in every chunk, so only one whose usage is an object
            # is decoded: to record it, and to drop a usage-only chunk the
            # client did not ask for.
            if (_USAGE_OBJECT in chunk or _USAGE_OBJECT_SPACED in chunk) and (
                decoded := _usage_chunk(chunk)
            ) is not None:
                call.usage = Usage.from_openai(decoded["usage"])
                if not decoded.get("choices") and not include_usage:
                    return
            payload = chunk
        else:
            if chunk.get("usage") is not None:
                call.usage = Usage.from_openai(chunk["usage"])
                if not chunk.get("choices"):
                    if not include_usage:
                        return
                elif not include_usage:
                    chunk = {k: v for k, v in chunk.items() if k != "usage"}
            payload = _encode(chunk)
        await send({"type": "http.response.body", "body": data_frame(payload), "more_body": True})

    try:
        first, chunks, headers = await open_stream()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*SSE_HEADERS, *headers],
            }
        )
        committed = True
        await write(first)
        first_token(call)
        async for chunk in chunks:
            await write(chunk)
        await finish()
        await send({"type": "http.response.body", "body": DONE, "more_body": False})
    except (asyncio.CancelledError, Exception) as exc:
        await stream_failed(call, send, exc, committed=committed, finish=finish,
                            frame=_error_frame)
    finally:
        watcher.stop()
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()


async def stream_failed(
    call: ModelCall, send: Send, exc: BaseException, *, committed: bool, finish: Finish,
    frame: Callable[[GatewayError], bytes],
) -> None:
    """What a relay does when its stream fails with ``exc``. Before the response
    started, the error goes on up (the endpoint answers it in full, and a
    shutdown becomes a 503); after, the stream ends with an error frame in the
    client's dialect. A cancellation that is not the gateway shutting down is
    the client hanging up or the server stopping: it goes on up either way."""
    ctx = call.context
    if isinstance(exc, asyncio.CancelledError):
        if ctx.interrupted != "shutdown" or not absorb_cancel():
            raise exc
        if not committed:
            raise shutdown_error() from None
        error: GatewayError = shutdown_error()
    elif not committed:
        raise exc
    elif isinstance(exc, GatewayError):
        log.warning("request %s: stream failed after it started: %s", ctx.request_id, exc)
        error = exc
    else:
        log.error("request %s: stream failed after it started", ctx.request_id, exc_info=exc)
        error = UpstreamError(f"The stream failed on the gateway (request id {ctx.request_id}).")
    await end_with_error(call, send, error, finish, frame)


async def end_with_error(
    call: ModelCall, send: Send, error: GatewayError, finish: Finish,
    frame: Callable[[GatewayError], bytes],
) -> None:
    """End a committed stream with ``error`` as its last frame, settling first.
    The status stays 200 (it was sent); the call still records the failure."""
    call.error = error
    await finish()
    await send({"type": "http.response.body", "body": frame(error), "more_body": False})
