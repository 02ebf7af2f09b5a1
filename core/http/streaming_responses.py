"""Relaying a stream to a Responses API client as its server-sent events.

Two sources, as for Anthropic clients: a provider's chat chunks, translated into
the Responses event sequence (:class:`TranslatedResponses`), or a provider that
serves the Responses API natively, whose events pass through as received
(:class:`NativeResponses`, which decodes only the last event, the one that
carries usage). A stream that fails after it started ends with an ``error``
event numbered after the last one sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec

from ..errors import GatewayError, UpstreamError
from ..wire.responses_stream import Event, ResponsesEventStream
from ..wire.sse import event_frame
from ..wire.usage import Usage
from .streaming import (
    SSE_HEADERS,
    DisconnectWatch,
    EventSource,
    Finish,
    first_token,
    stream_failed,
)

if TYPE_CHECKING:
    from ..calls import HeldStream, ModelCall
    from ..components import Send

__all__ = ["NativeResponses", "ResponsesSource", "TranslatedResponses",
           "relay_responses_stream"]

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
Header = tuple[bytes, bytes]

# The events that end a Responses stream; each carries the whole response.
_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})


def _frames(events: list[Event]) -> bytes:
    return b"".join(event_frame(name, _encode(data)) for name, data in events)


class ResponsesSource(EventSource):
    """An opened Responses stream: what comes before the first item, and how a
    failure after the start is told."""

    def head(self) -> bytes:
        """The frames that open the stream, before the first item's."""
        return b""

    def error_frame(self, error: GatewayError) -> bytes:
        raise NotImplementedError


class TranslatedResponses(ResponsesSource):
    """Chat chunks (objects, or their JSON as bytes) in, Responses events out."""

    __slots__ = ("translator",)

    def __init__(self, call: ModelCall, first: Any, rest: HeldStream[Any], provider: str,
                 body: dict[str, Any]) -> None:
        super().__init__(call, first, rest, provider)
        self.translator = ResponsesEventStream(body)

    def head(self) -> bytes:
        return _frames(self.translator.start())

    def render(self, item: Any) -> bytes:
        translator = self.translator
        events = translator.feed(item)
        if translator.usage is not None:
            # Recorded before the closing frames: the call settles just before them.
            self.call.usage = Usage.from_openai(translator.usage)
        return _frames(events)

    def tail(self) -> bytes:
        return _frames(self.translator.finish())

    def error_frame(self, error: GatewayError) -> bytes:
        return _frames([self.translator.error(error.code, error.message, error.param)])


class NativeResponses(ResponsesSource):
    """``(event type, data)`` pairs from a provider that serves Responses, passed on."""

    __slots__ = ("done", "sent")

    def __init__(self, call: ModelCall, first: Any, rest: HeldStream[Any],
                 provider: str) -> None:
        super().__init__(call, first, rest, provider)
        self.done = False
        self.sent = 0  # events passed on: the next sequence_number, as upstreams count

    def render(self, item: Any) -> bytes:
        name, data = item
        self.sent += 1
        if name in _TERMINAL:
            self.done = True
            self._sniff_usage(data)
        return event_frame(name, data)

    def _sniff_usage(self, data: bytes) -> None:
        try:
            event = _decode(data)
        except (msgspec.DecodeError, UnicodeDecodeError):
            return
        response = event.get("response") if isinstance(event, dict) else None
        if isinstance(response, dict):
            self.call.usage = Usage.from_responses(response.get("usage"))

    def tail(self) -> bytes:
        if not self.done:
            raise UpstreamError(
                f"Provider {self.provider!r} ended the stream without response.completed; "
                "the answer may be incomplete.",
                code="upstream_stream_truncated",
            )
        return b""

    def error_frame(self, error: GatewayError) -> bytes:
        event = {"type": "error", "sequence_number": self.sent, "code": error.code,
                 "message": error.message, "param": error.param}
        return event_frame("error", _encode(event))


StreamOpener = Callable[[], Awaitable[tuple[ResponsesSource, list[Header]]]]


async def relay_responses_stream(
    call: ModelCall, send: Send, open_stream: StreamOpener, finish: Finish
) -> None:
    """Open a stream (a :class:`ResponsesSource` and the response headers) and send
    it as Responses events; ``finish()`` (the call's settlement) runs just before
    the last frame. The client's hang-up is watched from the start, so it also
    cancels the wait for the first chunk."""
    watcher = DisconnectWatch(call.context)
    committed = False
    source: ResponsesSource | None = None

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
