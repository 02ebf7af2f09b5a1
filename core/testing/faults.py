"""The faults :class:`~sluiceway.testing.fakes.FakeOpenAI` can be scripted to commit, and
the raw HTTP/1.1 connection that commits them (RST via SO_LINGER 0, FIN mid-body).

Each is a frozen dataclass. A stream's "chunks" are its ``data:`` events;
``after_chunks`` counts those sent before the fault strikes. On a non-stream
request ``Reset`` resets before any answer, ``Close`` sends the headers and half
the body, ``Stall`` stalls between headers and body, ``ErrorEvent`` answers 500,
and the stream-only faults (``ChunkDelay``, ``NoDone``, ``Comments``) do nothing.
``ToolCall`` is not a fault but a scripted answer: a function call instead of text.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, TypeAlias

__all__ = [
    "ChunkDelay",
    "Close",
    "Comments",
    "Delay",
    "ErrorEvent",
    "Fault",
    "Garbage",
    "Hang",
    "NoDone",
    "Reset",
    "Stall",
    "Status",
    "ToolCall",
    "answer_deltas",
    "answer_message",
    "error_body",
    "json_bytes",
    "text_of",
]


@dataclass(frozen=True, slots=True)
class Status:
    """Answer ``code``; ``body`` is JSON (dict), raw bytes, or ``None`` for an OpenAI
    error object. ``headers`` are added (e.g. ``{"retry-after": "2"}``)."""

    code: int
    body: dict[str, Any] | bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Delay:
    """Wait ``seconds`` before sending the headers, then answer normally."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Hang:
    """Accept the request and never answer, until the client goes away."""


@dataclass(frozen=True, slots=True)
class ChunkDelay:
    """Wait ``seconds`` before each stream chunk after the first."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Stall:
    """Send ``after_chunks`` chunks, then go silent for ``seconds`` (then go on)."""

    after_chunks: int = 1
    seconds: float = 3600.0


@dataclass(frozen=True, slots=True)
class Reset:
    """Reset the connection (TCP RST, SO_LINGER 0) after ``after_chunks`` chunks, or,
    when it is ``None`` (and always for non-stream requests), before any answer."""

    after_chunks: int | None = 1


@dataclass(frozen=True, slots=True)
class Close:
    """Close the connection cleanly (FIN) after ``after_chunks`` chunks, without the
    terminating chunk: the body is truncated."""

    after_chunks: int = 1


@dataclass(frozen=True, slots=True)
class NoDone:
    """End the stream properly, but without ``data: [DONE]``."""


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    """Send ``data: {"error": {...}}`` after ``after_chunks`` chunks and end the stream."""

    after_chunks: int = 1
    message: str = "The fake upstream failed mid-stream."
    code: str | None = "server_error"


@dataclass(frozen=True, slots=True)
class Garbage:
    """Answer 200 with ``data`` as the body: invalid JSON, or garbage instead of SSE."""

    data: bytes = b"\x00\xffthis is not json {"


@dataclass(frozen=True, slots=True)
class Comments:
    """Send an SSE comment (``: keep-alive``) before every stream chunk."""


@dataclass(frozen=True, slots=True)
class ToolCall:
    """Answer with a call of ``name`` (default: the request's first tool) with
    ``arguments``, whose JSON is streamed in pieces as text would be, ending with
    ``finish_reason: "tool_calls"``."""

    arguments: Mapping[str, Any] = field(default_factory=dict)
    name: str | None = None
    id: str = "call_fake_1"

    def function_name(self, body: Mapping[str, Any]) -> str:
        tools = body.get("tools") or [{}]
        name = self.name or (tools[0].get("function") or {}).get("name")
        return str(name or "tool")


def answer_message(call: ToolCall | None, body: Mapping[str, Any], text: str
                   ) -> tuple[dict[str, Any], str]:
    """A non-streamed answer's message and finish reason: ``text``, or the call
    (``text`` is then its arguments)."""
    if call is None:
        return {"role": "assistant", "content": text}, "stop"
    return {"role": "assistant", "content": None, "tool_calls": [{
        "id": call.id, "type": "function",
        "function": {"name": call.function_name(body), "arguments": text},
    }]}, "tool_calls"


def answer_deltas(call: ToolCall | None, body: Mapping[str, Any], pieces: list[str]
                  ) -> tuple[list[dict[str, Any]], str]:
    """A streamed answer's deltas in OpenAI's form (the first one carries the role,
    and names the call if there is one), and its finish reason."""
    deltas: list[dict[str, Any]]
    if call is None:
        deltas = [{"content": piece} for piece in pieces]
        deltas[0] = {"role": "assistant", "content": pieces[0]}
        return deltas, "stop"
    deltas = [{"tool_calls": [{"index": 0, "function": {"arguments": p}}]} for p in pieces]
    deltas[0] = {"role": "assistant", "content": None, "tool_calls": [{
        "index": 0, "id": call.id, "type": "function",
        "function": {"name": call.function_name(body), "arguments": pieces[0]},
    }]}
    return deltas, "tool_calls"


Fault: TypeAlias = (
    Status | Delay | Hang | ChunkDelay | Stall | Reset | Close | NoDone | ErrorEvent | Garbage
    | Comments | ToolCall
)


_ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                429: "rate_limit_error"}

def json_bytes(value: Any) -> bytes:
    """Compact JSON, as upstreams send it."""
    return json.dumps(value, separators=(",", ":")).encode()


def error_body(message: str, status: int, code: str | None = None) -> dict[str, Any]:
    """An OpenAI error object of the type that goes with ``status``."""
    kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "code": code, "param": None}}


def text_of(content: Any) -> str:
    """A message's text, whether a string or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


END_CHUNK = b"0\r\n\r\n"


def response_head(status: int, headers: Mapping[str, str], length: int | None) -> bytes:
    """An HTTP/1.1 status line and headers; chunked when ``length`` is ``None``."""
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines.append("transfer-encoding: chunked" if length is None else f"content-length: {length}")
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body."""
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


class Connection:
    """One client connection of a fake server: a read buffer, a watch for the client
    leaving, and the two ways of dropping it (clean FIN, or RST)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.buffer = bytearray()
        self.gone = asyncio.Event()  # the client closed or reset the connection
        self.closing = False  # we closed it on purpose

    async def fill(self) -> bool:
        data = await self.reader.read(65536)
        self.buffer += data
        return bool(data)

    async def watch(self) -> None:
        with contextlib.suppress(OSError):
            while await self.fill():
                pass
        self.gone.set()

    async def read_request(self) -> tuple[str, str, dict[str, str], bytes] | None:
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            if self.gone.is_set() or len(self.buffer) > 65536 or not await self.fill():
                return None
        head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        del self.buffer[: end + 4]
        method, target, _ = head[0].split(" ", 2)
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length") or 0)
        while len(self.buffer) < length:
            if not await self.fill():
                return None
        body = bytes(self.buffer[:length])
        del self.buffer[:length]
        return method, target, headers, body

    async def send(self, data: bytes) -> bool:
        """Write and drain; ``False`` if the client has gone."""
        if self.gone.is_set():
            return False
        try:
            self.writer.write(data)
            await self.writer.drain()
        except OSError:
            self.gone.set()
        return not self.gone.is_set()

    async def pause(self, seconds: float) -> bool:
        """Sleep, waking early if the client goes; ``False`` if it has gone."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.gone.wait()
        return not self.gone.is_set()

    async def close(self, *, reset: bool) -> None:
        self.closing = True
        if reset:
            sock = self.writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.writer.transport.abort()
        else:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
