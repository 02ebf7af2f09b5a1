"""A fake OpenAI-compatible upstream on a real loopback socket, with scripted faults.

:class:`FakeOpenAI` is a raw asyncio HTTP/1.1 server (keep-alive, Content-Length
request bodies; responses with Content-Length, or chunked for streams) running
on its own event loop in a background thread, so sync and async tests alike can
point a provider or a plain HTTP client at ``fake.url``. Being raw, it can do
what an ASGI server cannot: reset the connection (RST) mid-body, close it cleanly
without the last chunk, accept and never answer, or send garbage.

Faults (:mod:`sluiceway.testing.faults`, re-exported here) are frozen dataclasses.
``fake.script(...)`` queues them, one per chat request (a tuple combines several
for one request); ``fake.always(...)`` sets the faults used when the queue is
empty. A stream is N content chunks, a finish chunk, a usage chunk when
``stream_options.include_usage`` is set, then ``data: [DONE]``. Scripting
``ToolCall(arguments=...)`` makes the answer a function call instead, its
arguments streamed in N pieces.

The server reads the socket while it answers, so it notices a client that goes
away mid-answer (``disconnects``) and stops at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from .fake_responses import FakeResponsesAPI
from .faults import (
    END_CHUNK,
    ChunkDelay,
    Close,
    Comments,
    Connection,
    Delay,
    ErrorEvent,
    Fault,
    Garbage,
    Hang,
    NoDone,
    Reset,
    Stall,
    Status,
    ToolCall,
    answer_deltas,
    answer_message,
    chunk,
    error_body,
    json_bytes,
    response_head,
    text_of,
)
from .waiting import wait_until_async

__all__ = [
    "ChunkDelay",
    "Close",
    "Comments",
    "Delay",
    "ErrorEvent",
    "FakeOpenAI",
    "Fault",
    "Garbage",
    "Hang",
    "NoDone",
    "RecordedRequest",
    "Reset",
    "Stall",
    "Status",
    "ToolCall",
]


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the fake received it; ``body`` is the parsed JSON or ``None``,
    ``path`` is without the query string, whose parameters are in ``query``."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    time: float
    query: dict[str, str] = field(default_factory=dict)


# Matched by their ends, so that Azure's /openai/deployments/{name}/... paths work too.
_CHAT, _RESPONSES, _MODELS = "/chat/completions", "/responses", "/models"
_SSE = {"content-type": "text/event-stream", "cache-control": "no-cache"}


class FakeOpenAI:
    """An OpenAI-compatible upstream on ``127.0.0.1`` with scripted faults.

    ``POST /v1/chat/completions`` answers ``"echo: <last user text>"`` (or
    ``reply``) under the request's ``model``, streamed in ``chunks`` pieces when
    ``stream`` is true; ``POST /v1/responses`` is the Responses API, with stored
    responses (:mod:`sluiceway.testing.fake_responses`); ``GET /v1/models`` lists
    ``model_ids``. ``latency`` delays
    every answer. Start with :meth:`start` (or ``with``); :meth:`stop` ends it.
    ``requests``, ``disconnects``, ``active`` and ``max_active`` may be read from
    any thread; ``errors`` holds unexpected exceptions of the server itself.
    """

    def __init__(
        self,
        *,
        chunks: int = 3,
        reply: str | None = None,
        model_ids: Sequence[str] = ("fake-model",),
        latency: float = 0.0,
    ) -> None:
        self.chunks, self.reply, self.model_ids, self.latency = chunks, reply, model_ids, latency
        self.port = 0
        self.disconnects = 0
        self.active = 0
        self.max_active = 0
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._script: deque[tuple[Fault, ...]] = deque()
        self._always: tuple[Fault, ...] = ()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._served = 0
        self.responses_api = FakeResponsesAPI(self)

    @property
    def url(self) -> str:
        """The OpenAI-style base URL, ``http://127.0.0.1:PORT/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of the requests received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    # -- faults ------------------------------------------------------------

    def script(self, *faults: Fault | tuple[Fault, ...]) -> None:
        """Queue faults, consumed one per chat request (a tuple: several for one)."""
        with self._lock:
            self._script.extend(f if isinstance(f, tuple) else (f,) for f in faults)

    def always(self, *faults: Fault) -> None:
        """The fault(s) for every chat request once the script is used up."""
        with self._lock:
            self._always = faults

    def reset(self) -> None:
        """Forget the script and the ``always`` faults: answer normally again."""
        with self._lock:
            self._script.clear()
            self._always = ()

    def _next_faults(self) -> dict[type, Any]:
        with self._lock:
            faults = self._script.popleft() if self._script else self._always
        return {type(fault): fault for fault in faults}

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> FakeOpenAI:
        """Start serving in a background thread; return once it accepts connections."""
        ready = threading.Event()

        def run() -> None:
            try:
                asyncio.run(self._main(ready))
            except BaseException as exc:
                self.errors.append(exc)
                ready.set()

        self._thread = threading.Thread(target=run, name="sluiceway-fake-openai", daemon=True)
        self._thread.start()
        if not ready.wait(10) or not self.port:
            raise RuntimeError(f"the fake upstream did not start: {self.errors!r}")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Drop every connection, stop the server and wait for its thread."""
        if self._thread is None or not self._thread.is_alive():
            return
        assert self._loop is not None and self._stopping is not None
        self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError(f"the fake upstream on port {self.port} did not stop")

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def wait_for(self, predicate: Callable[[], bool], within: float = 2.0) -> bool:
        """Poll ``predicate`` from an async test until it holds or ``within`` seconds pass."""
        return await wait_until_async(predicate, within)

    async def _main(self, ready: threading.Event) -> None:
        self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        await self._stopping.wait()
        server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- serving -----------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = Connection(reader, writer)
        try:
            while (request := await conn.read_request()) is not None:
                method, target, headers, raw = request
                path, _, query = target.partition("?")
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None
                with self._lock:
                    self._requests.append(
                        RecordedRequest(method, path, headers, body, time.monotonic(),
                                        dict(parse_qsl(query)))
                    )
                self.active += 1
                self.max_active = max(self.max_active, self.active)
                watcher = asyncio.create_task(conn.watch())
                try:
                    keep = await self._respond(conn, method, path, body)
                finally:
                    self.active -= 1
                    watcher.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await watcher
                if conn.gone.is_set() and not conn.closing:
                    self.disconnects += 1
                if not keep or headers.get("connection", "").lower() == "close":
                    break
        except asyncio.CancelledError:
            pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception as exc:  # a bug in the fake: surfaced by the fixture
            self.errors.append(exc)
        finally:
            self._tasks.discard(task)
            if conn.gone.is_set():
                writer.transport.abort()
            elif not conn.closing:
                writer.close()  # flushes what is still buffered first

    async def _respond(self, conn: Connection, method: str, path: str, body: Any) -> bool:
        """Answer one request; ``True`` if the connection may be reused."""
        if self.latency and not await conn.pause(self.latency):
            return False
        if method == "GET" and path.endswith(_MODELS):
            models = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"}
                      for m in self.model_ids]
            return await self._answer(conn, 200, json_bytes({"object": "list", "data": models}))
        if not path.endswith((_CHAT, _RESPONSES)):
            return await self._answer(conn, 404, json_bytes(error_body(f"No route {path}.", 404)))
        if method != "POST":
            return await self._answer(conn, 405, json_bytes(error_body("Use POST.", 405)))
        faults = self._next_faults()
        if (delay := faults.get(Delay)) and not await conn.pause(delay.seconds):
            return False
        if Hang in faults:
            await conn.gone.wait()
            return False
        if status := faults.get(Status):
            return await self._status(conn, status)
        if path.endswith(_RESPONSES):
            return await self.responses_api.respond(conn, body, faults)
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return await self._answer(conn, 400, json_bytes(error_body("Expected messages.", 400)))
        if body.get("stream"):
            return await self._stream(conn, body, faults)
        return await self._complete(conn, body, faults)

    async def _answer(
        self, conn: Connection, status: int, data: bytes, headers: Mapping[str, str] | None = None
    ) -> bool:
        head = {"content-type": "application/json", **(headers or {})}
        return await conn.send(response_head(status, head, len(data)) + data)

    async def _status(self, conn: Connection, status: Status) -> bool:
        if isinstance(status.body, bytes):
            data = status.body
        else:
            data = json_bytes(status.body
                              or error_body(f"Fake upstream error {status.code}.", status.code))
        return await self._answer(conn, status.code, data, status.headers)

    def _content(self, body: dict[str, Any], call: ToolCall | None = None
                 ) -> tuple[list[str], dict[str, int]]:
        messages = body["messages"]
        last: dict[str, Any] = next((m for m in reversed(messages) if m.get("role") == "user"), {})
        text = self.reply if self.reply is not None else "echo: " + text_of(last.get("content"))
        if call is not None:
            text = json.dumps(dict(call.arguments))
        size = max(1, math.ceil(len(text) / max(self.chunks, 1)))
        pieces = [text[i : i + size] for i in range(0, len(text), size)] or [""]
        prompt = sum(len(text_of(m.get("content")).split()) for m in messages)
        usage = {"prompt_tokens": prompt, "completion_tokens": len(pieces),
                 "total_tokens": prompt + len(pieces)}
        return pieces, usage

    def _completion_id(self) -> str:
        self._served += 1
        return f"chatcmpl-fake-{self._served}"

    async def _complete(self, conn: Connection, body: dict[str, Any], faults: dict[type, Any]
                        ) -> bool:
        if Reset in faults:
            await conn.close(reset=True)
            return False
        if Garbage in faults:
            return await self._answer(conn, 200, faults[Garbage].data)
        if error := faults.get(ErrorEvent):
            data = json_bytes(error_body(error.message, 500, error.code))
            return await self._answer(conn, 500, data)
        call = faults.get(ToolCall)
        pieces, usage = self._content(body, call)
        message, finish = answer_message(call, body, "".join(pieces))
        data = json_bytes({
            "id": self._completion_id(), "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model"),
            "choices": [{"index": 0, "finish_reason": finish, "logprobs": None,
                         "message": message}],
            "usage": usage,
        })
        head = response_head(200, {"content-type": "application/json"}, len(data))
        if Close in faults:
            await conn.send(head + data[: len(data) // 2])
            await conn.close(reset=False)
            return False
        if stall := faults.get(Stall):
            if not await conn.send(head) or not await conn.pause(stall.seconds):
                return False
            return await conn.send(data)
        return await conn.send(head + data)

    async def _stream(self, conn: Connection, body: dict[str, Any], faults: dict[type, Any]
                      ) -> bool:
        if Reset in faults and faults[Reset].after_chunks is None:
            await conn.close(reset=True)
            return False
        if not await conn.send(response_head(200, _SSE, None)):
            return False
        if Garbage in faults:
            return await conn.send(chunk(faults[Garbage].data) + END_CHUNK)
        call = faults.get(ToolCall)
        pieces, usage = self._content(body, call)
        base = {"id": self._completion_id(), "object": "chat.completion.chunk",
                "created": int(time.time()), "model": body.get("model")}
        deltas, finish = answer_deltas(call, body, pieces)
        events = [{**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
                  for delta in deltas]
        events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        options = body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            events.append({**base, "choices": [], "usage": usage})
        gap = faults[ChunkDelay].seconds if ChunkDelay in faults else 0.0
        last = len(events)

        def strikes(fault_type: type) -> Any:
            fault = faults.get(fault_type)
            if fault is None or fault.after_chunks is None:
                return None
            return fault if min(fault.after_chunks, last) == sent else None

        for sent in range(last + 1):
            if (stall := strikes(Stall)) and not await conn.pause(stall.seconds):
                return False
            if error := strikes(ErrorEvent):
                frame = b"data: " + json_bytes(error_body(error.message, 500, error.code)) + b"\n\n"
                return await conn.send(chunk(frame) + END_CHUNK)
            for fault_type in (Reset, Close):
                if strikes(fault_type):
                    # Let the chunks sent so far reach the client before an RST,
                    # which would otherwise discard what it has not read yet.
                    if fault_type is Reset and sent and not await conn.pause(0.05):
                        return False
                    await conn.close(reset=fault_type is Reset)
                    return False
            if sent == last:
                break
            if sent and gap and not await conn.pause(gap):
                return False
            if Comments in faults and not await conn.send(chunk(b": keep-alive\n\n")):
                return False
            if not await conn.send(chunk(b"data: " + json_bytes(events[sent]) + b"\n\n")):
                return False
        done = b"" if NoDone in faults else chunk(b"data: [DONE]\n\n")
        return await conn.send(done + END_CHUNK)
