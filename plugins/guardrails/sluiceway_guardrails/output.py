"""The guardrail on a call's answer: an output stage (``call.add_output``).

A whole answer is held from its start until its body is complete, scanned,
rewritten where a rule redacts (with its ``content-length`` fixed) and sent;
a blocking rule turns it into a 400 ``guardrail_blocked`` instead.

A stream is never buffered whole. Each text *channel* (an OpenAI choice, an
Anthropic content block, a Responses output text) holds back its last
``window`` characters: the frames whose text lies before that point are sent,
redacted, as soon as they arrive, and the rest wait for more text or for the
channel's end, so a match split over several chunks is caught before any of it
goes out. No frame is added or dropped (a redaction that spans frames puts its
label in the first and takes the rest out of the others), so sequence numbers
and indexes stay as the upstream sent them. A blocking rule ends the stream
with the dialect's error frame at once: what was held back is never sent.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from sluiceway.api import ModelCall, Send, SSEDecoder, SSEEvent

from .detectors import Finding
from .scan import Decisions, Scanner, redactions, scan_json

__all__ = ["output_stage"]

Blocked = Callable[[Finding], BaseException]
Report = Callable[[Decisions], None]
_SSE = b"text/event-stream"
_JSON = b"application/json"
_encode = msgspec.json.encode
_decode = msgspec.json.decode


@dataclass(slots=True)
class _Span:
    """A frame's text in a channel: ``[start, end)`` in the channel's text,
    written back to ``container[key]``."""

    channel: Any
    start: int
    end: int
    container: dict[str, Any]
    key: str


@dataclass(slots=True)
class _Frame:
    event: str | None
    data: bytes
    body: Any = None
    spans: list[_Span] = field(default_factory=list)
    changed: bool = False

    def render(self) -> bytes:
        data = _encode(self.body) if self.changed else self.data
        head = b"event: " + self.event.encode() + b"\n" if self.event is not None else b""
        return head + b"data: " + data + b"\n\n"


@dataclass(slots=True)
class _Channel:
    held: str = ""
    # Where ``held`` starts in the channel's whole text.
    base: int = 0
    # Text before this was taken out by a redaction that began in a sent frame.
    suppress: int = 0
    ended: bool = False
    findings: list[Finding] = field(default_factory=list)


class StreamGuard:
    """Scans a stream's frames per channel and releases them as they clear."""

    def __init__(self, kind: str, scanner: Scanner, window: int, decisions: Decisions,
                 blocked: Blocked) -> None:
        self.kind = kind
        self.scanner = scanner
        self.window = window
        self.decisions = decisions
        self.blocked = blocked
        self.channels: dict[Any, _Channel] = {}
        self.queue: deque[_Frame] = deque()
        self.decoder = SSEDecoder()
        # Channels whose text or state changed since they were last scanned.
        self.dirty: set[Any] = set()

    def feed(self, chunk: bytes, last: bool) -> bytes:
        """The bytes that may go out now, given the stream's next ``chunk``;
        raises ``blocked(finding)`` when a blocking rule matched."""
        for event in self.decoder.feed(chunk):
            self._take(event)
        if last:
            for event in self.decoder.flush():
                self._take(event)
            self._end(self.channels)
        self._rescan()
        return self._release()

    # -- reading frames ------------------------------------------------------

    def _end(self, keys: Any) -> None:
        for key in keys:
            self.channels[key].ended = True
            self.dirty.add(key)

    def _take(self, event: SSEEvent) -> None:
        frame = _Frame(event.event, event.data)
        self.queue.append(frame)
        if event.data == b"[DONE]":
            self._end(self.channels)
            return
        try:
            frame.body = _decode(event.data)
        except msgspec.DecodeError:
            return
        if isinstance(frame.body, dict):
            self._end(getattr(self, f"_read_{self.kind}")(frame))

    def _add(self, frame: _Frame, key_of: Any, container: dict[str, Any], key: str) -> None:
        text = container[key]
        channel = self.channels.setdefault(key_of, _Channel())
        start = channel.base + len(channel.held)
        channel.held += text
        self.dirty.add(key_of)
        frame.spans.append(_Span(key_of, start, start + len(text), container, key))

    def _read_chat(self, frame: _Frame) -> list[Any]:
        ended = []
        for choice in frame.body.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0)
            delta = choice.get("delta")
            if isinstance(delta, dict) and isinstance(delta.get("content"), str):
                self._add(frame, index, delta, "content")
            if choice.get("finish_reason") and index in self.channels:
                ended.append(index)
        return ended

    def _read_messages(self, frame: _Frame) -> list[Any]:
        body = frame.body
        kind = body.get("type")
        index = body.get("index")
        if kind == "content_block_delta":
            delta = body.get("delta")
            if isinstance(delta, dict) and delta.get("type") == "text_delta" and isinstance(
                    delta.get("text"), str):
                self._add(frame, index, delta, "text")
        elif kind == "content_block_stop" and index in self.channels:
            return [index]
        elif kind == "message_stop":
            return list(self.channels)
        return []

    def _read_responses(self, frame: _Frame) -> list[Any]:
        body = frame.body
        kind = body.get("type")
        where = (body.get("output_index"), body.get("content_index"))
        if kind == "response.output_text.delta" and isinstance(body.get("delta"), str):
            self._add(frame, where, body, "delta")
            return []
        # The events that repeat the text whole: scanned whole, as an answer is.
        whole = {"response.output_text.done": body, "response.content_part.done":
                 body.get("part"), "response.output_item.done": body.get("item")}.get(kind)
        if kind in ("response.completed", "response.incomplete", "response.failed"):
            response = body.get("response")
            whole = response.get("output") if isinstance(response, dict) else None
        if whole is not None and scan_json(self.scanner, whole, None):
            frame.changed = True
        if kind == "response.output_text.done" and where in self.channels:
            return [where]
        return []

    # -- deciding and releasing ----------------------------------------------

    def _rescan(self) -> None:
        for key in self.dirty:
            channel = self.channels[key]
            findings = self.scanner.find(channel.held) if channel.held else []
            channel.findings = findings
            for finding in findings:
                # A match that reaches the end of what has arrived may still grow.
                if finding.action == "block" and (channel.ended
                                                  or finding.end < len(channel.held)):
                    self.decisions.count(finding)
                    raise self.blocked(finding)
        self.dirty.clear()

    def _limit(self, channel: _Channel) -> int:
        """Where the channel's text may be released up to (absolute)."""
        size = len(channel.held)
        point = size if channel.ended else max(size - self.window, 0)
        moved = True
        while moved:  # never cut through a match
            moved = False
            for finding in channel.findings:
                if finding.start < point < finding.end:
                    point, moved = finding.start, True
        return channel.base + point

    def _release(self) -> bytes:
        limits = {key: self._limit(channel) for key, channel in self.channels.items()}
        out: list[bytes] = []
        released: dict[Any, int] = {}
        while self.queue:
            frame = self.queue[0]
            if any(span.end > limits[span.channel] for span in frame.spans):
                break
            self.queue.popleft()
            for span in frame.spans:
                if self._render(span):
                    frame.changed = True
                released[span.channel] = span.end
            out.append(frame.render())
        for key, end in released.items():
            channel = self.channels[key]
            cut = end - channel.base
            channel.held, channel.base = channel.held[cut:], end
            self.dirty.add(key)  # its findings were of the text before the cut
        return b"".join(out)

    def _render(self, span: _Span) -> bool:
        """Write the span's text, redacted, into its frame; True if it changed."""
        channel = self.channels[span.channel]
        base, held = channel.base, channel.held
        for finding in channel.findings:
            start = base + finding.start
            if finding.action == "flag" and span.start <= start < span.end:
                self.decisions.count(finding)
        pieces: list[str] = []
        position = max(span.start, channel.suppress)
        for finding in redactions(channel.findings):
            start, end = base + finding.start, base + finding.end
            if end <= position:
                continue
            if start >= span.end:
                break
            if start >= position:  # else it began where the text was already taken out
                pieces.append(held[position - base:start - base])
                pieces.append(finding.label)
                self.decisions.count(finding)
            position = max(position, end)
        if position < span.end:
            pieces.append(held[position - base:span.end - base])
        channel.suppress = max(channel.suppress, position)
        text = "".join(pieces)
        if text != span.container[span.key]:
            span.container[span.key] = text
            return True
        return False


