"""Chat completion chunks in, the Responses API's streaming events out.

The sequence, as OpenAI sends it: ``response.created``, ``response.in_progress``;
for the text, ``response.output_item.added`` (a ``message``),
``response.content_part.added``, ``response.output_text.delta``...; for each
tool call, ``response.output_item.added`` (a ``function_call``),
``response.function_call_arguments.delta``...; at the end, for each item in
order, ``response.output_text.done`` / ``response.content_part.done`` or
``response.function_call_arguments.done``, then ``response.output_item.done``;
and last ``response.completed`` (``response.incomplete`` when
``max_output_tokens`` cut it) with the whole response and its usage. Every
event carries a ``sequence_number``. A chat stream's ``reasoning_content``
becomes a ``reasoning`` item first (``response.reasoning_text.delta``...), done
when the answer starts.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from .responses import INCOMPLETE, new_id, response_envelope, responses_usage

__all__ = ["ResponsesEventStream"]

Event = tuple[str, dict[str, Any]]
_decode = msgspec.json.Decoder().decode


class ResponsesEventStream:
    """One streamed response: ``start()``, ``feed(chunk)`` per chat chunk, ``finish()``."""

    def __init__(self, body: dict[str, Any], *, created: int | None = None) -> None:
        self._response = response_envelope(body, new_id("resp"), created or int(time.time()))
        self._sequence = 0
        self._items: list[dict[str, Any]] = []
        self._text: dict[str, Any] | None = None
        self._reasoning: dict[str, Any] | None = None
        self._calls: dict[int, dict[str, Any]] = {}
        self._finish: str | None = None
        self.usage: dict[str, Any] | None = None

    def _event(self, kind: str, **data: Any) -> Event:
        event = {"type": kind, "sequence_number": self._sequence, **data}
        self._sequence += 1
        return kind, event

    def _snapshot(self, status: str) -> dict[str, Any]:
        return {**self._response, "status": status, "output": list(self._items),
                "usage": responses_usage(self.usage) if status != "in_progress" else None}

    def start(self) -> list[Event]:
        """The events before any output."""
        return [self._event("response.created", response=self._snapshot("in_progress")),
                self._event("response.in_progress", response=self._snapshot("in_progress"))]

    def feed(self, chunk: dict[str, Any] | bytes) -> list[Event]:
        """The events one chat chunk gives."""
        if isinstance(chunk, bytes):
            chunk = _decode(chunk)
        assert isinstance(chunk, dict)
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        if isinstance(chunk.get("model"), str) and chunk["model"]:
            self._response["model"] = chunk["model"]
        events: list[Event] = []
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            thought = delta.get("reasoning_content")
            if thought and isinstance(thought, str):
                events += self._reasoning_delta(thought)
            text = delta.get("content")
            if text:
                events += self._text_delta(text)
            for call in delta.get("tool_calls") or ():
                events += self._call_delta(call)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return events

    def _reasoning_delta(self, text: str) -> list[Event]:
        events: list[Event] = []
        item = self._reasoning
        if item is None or item["status"] != "in_progress":
            if self._text is not None and self._text["status"] == "in_progress":
                events += self._close(self._text, "completed")  # one item at a time
            item = self._reasoning = {"type": "reasoning", "id": new_id("rs"),
                                      "status": "in_progress", "summary": [], "content": [],
                                      "_text": "", "_index": len(self._items)}
            self._items.append(item)
            events.append(self._event("response.output_item.added", output_index=item["_index"],
                                      item=self._public(item)))
        item["_text"] += text
        events.append(self._event("response.reasoning_text.delta", item_id=item["id"],
                                  output_index=item["_index"], content_index=0, delta=text))
        return events

    def _end_reasoning(self) -> list[Event]:
        """The thinking is done once the answer starts."""
        item = self._reasoning
        if item is not None and item["status"] == "in_progress":
            return self._close(item, "completed")
        return []

    def _text_delta(self, text: str) -> list[Event]:
        events: list[Event] = self._end_reasoning()
        if self._text is None or self._text["status"] != "in_progress":
            # The first text, or text after a tool call: a message item of its own.
            self._text = {"type": "message", "id": new_id("msg"), "status": "in_progress",
                          "role": "assistant", "content": [], "_text": ""}
            index = len(self._items)
            self._items.append(self._text)
            self._text["_index"] = index
            events.append(self._event("response.output_item.added", output_index=index,
                                      item=self._public(self._text)))
            events.append(self._event(
                "response.content_part.added", item_id=self._text["id"], output_index=index,
                content_index=0, part={"type": "output_text", "text": "", "annotations": []}))
        self._text["_text"] += text
        events.append(self._event("response.output_text.delta", item_id=self._text["id"],
                                  output_index=self._text["_index"], content_index=0,
                                  delta=text))
        return events

    def _call_delta(self, call: dict[str, Any]) -> list[Event]:
        events: list[Event] = []
        position = call.get("index", 0)
        item = self._calls.get(position)
        function = call.get("function") or {}
        if item is None:
            events += self._end_reasoning()
        if item is None and self._text is not None and self._text["status"] == "in_progress":
            # As the API does: the message is done before the next item starts.
            events += self._close(self._text, "completed")
        if item is not None:
            # Some upstreams send the id or the name after the call's first delta.
            item["call_id"] = item["call_id"] or call.get("id")
            item["name"] = item["name"] or function.get("name")
        else:
            item = {"type": "function_call", "id": new_id("fc"), "status": "in_progress",
                    "call_id": call.get("id"), "name": function.get("name"), "arguments": "",
                    "_index": len(self._items)}
            self._calls[position] = item
            self._items.append(item)
            events.append(self._event("response.output_item.added",
                                      output_index=item["_index"], item=self._public(item)))
        fragment = function.get("arguments")
        if fragment:
            item["arguments"] += fragment
            events.append(self._event("response.function_call_arguments.delta",
                                      item_id=item["id"], output_index=item["_index"],
                                      delta=fragment))
        return events

    @staticmethod
    def _public(item: dict[str, Any]) -> dict[str, Any]:
        public = {k: v for k, v in item.items() if not k.startswith("_")}
        if item["type"] == "message" and item["status"] != "in_progress":
            public["content"] = [{"type": "output_text", "text": item["_text"],
                                  "annotations": []}]
        elif item["type"] == "reasoning" and item["status"] != "in_progress":
            public["content"] = [{"type": "reasoning_text", "text": item["_text"]}]
        return public

    def _close(self, item: dict[str, Any], status: str) -> list[Event]:
        """An item's done events; it is then final."""
        item["status"] = status
        index = item["_index"]
        events: list[Event] = []
        if item["type"] == "message":
            part = {"type": "output_text", "text": item["_text"], "annotations": []}
            events.append(self._event("response.output_text.done", item_id=item["id"],
                                      output_index=index, content_index=0, text=item["_text"]))
            events.append(self._event("response.content_part.done", item_id=item["id"],
                                      output_index=index, content_index=0, part=part))
        elif item["type"] == "reasoning":
            events.append(self._event("response.reasoning_text.done", item_id=item["id"],
                                      output_index=index, content_index=0, text=item["_text"]))
        else:
            events.append(self._event("response.function_call_arguments.done",
                                      item_id=item["id"], output_index=index,
                                      arguments=item["arguments"]))
        events.append(self._event("response.output_item.done", output_index=index,
                                  item=self._public(item)))
        return events

    def finish(self) -> list[Event]:
        """The closing events, ending with ``response.completed`` (or incomplete)."""
        reason = INCOMPLETE.get(self._finish or "")
        status = "incomplete" if reason else "completed"
        events: list[Event] = []
        for item in self._items:
            if item["status"] == "in_progress":
                events += self._close(item, status)
        self._items = [self._public(item) for item in self._items]
        if reason:
            final = self._snapshot("incomplete")
            final["incomplete_details"] = {"reason": reason}
            events.append(self._event("response.incomplete", response=final))
        else:
            events.append(self._event("response.completed", response=self._snapshot("completed")))
        return events

    def error(self, code: str | None, message: str, param: str | None) -> Event:
        """An ``error`` event, for a stream that fails after it started."""
        return self._event("error", code=code, message=message, param=param)
