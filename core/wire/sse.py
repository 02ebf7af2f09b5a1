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
    """Feed bytes in, get whole events out.

    Each feed scans only the new bytes, so the cost is linear in the stream. A
    line or event larger than ``max_event_bytes`` raises ``ValueError``: an
    upstream that never ends a line cannot grow our memory without bound.
    """

    __slots__ = ("_buffer", "_data", "_data_size", "_event", "max_event_bytes")

    def __init__(self, max_event_bytes: int = 4 * 1024 * 1024) -> None:
        self._buffer = b""
        self._event: str | None = None
        self._data: list[bytes] = []
        self._data_size = 0
        self.max_event_bytes = max_event_bytes

    def feed(self, chunk: bytes) -> Iterator[SSEEvent]:
        buffer = self._buffer + chunk if self._buffer else chunk
        start = 0
        end = len(buffer)
        while start < end:
            # Lines end in \n, \r\n or \r; find the earliest complete one.
            nl = buffer.find(b"\n", start)
            cr = buffer.find(b"\r", start, nl if nl >= 0 else end)
            if cr >= 0:
                if cr == end - 1:
                    break  # a lone \r at the end may be half of \r\n
                stop, skip = cr, 2 if buffer[cr + 1 : cr + 2] == b"\n" else 1
            elif nl >= 0:
                stop, skip = nl, 1
            else:
                break
            event = self._line(buffer[start:stop])
            start = stop + skip
            if event is not None:
                yield event
        self._buffer = buffer[start:]
        if len(self._buffer) > self.max_event_bytes:
            raise ValueError(f"an event line exceeds {self.max_event_bytes} bytes")

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
            data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
            event = SSEEvent(self._event, data)
            self._event, self._data, self._data_size = None, [], 0
            return event
        if line[0] == 58:  # b":" a comment or keep-alive
            return None
        field, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if field == b"data":
            self._data_size += len(value)
            if self._data_size > self.max_event_bytes:
                raise ValueError(f"an event exceeds {self.max_event_bytes} bytes")
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
