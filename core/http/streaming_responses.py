"""Relaying a stream to a Responses API client as its server-sent events.

Two sources, as for Anthropic clients: a provider's chat chunks, translated into
the Responses event sequence (:class:`TranslatedResponses`), or a provider that
serves the Responses API natively, whose events pass through as received
(:class:`NativeResponses`, which decodes only the last event, the one that
carries usage). A stream that fails after it started ends with an ``error``
event numbered after the last one sent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from ..errors import GatewayError, UpstreamError
from ..wire.responses_stream import Event, ResponsesEventStream
from ..wire.sse import event_frame
from ..wire.usage import Usage
from .streaming import (
    EventSource,
)

if TYPE_CHECKING:
    from ..calls import HeldStream, ModelCall

__all__ = ["NativeResponses", "TranslatedResponses"]

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
Header = tuple[bytes, bytes]

# The events that end a Responses stream; each carries the whole response.
_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})


def _frames(events: list[Event]) -> bytes:
    return b"".join(event_frame(name, _encode(data)) for name, data in events)


class TranslatedResponses(EventSource):
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


class NativeResponses(EventSource):
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
