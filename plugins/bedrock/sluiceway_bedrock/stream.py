"""ConverseStream: AWS's binary event stream, decoded by botocore, as chat chunks.

Each frame carries its kind in headers: ``:message-type`` ``event`` (with
``:event-type`` ``messageStart``, ``contentBlockStart``, ``contentBlockDelta``,
``contentBlockStop``, ``messageStop``, ``metadata``) or ``exception`` (with
``:exception-type``, such as ``throttlingException``). A frame whose checksum
fails is the upstream's garbage, never a silent cut.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import msgspec
from botocore.eventstream import EventStreamBuffer, ParserError

from sluiceway.api import RateLimited, UpstreamError, completion_id

from .converse import finish_reason, thinking_block, usage

__all__ = ["ChunkTranslator", "frames"]

_decode = msgspec.json.Decoder().decode
_THROTTLED = frozenset({"throttlingException", "serviceQuotaExceededException"})


async def frames(chunks: AsyncIterator[bytes], provider: str
                 ) -> AsyncIterator[list[tuple[dict[str, Any], bytes]]]:
    """The ``(headers, payload)`` of the frames each network read completes."""
    buffer = EventStreamBuffer()
    async for received in chunks:
        buffer.add_data(received)
        try:
            yield [(message.headers, message.payload) for message in buffer]
        except ParserError as exc:
            raise UpstreamError(f"Provider {provider!r} sent an event stream frame that does "
                                f"not parse: {exc}", code="upstream_invalid_response") from None


class ChunkTranslator:
    """The chat chunks of one ConverseStream; ``stopped`` once ``messageStop`` came."""

    def __init__(self, model: str, provider: str) -> None:
        self.model, self.provider = model, provider
        self.id = completion_id()
        self.created = int(time.time())
        self.tools: dict[int, int] = {}
        self.thinking: dict[int, dict[str, Any]] = {}
        self.stop: str | None = None
        self.stopped = False

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    def feed(self, headers: dict[str, Any], payload: bytes) -> Iterator[dict[str, Any]]:
        kind = headers.get(":message-type")
        if kind == "exception" or kind == "error":
            raise self._failure(headers, payload)
        try:
            event = _decode(payload) if payload else {}
        except msgspec.DecodeError:
            raise UpstreamError(f"Provider {self.provider!r} sent an event that is not JSON.",
                                code="upstream_invalid_response") from None
        name = headers.get(":event-type")
        if name == "messageStart":
            yield self._chunk({"role": "assistant", "content": ""})
        elif name == "contentBlockStart":
            use = (event.get("start") or {}).get("toolUse")
            if use:
                position = self.tools[event.get("contentBlockIndex", 0)] = len(self.tools)
                yield self._chunk({"tool_calls": [{
                    "index": position, "id": use.get("toolUseId"), "type": "function",
                    "function": {"name": use.get("name"), "arguments": ""}}]})
        elif name == "contentBlockDelta":
            delta = event.get("delta") or {}
            if "text" in delta:
                yield self._chunk({"content": delta["text"]})
            elif "toolUse" in delta:
                position = self.tools.get(event.get("contentBlockIndex", 0), 0)
                yield self._chunk({"tool_calls": [{"index": position, "function": {
                    "arguments": (delta["toolUse"] or {}).get("input", "")}}]})
            elif "reasoningContent" in delta:
                reasoning = delta["reasoningContent"] or {}
                block = self.thinking.setdefault(event.get("contentBlockIndex", 0), {})
                for key in ("text", "signature", "redactedContent"):
                    if reasoning.get(key):
                        block[key] = block.get(key, "") + reasoning[key]
                if reasoning.get("text"):
                    yield self._chunk({"reasoning_content": reasoning["text"]})
        elif name == "contentBlockStop":
            thought = self.thinking.pop(event.get("contentBlockIndex", 0), None)
            if thought is not None:
                # Whole and signed, so that a client can send it back, as for Anthropic.
                yield self._chunk({"thinking_blocks": [thinking_block({
                    "reasoningText": {"text": thought.get("text", ""),
                                      "signature": thought.get("signature", "")},
                    "redactedContent": thought.get("redactedContent")})]})
        elif name == "messageStop":
            self.stopped = True
            yield self._chunk({}, finish_reason(event.get("stopReason")))
        elif name == "metadata":
            counts = usage(event.get("usage"))
            if counts is not None:
                yield {**self._chunk({}), "choices": [], "usage": counts}

    def _failure(self, headers: dict[str, Any], payload: bytes) -> UpstreamError | RateLimited:
        kind = str(headers.get(":exception-type") or headers.get(":error-code") or "error")
        try:
            message = str((_decode(payload) or {}).get("message") or "no details")
        except (msgspec.DecodeError, AttributeError):
            message = "no details"
        text = f"Provider {self.provider!r} failed mid-stream ({kind}): {message}"
        if kind in _THROTTLED:
            return RateLimited(text, code="rate_limit_exceeded")
        return UpstreamError(text, code="upstream_stream_error", kind="server")