def output_stage(call: ModelCall, scanner: Scanner, *, window: int, blocked: Blocked,
                 report: Report) -> Callable[[Send], Send]:
    """The stage that guards ``call``'s answer with ``scanner``; ``blocked(finding)``
    is the error a blocking rule raises, ``report(decisions)`` is called once the
    answer has gone (or been blocked)."""

    def stage(send: Send) -> Send:
        decisions = Decisions()
        state: dict[str, Any] = {"mode": "pass", "start": None, "parts": []}

        async def finish(message: dict[str, Any]) -> None:
            # Reported before the answer's last part: a client that has it sees
            # the decisions in the metrics already.
            report(decisions)
            await send(message)

        async def guarded(message: Any) -> None:
            kind = message["type"]
            mode = state["mode"]
            if kind == "http.response.start":
                content_type = next((v for k, v in message.get("headers", ())
                                     if k.lower() == b"content-type"), b"")
                if message["status"] == 200 and content_type.startswith(_SSE):
                    state["mode"] = "stream"
                    state["guard"] = StreamGuard(call.kind, scanner, window, decisions,
                                                 blocked)
                elif message["status"] == 200 and content_type.startswith(_JSON):
                    state["mode"], state["start"] = "whole", message
                    return  # held until the body is known to be clean
                await send(message)
                return
            if kind != "http.response.body" or mode == "pass":
                await send(message)
                return
            last = not message.get("more_body", False)
            if mode == "stream":
                guard: StreamGuard = state["guard"]
                try:
                    body = guard.feed(message.get("body", b""), last)
                except BaseException:
                    state["mode"] = "pass"  # the error frame that follows goes out as it is
                    report(decisions)
                    raise
                if body or last:
                    out = {"type": "http.response.body", "body": body, "more_body": not last}
                    await (finish(out) if last else send(out))
                return
            state["parts"].append(message.get("body", b""))
            if not last:
                return
            state["mode"] = "pass"
            try:
                start, body = _checked_whole(state["start"], b"".join(state["parts"]),
                                             scanner, decisions, blocked)
            except BaseException:
                report(decisions)
                raise
            await send(start)
            await finish({"type": "http.response.body", "body": body, "more_body": False})

        return guarded

    return stage


def _checked_whole(start: dict[str, Any], body: bytes, scanner: Scanner, decisions: Decisions,
                   blocked: Blocked) -> tuple[dict[str, Any], bytes]:
    """A whole answer's start and body, redacted (its length fixed to match)."""
    try:
        answer = _decode(body)
    except msgspec.DecodeError:
        return start, body
    if scan_json(scanner, answer, decisions):
        body = _encode(answer)
        start = {**start, "headers": [
            (name, str(len(body)).encode() if name.lower() == b"content-length" else value)
            for name, value in start.get("headers", ())]}
    if decisions.blocked is not None:
        raise blocked(decisions.blocked)
    return start, body
