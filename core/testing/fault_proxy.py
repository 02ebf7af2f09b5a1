"""A fault-injecting HTTP proxy on a real loopback socket, for any provider's upstream.

:class:`FaultProxy` sits between the gateway and an upstream (a provider's own
fake): each request is forwarded to ``target`` as it came, and its answer piped
back, unless a scripted fault answers instead (``fail(status, body, headers)``,
one per request, in order). ``trickle()`` makes the next answers go back a few
bytes at a time with pauses, so a stream is still arriving when its client hangs
up; the proxy sees the gateway close the connection and counts it in
``disconnects``. ``arrivals`` holds the monotonic time each request came in.

Each connection carries one request (the answer says ``connection: close``), so
the proxy never has to find where an answer ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .faults import response_head

__all__ = ["FaultProxy", "ScriptedAnswer"]


@dataclass(frozen=True, slots=True)
class ScriptedAnswer:
    """What the proxy answers instead of the upstream."""

    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)


class FaultProxy:
    """Forward to ``target`` (``http://host:port``), with scripted faults."""

    def __init__(self, target: str, *, piece: int = 16, pause: float = 0.05) -> None:
        parts = urlsplit(target)
        self.host, self.port_to = parts.hostname or "127.0.0.1", parts.port or 80
        self.piece, self.pause = piece, pause
        self.port = 0
        self.arrivals: list[float] = []
        self.disconnects = 0
        self.errors: list[BaseException] = []
        self._script: deque[ScriptedAnswer] = deque()
        self._trickle = False
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail(self, status: int, body: bytes = b"", headers: Mapping[str, str] | None = None
             ) -> None:
        """Answer the next unscripted request with ``status`` instead of forwarding it."""
        with self._lock:
            self._script.append(ScriptedAnswer(status, body, dict(headers or {})))

    def trickle(self, on: bool = True) -> None:
        """Send answers back ``piece`` bytes at a time, ``pause`` seconds apart."""
        self._trickle = on

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> FaultProxy:
        ready = threading.Event()

        def run() -> None:
            try:
                asyncio.run(self._main(ready))
            except BaseException as exc:
                self.errors.append(exc)
                ready.set()

        self._thread = threading.Thread(target=run, name="sluiceway-fault-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(10) or not self.port:
            raise RuntimeError(f"the fault proxy did not start: {self.errors!r}")
        return self

    def stop(self) -> None:
        if self._thread is None or self._loop is None or self._stopping is None:
            return
        self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(10)

    async def _main(self, ready: threading.Event) -> None:
        self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        await self._stopping.wait()
        server.close()

    # -- serving -----------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            chunked = False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value.strip())
                elif name == b"transfer-encoding":
                    chunked = b"chunked" in value.lower()
            if chunked:  # gateways send Content-Length; anything else is not this proxy's
                writer.write(response_head(411, {"connection": "close"}, 0))
                await writer.drain()
                return
            body = await reader.readexactly(length)
            self.arrivals.append(time.monotonic())
            with self._lock:
                scripted = self._script.popleft() if self._script else None
            if scripted is not None:
                headers = {"content-type": "application/json", "connection": "close",
                           **scripted.headers}
                writer.write(response_head(scripted.status, headers, len(scripted.body))
                             + scripted.body)
                await writer.drain()
                return
            await self._forward(head, body, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except Exception as exc:  # a bug in the proxy: surfaced by the fixture
            self.errors.append(exc)
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _forward(self, head: bytes, body: bytes, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
        lines = [line for line in head.split(b"\r\n") if line and not line.lower().startswith(
            (b"connection:", b"keep-alive:"))]
        request = b"\r\n".join([*lines, b"connection: close"]) + b"\r\n\r\n" + body
        up_reader, up_writer = await asyncio.open_connection(self.host, self.port_to)
        gone = asyncio.ensure_future(reader.read(1))  # b"": the gateway hung up
        try:
            up_writer.write(request)
            await up_writer.drain()
            answer_head = await up_reader.readuntil(b"\r\n\r\n")
            kept = [line for line in answer_head.split(b"\r\n") if line and not
                    line.lower().startswith((b"connection:", b"keep-alive:"))]
            writer.write(b"\r\n".join([*kept, b"connection: close"]) + b"\r\n\r\n")
            await writer.drain()
            trickle = self._trickle
            while True:
                # The gateway's hang-up is seen even while the upstream says nothing.
                read = asyncio.ensure_future(up_reader.read(self.piece if trickle else 65536))
                await asyncio.wait({read, gone}, return_when=asyncio.FIRST_COMPLETED)
                if gone.done():
                    read.cancel()
                    self.disconnects += 1
                    return
                data = read.result()
                if not data:
                    return
                writer.write(data)
                await writer.drain()
                if trickle:
                    await asyncio.wait({gone}, timeout=self.pause)
        except (ConnectionError, OSError):
            # Only the gateway's side counts: the upstream's failures are not hang-ups.
            if gone.done() or writer.is_closing():
                self.disconnects += 1
        finally:
            gone.cancel()
            up_writer.close()
