"""What a model call sends its client, and what a call policy may do with it.

Two things a policy can do to an answer, both from its ``admit``:

* **answer the call itself**, with a :class:`Recording` of an earlier answer
  (``call.answer_with(recording, by=name)``): a cache hit. No upstream is tried;
  the recording is replayed to the client, a stream as the same server-sent
  events, and the call's usage is zero (nothing was spent upstream, so a budget
  is charged nothing and a token reservation is refunded).
* **see or change the answer on its way out** (``call.add_output(stage)``): a
  stage wraps the ASGI ``send`` of the call's response, as pure ASGI middleware
  wraps an app's. :func:`record_answer` is the stage a cache uses to keep what
  went out; a guardrail rewrites the body parts it passes on.

Stages added first are outermost (nearest the client), so a stage sees what the
stages added after it let through, and a replay goes out through the stages of
the policies admitted before the one that answered.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..components import Send
    from .call import ModelCall
    from .runner import Settlements

__all__ = ["OutputStage", "Recording", "call_headers", "record_answer", "send_recording"]

Header = tuple[bytes, bytes]
# Wraps the send of a call's response: given the next send, the send to use instead.
OutputStage = Callable[["Send"], "Send"]

_SSE = b"text/event-stream"


@dataclass(frozen=True, slots=True)
class Recording:
    """A model call's answer as it went to the client (status 200): its content
    type and its body in the parts it was sent in (one for a whole answer, one
    per send for a stream). ``created`` is the wall-clock time it was made."""

    content_type: bytes
    parts: tuple[bytes, ...]
    created: float

    @property
    def stream(self) -> bool:
        return self.content_type.startswith(_SSE)

    @property
    def size(self) -> int:
        return sum(map(len, self.parts))

    def age(self, now: float | None = None) -> float:
        """Seconds since it was recorded."""
        return max((time.time() if now is None else now) - self.created, 0.0)


def record_answer(
    call: ModelCall, keep: Callable[[Recording], Awaitable[None]], *, max_bytes: int,
) -> OutputStage:
    """A stage that records the call's answer and hands it to ``keep`` once its
    last part has gone out, if it was a success (status 200, no error frame,
    the client still there). An answer larger than ``max_bytes`` is not kept
    (and stops being recorded as soon as it is known to be too large)."""

    def stage(send: Send) -> Send:
        parts: list[bytes] = []
        state: dict[str, Any] = {"type": b"", "size": 0, "ok": False}

        async def recording_send(message: Any) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                state["ok"] = message["status"] == 200
                for name, value in message.get("headers", ()):
                    if name.lower() == b"content-type":
                        state["type"] = value
                await send(message)
                return
            if kind != "http.response.body" or not state["ok"]:
                await send(message)
                return
            body = message.get("body", b"")
            state["size"] += len(body)
            if state["size"] > max_bytes:
                state["ok"] = False
                parts.clear()
            elif body:
                parts.append(body)
            await send(message)
            if not message.get("more_body", False) and state["ok"] and (
                call.error is None and not call.disconnected
            ):
                await keep(Recording(state["type"], tuple(parts), time.time()))

        return recording_send

    return stage


def call_headers(call: ModelCall) -> list[Header]:
    """Where the answer came from, what the gateway itself cost, and what the
    call policies added."""
    deployment = call.deployment
    assert deployment is not None
    attempts = call.attempts
    overhead = call.context.elapsed - attempts.upstream_seconds - attempts.backoff_seconds
    headers = [
        (b"x-sluiceway-provider", deployment.provider_name.encode("latin-1", "replace")),
        (b"x-sluiceway-model", deployment.upstream_model.encode("latin-1", "replace")),
        (b"x-sluiceway-attempts", str(attempts.count).encode()),
        (b"x-sluiceway-overhead-ms", f"{max(overhead, 0.0) * 1000:.2f}".encode()),
    ]
    headers.extend(policy_headers(call))
    return headers


def policy_headers(call: ModelCall) -> Iterable[Header]:
    return ((name.encode("latin-1"), value.encode("latin-1"))
            for name, value in call.headers.items())


_STREAM_HEADERS = [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]


async def send_recording(
    call: ModelCall, send: Send, recording: Recording, settle: Settlements,
) -> None:
    """Replay ``recording`` as the call's answer; the call is settled before its
    last part (so a whole answer's headers carry what the settlements set)."""
    parts = recording.parts or (b"",)
    stream = recording.stream
    call.status = 200
    if not stream:
        await settle()
    headers = [(b"content-type", recording.content_type)]
    if stream:
        headers.extend(_STREAM_HEADERS)
    else:
        headers.append((b"content-length", str(recording.size).encode()))
    headers.extend(policy_headers(call))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for part in parts[:-1]:
        await send({"type": "http.response.body", "body": part, "more_body": True})
    if stream:
        await settle()
    await send({"type": "http.response.body", "body": parts[-1], "more_body": False})
