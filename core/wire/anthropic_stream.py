"""Streams between the two dialects, one event (or chunk) at a time.

:class:`OpenAIChunkStream` turns Anthropic Messages events into OpenAI
``chat.completion.chunk`` objects (for an Anthropic provider);
:class:`AnthropicEventStream` does the opposite (for the Anthropic ingress).
Both are pure state machines: feed them what arrived, send on what they return.

Anthropic -> OpenAI, event by event:

    message_start                     {"role": "assistant", "content": ""}
    content_block_start text          nothing
    content_block_delta text_delta    {"content": text}
    content_block_delta thinking_delta {"reasoning_content": text}
    content_block_start tool_use      {"tool_calls": [{"index": n, "id", "type": "function",
                                        "function": {"name", "arguments": ""}}]}
                                      (n counts tool calls only, from 0)
    content_block_delta input_json_delta {"tool_calls": [{"index": n,
                                        "function": {"arguments": fragment}}]}
    content_block_stop thinking       {"thinking_blocks": [the whole block, with signature]}
    content_block_stop redacted_thinking  likewise
    message_delta                     {} with finish_reason
    message_stop                      a usage chunk: "choices": [], "usage"
    ping                              nothing
    error                             raises UpstreamError (kind "server")

A stream that ends before ``message_stop`` is an ``upstream_stream_truncated``
error: call :meth:`OpenAIChunkStream.finish` at the end of the bytes.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from ..errors import UpstreamError
from .chat_to_messages import finish_reason, openai_usage
from .response_format import JSON_TOOL, WRAPPED_TOOL, is_json_tool, json_text

__all__ = [
    "AnthropicEventStream",
    "OpenAIChunkStream",
    "anthropic_usage",
    "matched_stop",
    "stop_reason",
    "stream_error",
]

Event = tuple[str, dict[str, Any]]


def stream_error(provider: str, data: dict[str, Any]) -> UpstreamError:
    """The error for an Anthropic ``error`` event (``overloaded_error`` included)."""
    error = data.get("error")
    error = error if isinstance(error, dict) else {}
    kind = error.get("type") or "api_error"
    message = error.get("message") or "no details"
    code = "upstream_overloaded" if kind == "overloaded_error" else "upstream_stream_error"
    return UpstreamError(
        f"Provider {provider!r} failed mid-stream: {message} ({kind})", code=code, kind="server"
    )


class OpenAIChunkStream:
    """Anthropic events in, OpenAI chunks out (see the module docstring)."""

    __slots__ = (
        "_blocks",
        "_created",
        "_held",
        "_id",
        "_json",
        "_model",
        "_tools",
        "_usage",
        "done",
        "provider",
    )

    def __init__(self, *, provider: str = "anthropic", created: int | None = None,
                 json_answer: bool = False) -> None:
        self.provider = provider
        self.done = False
        self._created = created if created is not None else int(time.time())
        self._id = ""
        self._model = ""
        self._usage: dict[str, Any] = {}
        # block index -> the tool-call index, or the thinking block being built.
        self._tools: dict[int, int] = {}
        self._blocks: dict[int, dict[str, Any]] = {}
        # block index -> [tool name, the input so far] of a response_format answer.
        self._json: dict[int, list[str]] = {}
        # With json_answer, text is held: dropped if the answer tool is called (the
        # JSON is the content, alone), sent at the end if it is not.
        self._held: list[str] | None = [] if json_answer else None

    def _chunk(
        self, delta: dict[str, Any], finish: str | None = None
    ) -> dict[str, Any]:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    def feed(self, event: str | None, data: dict[str, Any]) -> list[dict[str, Any]]:
        """The chunks one event gives (often one, sometimes none)."""
        kind = data.get("type") or event
        if kind == "content_block_delta":
            delta = data.get("delta") or {}
            index = data.get("index", 0)
            dtype = delta.get("type")
            if dtype == "text_delta":
                if self._held is not None:
                    self._held.append(delta.get("text", ""))
                    return []
                return [self._chunk({"content": delta.get("text", "")})]
            if dtype == "input_json_delta":
                fragment = delta.get("partial_json", "")
                answer = self._json.get(index)
                if answer is not None and fragment:
                    if answer[0] == JSON_TOOL:  # the input is the answer: stream it as text
                        answer[1] = "streamed"
                        return [self._chunk({"content": fragment})]
                    answer[1] += fragment  # wrapped: unwrapped once whole
                    return []
                if not fragment or index not in self._tools:
                    return []
                call = {"index": self._tools[index], "function": {"arguments": fragment}}
                return [self._chunk({"tool_calls": [call]})]
            if dtype == "thinking_delta":
                text = delta.get("thinking", "")
                block = self._blocks.get(index)
                if block is not None:
                    block["thinking"] += text
                return [self._chunk({"reasoning_content": text})]
            if dtype == "signature_delta":
                block = self._blocks.get(index)
                if block is not None:
                    block["signature"] = block.get("signature", "") + delta.get("signature", "")
            return []
        if kind == "content_block_start":
            block = data.get("content_block") or {}
            index = data.get("index", 0)
            btype = block.get("type")
            if btype == "tool_use" and is_json_tool(block.get("name")):
                self._json[index] = [str(block.get("name")), ""]
                return []
            if btype == "tool_use":
                position = self._tools[index] = len(self._tools)
                call = {
                    "index": position,
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": ""},
                }
                return [self._chunk({"tool_calls": [call]})]
            if btype in ("thinking", "redacted_thinking"):
                self._blocks[index] = dict(block)
            return []
        if kind == "content_block_stop":
            answer = self._json.get(data.get("index", 0))
            if answer is not None and answer[0] == JSON_TOOL and not answer[1]:
                # An empty input streams no fragment; the whole answer says "{}".
                return [self._chunk({"content": "{}"})]
            if answer is not None and answer[0] == WRAPPED_TOOL:
                try:
                    value = msgspec.json.decode(answer[1] or "{}")
                except msgspec.DecodeError:
                    raise UpstreamError(f"Provider {self.provider!r} sent a response_format "
                                        "answer that is not JSON.",
                                        code="upstream_invalid_response") from None
                return [self._chunk({"content": json_text(WRAPPED_TOOL, value)})]
            finished = self._blocks.pop(data.get("index", 0), None)
            if finished is None:
                return []
            return [self._chunk({"thinking_blocks": [finished]})]
        if kind == "message_start":
            message = data.get("message") or {}
            self._id = message.get("id") or ""
            self._model = message.get("model") or ""
            self._usage = dict(message.get("usage") or {})
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "message_delta":
            usage = data.get("usage") or {}
            self._usage.update((k, v) for k, v in usage.items() if v is not None)
            stop = (data.get("delta") or {}).get("stop_reason")
            finish = finish_reason(stop)
            if self._json and not self._tools and finish == "tool_calls":
                finish = "stop"  # the tool call was the answer
            chunks = []
            if self._held and not self._json:
                chunks.append(self._chunk({"content": "".join(self._held)}))
            self._held = None
            return [*chunks, self._chunk({}, finish)]
        if kind == "message_stop":
            self.done = True
            usage_chunk = self._chunk({})
            usage_chunk["choices"] = []
            usage_chunk["usage"] = openai_usage(self._usage)
            return [usage_chunk]
        if kind == "error":
            raise stream_error(self.provider, data)
        return []  # ping, and event types added after this was written

    def finish(self) -> None:
        """Call when the upstream's bytes end: raises unless ``message_stop`` was seen."""
        if not self.done:
            raise UpstreamError(
                f"Provider {self.provider!r} ended the stream without message_stop; the answer "
                "may be incomplete.",
                code="upstream_stream_truncated",
            )


