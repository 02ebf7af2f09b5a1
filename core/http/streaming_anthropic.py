"""Relaying a stream to an Anthropic Messages client as Anthropic server-sent events.

Two sources: a provider's OpenAI chunks, translated event by event
(:class:`TranslatedEvents`), or a provider that speaks Anthropic natively, whose
events are passed through as received (:class:`NativeEvents`, which decodes only
the two events that carry usage). Every frame has its ``event:`` line: the
Anthropic SDK skips frames without one.

As on the OpenAI routes, the response is committed only once the first chunk
has arrived (so a provider that fails early still gets a proper HTTP status, in
Anthropic's shape), a failure after that ends the stream with an ``event:
error`` frame (which the SDK raises), and a client that hangs up cancels the
provider's work at once.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import msgspec

from ..errors import GatewayError, UpstreamError
from ..wire.anthropic import error_event
from ..wire.anthropic_stream import AnthropicEventStream
from ..wire.sse import event_frame
from ..wire.usage import Usage
from .streaming import (
    EventSource,
)

if TYPE_CHECKING:
    from ..calls import HeldStream, ModelCall

__all__ = ["EventSource", "NativeEvents", "TranslatedEvents"]

log = logging.getLogger("sluiceway.stream")
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode

Header = tuple[bytes, bytes]


class _AnthropicEvents(EventSource):
    """A stream to an Anthropic client: a failure ends it with an ``error`` event."""

    __slots__ = ()

    def error_frame(self, error: GatewayError) -> bytes:
        return error_event(error)


class TranslatedEvents(_AnthropicEvents):
    """OpenAI chunks (objects, or their JSON as bytes) in, Anthropic events out."""

    __slots__ = ("translator",)

    def __init__(self, call: ModelCall, first: Any, rest: HeldStream[Any],
                 provider: str, *, model: str) -> None:
        super().__init__(call, first, rest, provider)
        self.translator = AnthropicEventStream(model=model)

    def render(self, item: Any) -> bytes:
        chunk = item
        if isinstance(item, bytes):
            try:
                chunk = _decode(item)
            except (msgspec.DecodeError, UnicodeDecodeError):
                chunk = None
        if not isinstance(chunk, dict):
            raise UpstreamError(
                f"Provider {self.provider!r} streamed a chunk that is not a JSON object.",
                code="upstream_invalid_response",
            )
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            # Recorded before the closing frames go out: the call is settled
            # just before the last frame, and metrics read it after.
            self.call.usage = Usage.from_openai(usage)
        return _frames(self.translator.feed(chunk))

    def tail(self) -> bytes:
        return _frames(self.translator.finish())


class NativeEvents(_AnthropicEvents):
    """``(event, data)`` pairs from a provider that speaks Anthropic, passed through."""

    __slots__ = ("done", "usage")

    def __init__(self, call: ModelCall, first: Any, rest: HeldStream[Any],
                 provider: str) -> None:
        super().__init__(call, first, rest, provider)
        self.usage: dict[str, Any] = {}
        self.done = False

    def render(self, item: Any) -> bytes:
        name, data = item
        if name == "message_start" or name == "message_delta":
            self._sniff_usage(name, data)
        elif name == "message_stop":
            self.done = True
        return event_frame(name, data)

    def _sniff_usage(self, name: str, data: bytes) -> None:
        try:
            event = _decode(data)
        except (msgspec.DecodeError, UnicodeDecodeError):
            return
        if not isinstance(event, dict):
            return
        if name == "message_start":
            message = event.get("message")
            usage = message.get("usage") if isinstance(message, dict) else None
        else:
            usage = event.get("usage")
        if isinstance(usage, dict):
            # message_delta's counts are cumulative: they replace message_start's.
            self.usage.update((k, v) for k, v in usage.items() if v is not None)
            self.call.usage = Usage.from_anthropic(self.usage)

    def tail(self) -> bytes:
        if not self.done:
            raise UpstreamError(
                f"Provider {self.provider!r} ended the stream without message_stop; the "
                "answer may be incomplete.",
                code="upstream_stream_truncated",
            )
        return b""


def _frames(events: list[tuple[str, dict[str, Any]]]) -> bytes:
    return b"".join(event_frame(name, _encode(data)) for name, data in events)
