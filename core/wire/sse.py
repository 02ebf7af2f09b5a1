"""Server-sent events: framing for what we send, incremental parsing for what we read.

The parser works on raw bytes as they arrive, so a frame (or a UTF-8 code point)
split across reads is reassembled before it is decoded; comments (``: ...``) and
keep-alives are skipped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

__all__ = ["DONE", "SSEDecoder", "SSEEvent", "aiter_events", "data_frame", "event_frame"]

DONE = b"data: [DONE]\n\n"


def data_frame(payload: bytes) -> bytes:
    """``data: <payload>`` followed by the blank line that ends the event."""
    return b"data: " + payload + b"\n\n"


def event_frame(event: str, payload: bytes) -> bytes:
    """A named event (the Anthropic SDK skips frames without an ``event:`` line)."""
    return b"event: " + event.encode() + b"\ndata: " + payload + b"\n\n"


@dataclass(slots=True)
class SSEEvent:
    """One parsed event: its name (``None`` when the frame had no ``event:``) and data."""

    event: str | None
    data: bytes


class SSEDecoder:
    """Feed bytes in, get whole events out."""

    __slots__ = ("_buffer", "_data", "_event")

    def __init__(self) -> None:
        self._buffer = b""
        self._event: str | None = None
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> Iterator[SSEEvent]:
        self._buffer += chunk
        while True:
            # Lines end in \n, \r\n or \r; find the earliest complete one.
            nl = self._buffer.find(b"\n")
            cr = self._buffer.find(b"\r")
            if nl < 0 and cr < 0:
                return
            if cr >= 0 and (nl < 0 or cr < nl):
                if cr == len(self._buffer) - 1:
                    return  # a lone \r at the end may be half of \r\n
                end, skip = cr, 2 if self._buffer[cr + 1 : cr + 2] == b"\n" else 1
            else:
                end, skip = nl, 1
            line, self._buffer = self._buffer[:end], self._buffer[end + skip :]
            event = self._line(line)
            if event is not None:
                yield event

    def flush(self) -> Iterator[SSEEvent]:
        """Events left when the stream ends without a final blank line."""
        if self._buffer:
            event = self._line(self._buffer)
            self._buffer = b""
            if event is not None:
                yield event
        if self._data:
            event = self._line(b"")
            if event is not None:
                yield event

    def _line(self, line: bytes) -> SSEEvent | None:
        if not line:
            if not self._data:
                self._event = None
                return None
            event = SSEEvent(self._event, b"\n".join(self._data))
            self._event, self._data = None, []
            return event
        if line.startswith(b":"):
            return None
        field, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if field == b"data":
            self._data.append(value)
        elif field == b"event":
            self._event = value.decode("utf-8", "replace")
        return None


async def aiter_events(chunks: AsyncIterator[bytes]) -> AsyncIterator[SSEEvent]:
    """Parse an async stream of byte chunks into events."""
    decoder = SSEDecoder()
    async for chunk in chunks:
        for event in decoder.feed(chunk):
            yield event
    for event in decoder.flush():
        yield event