# -- OpenAI chunks -> Anthropic events ----------------------------------------

_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def stop_reason(finish: str | None) -> str | None:
    """Anthropic's ``stop_reason`` for an OpenAI ``finish_reason``."""
    if finish is None:
        return None
    return _STOP_REASONS.get(finish, "end_turn")


def matched_stop(choice: dict[str, Any]) -> str | None:
    """The stop sequence that ended a choice, when the upstream says which: vLLM
    and the mock put it in the choice's ``stop_reason`` (OpenAI says nothing,
    and such an answer ends with ``end_turn``)."""
    matched = choice.get("stop_reason")
    if choice.get("finish_reason") == "stop" and isinstance(matched, str) and matched:
        return matched
    return None


def anthropic_usage(usage: dict[str, Any] | None) -> dict[str, Any]:
    """Anthropic ``usage`` from OpenAI's (the inverse of ``openai_usage``)."""
    usage = usage or {}
    details = usage.get("prompt_tokens_details") or {}
    cache_read = details.get("cached_tokens") or 0
    cache_write = details.get("cache_creation_tokens") or 0
    return {
        "input_tokens": max((usage.get("prompt_tokens") or 0) - cache_read - cache_write, 0),
        "cache_creation_input_tokens": cache_write,
        "cache_read_input_tokens": cache_read,
        "output_tokens": usage.get("completion_tokens") or 0,
    }


