"""The SSE decoder: every way a stream can be cut into reads gives the same events."""

from __future__ import annotations

import pytest

from sluiceway.wire.sse import SSEDecoder, SSEEvent, data_frame, event_frame

STREAM = (
    b": keep-alive comment\n\n"
    + data_frame(b'{"a":1}')
    + b'event: message_start\r\ndata: {"b":"\xc3\xa9\xf0\x9f\x98\x80"}\r\n\r\n'
    + b"data: line one\ndata: line two\n\n"
    + event_frame("ping", b"{}")
    + b"data:no-space\r\r"
    + b"data: [DONE]\n\n"
)
EXPECTED = [
    SSEEvent(None, b'{"a":1}'),
    SSEEvent("message_start", '{"b":"é😀"}'.encode()),
    SSEEvent(None, b"line one\nline two"),
    SSEEvent("ping", b"{}"),
    SSEEvent(None, b"no-space"),
    SSEEvent(None, b"[DONE]"),
]


def _decode(pieces: list[bytes]) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events = [event for piece in pieces for event in decoder.feed(piece)]
    return events + list(decoder.flush())


def test_whole_stream() -> None:
    assert _decode([STREAM]) == EXPECTED


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_split_at_every_byte(cut: int) -> None:
    assert _decode([STREAM[:cut], STREAM[cut:]]) == EXPECTED


def test_one_byte_at_a_time() -> None:
    assert _decode([STREAM[i : i + 1] for i in range(len(STREAM))]) == EXPECTED


def test_a_final_event_without_a_blank_line_is_flushed() -> None:
    assert _decode([b"data: tail"]) == [SSEEvent(None, b"tail")]


def test_an_endless_line_is_refused() -> None:
    decoder = SSEDecoder(max_event_bytes=1024)
    with pytest.raises(ValueError, match="exceeds 1024 bytes"):
        for _ in range(10):
            list(decoder.feed(b"x" * 200))


def test_an_endless_event_is_refused() -> None:
    decoder = SSEDecoder(max_event_bytes=1024)
    with pytest.raises(ValueError, match="exceeds 1024 bytes"):
        for _ in range(10):
            list(decoder.feed(b"data: " + b"y" * 200 + b"\n"))