class AnthropicEventStream:
    """OpenAI chunks in, Anthropic ``(event, data)`` pairs out.

    The first chunk opens the message (``message_start`` then ``ping``); content
    opens a block of its kind, closing the one before; ``finish()`` closes the
    last block and sends ``message_delta`` (stop reason and usage, which OpenAI
    only knows at the end) and ``message_stop``. Input tokens are 0 in
    ``message_start`` and given in ``message_delta``.
    """

    __slots__ = (
        "_block", "_index", "_started", "_stop", "_stop_sequence", "_tools", "_usage", "model",
    )

    def __init__(self, *, model: str = "") -> None:
        self.model = model
        self._started = False
        self._index = -1  # the open block's index, or -1
        self._block: str | None = None  # its type
        self._tools: dict[int, int] = {}  # tool-call index -> block index
        self._stop: str | None = None
        self._stop_sequence: str | None = None
        self._usage: dict[str, Any] | None = None

    def _open(self, block: dict[str, Any], events: list[Event]) -> None:
        self._close(events)
        self._index += 1
        self._block = block["type"]
        events.append(("content_block_start", {
            "type": "content_block_start", "index": self._index, "content_block": block,
        }))

    def _close(self, events: list[Event]) -> None:
        if self._block is not None:
            events.append(("content_block_stop", {"type": "content_block_stop",
                                                  "index": self._index}))
            self._block = None

    def _delta(self, delta: dict[str, Any], events: list[Event], index: int = -1) -> None:
        events.append(("content_block_delta", {
            "type": "content_block_delta",
            "index": self._index if index < 0 else index,
            "delta": delta,
        }))

    def feed(self, chunk: dict[str, Any]) -> list[Event]:
        events: list[Event] = []
        if not self._started:
            self._started = True
            events.append(("message_start", {"type": "message_start", "message": {
                "id": chunk.get("id") or "",
                "type": "message",
                "role": "assistant",
                "model": self.model or chunk.get("model") or "",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }}))
            events.append(("ping", {"type": "ping"}))
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content")
            if reasoning:
                if self._block != "thinking":
                    self._open({"type": "thinking", "thinking": "", "signature": ""}, events)
                self._delta({"type": "thinking_delta", "thinking": reasoning}, events)
            for block in delta.get("thinking_blocks") or ():
                if block.get("type") == "thinking":
                    if self._block != "thinking":
                        self._open({"type": "thinking", "thinking": "", "signature": ""}, events)
                        if block.get("thinking"):
                            self._delta({"type": "thinking_delta",
                                         "thinking": block["thinking"]}, events)
                    if block.get("signature"):
                        self._delta({"type": "signature_delta",
                                     "signature": block["signature"]}, events)
                elif block.get("type") == "redacted_thinking":
                    self._open(dict(block), events)
                self._close(events)
            content = delta.get("content")
            if content:
                if self._block != "text":
                    self._open({"type": "text", "text": ""}, events)
                self._delta({"type": "text_delta", "text": content}, events)
            for call in delta.get("tool_calls") or ():
                position = call.get("index", 0)
                function = call.get("function") or {}
                if position not in self._tools:
                    self._open({"type": "tool_use", "id": call.get("id") or "",
                                "name": function.get("name") or "", "input": {}}, events)
                    self._tools[position] = self._index
                arguments = function.get("arguments")
                if arguments:
                    self._delta({"type": "input_json_delta", "partial_json": arguments}, events,
                                self._tools[position])
            if choice.get("finish_reason"):
                self._stop_sequence = matched_stop(choice)
                self._stop = (
                    "stop_sequence" if self._stop_sequence
                    else stop_reason(choice["finish_reason"])
                )
        return events

    def finish(self) -> list[Event]:
        """The closing events, once the OpenAI stream has ended."""
        events: list[Event] = []
        if not self._started:
            events.extend(self.feed({}))
        self._close(events)
        usage = anthropic_usage(self._usage)
        events.append(("message_delta", {
            "type": "message_delta",
            "delta": {"stop_reason": self._stop or "end_turn",
                      "stop_sequence": self._stop_sequence},
            "usage": usage,
        }))
        events.append(("message_stop", {"type": "message_stop"}))
        return events
