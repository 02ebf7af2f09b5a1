"""The Responses API of :class:`~sluiceway.testing.fakes.FakeOpenAI`: ``POST /v1/responses``.

Like OpenAI's, it keeps what it answered (unless ``store`` is false), so a request
with ``previous_response_id`` continues that conversation, and an unknown id is a
400 naming ``previous_response_id``. The answer is ``"echo: <last user text>"``
(or the fake's ``reply``); when the conversation has earlier turns it adds
``" (remembering: <the first user text>)"``, which proves the upstream read the
stored turns. A request with ``reasoning`` gets a ``reasoning`` item first. A
scripted :class:`~sluiceway.testing.faults.ToolCall` answers a ``function_call``
item. Streams follow OpenAI's event sequence, each event with its
``sequence_number``; ``ErrorEvent(after_chunks=n)`` sends an ``error`` event
after ``n`` events and ``NoDone`` leaves out ``response.completed``.
"""

from __future__ import annotations

import json
import math
import time
from typing import TYPE_CHECKING, Any

from .faults import (
    END_CHUNK,
    ErrorEvent,
    NoDone,
    ToolCall,
    chunk,
    error_body,
    json_bytes,
    response_head,
    text_of,
)

if TYPE_CHECKING:
    from .fakes import FakeOpenAI
    from .faults import Connection

__all__ = ["FakeResponsesAPI"]

_SSE = {"content-type": "text/event-stream", "cache-control": "no-cache"}
_REASONING = "Thinking it over."


def _bad_request(message: str, param: str | None, code: str | None) -> bytes:
    return json_bytes({"error": {"message": message, "type": "invalid_request_error",
                                 "param": param, "code": code}})


def _items(given: Any) -> list[dict[str, Any]]:
    if isinstance(given, str):
        return [{"type": "message", "role": "user", "content": given}]
    return [item for item in given if isinstance(item, dict)] if isinstance(given, list) else []


class FakeResponsesAPI:
    """The fake's stored responses and its ``/v1/responses`` answers."""

    def __init__(self, fake: FakeOpenAI) -> None:
        self.fake = fake
        self.stored: dict[str, list[dict[str, Any]]] = {}
        self._served = 0

    def _id(self, prefix: str) -> str:
        self._served += 1
        return f"{prefix}_fake{self._served}"

    async def respond(self, conn: Connection, body: Any, faults: dict[type, Any]) -> bool:
        """Answer one request; ``True`` if the connection may be reused."""
        previous = body.get("previous_response_id") if isinstance(body, dict) else None
        if not isinstance(body, dict) or ("input" not in body and previous is None):
            return await self._refuse(conn, "Missing required parameter: 'input'.", "input",
                                      "missing_required_parameter")
        if previous is not None and previous not in self.stored:
            return await self._refuse(conn, f"Previous response with id '{previous}' not found.",
                                      "previous_response_id", "previous_response_not_found")
        history = list(self.stored.get(previous, [])) if previous else []
        conversation = history + _items(body.get("input"))
        response = self._response(body, conversation, bool(history), faults.get(ToolCall))
        if body.get("store", True):
            self.stored[response["id"]] = conversation + response["output"]
        if body.get("stream"):
            return await self._stream(conn, response, faults)
        status, data = 200, json_bytes(response)
        if error := faults.get(ErrorEvent):
            status, data = 500, json_bytes(error_body(error.message, 500, error.code))
        return await conn.send(response_head(status, {"content-type": "application/json"},
                                             len(data)) + data)

    async def _refuse(self, conn: Connection, message: str, param: str, code: str) -> bool:
        data = _bad_request(message, param, code)
        return await conn.send(response_head(400, {"content-type": "application/json"},
                                             len(data)) + data)

    def _response(self, body: dict[str, Any], conversation: list[dict[str, Any]],
                  continued: bool, call: ToolCall | None) -> dict[str, Any]:
        users = [text_of(item.get("content")) for item in conversation
                 if item.get("type", "message") == "message" and item.get("role") == "user"]
        reply = self.fake.reply
        text = reply if reply is not None else "echo: " + (users[-1] if users else "")
        if continued and reply is None and users:
            text += f" (remembering: {users[0]})"
        output: list[dict[str, Any]] = []
        reasoning_tokens = 0
        if isinstance(body.get("reasoning"), dict):
            reasoning_tokens = len(_REASONING.split())
            output.append({"type": "reasoning", "id": self._id("rs"),
                           "summary": [{"type": "summary_text", "text": _REASONING}]})
        if call is not None:
            tools = body.get("tools") or [{}]
            name = call.name or (tools[0].get("name") if isinstance(tools[0], dict) else None)
            output.append({"type": "function_call", "id": self._id("fc"), "status": "completed",
                           "call_id": call.id, "name": name or "tool",
                           "arguments": json.dumps(dict(call.arguments))})
        else:
            output.append({"type": "message", "id": self._id("msg"), "status": "completed",
                           "role": "assistant",
                           "content": [{"type": "output_text", "text": text, "annotations": []}]})
        prompt = sum(len(text_of(item.get("content")).split()) for item in conversation)
        completion = max(1, math.ceil(len(text) / max(self.fake.chunks, 1))) + reasoning_tokens
        return {
            "id": self._id("resp"), "object": "response", "created_at": int(time.time()),
            "status": "completed", "model": body.get("model"), "output": output,
            "previous_response_id": body.get("previous_response_id"),
            "usage": {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens": completion,
                      "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
                      "total_tokens": prompt + completion},
        }

    def _events(self, response: dict[str, Any]) -> list[dict[str, Any]]:
        """The event sequence for ``response``, without sequence numbers."""
        begun = {**response, "status": "in_progress", "output": [], "usage": None}
        events: list[dict[str, Any]] = [{"type": "response.created", "response": begun},
                                        {"type": "response.in_progress", "response": begun}]
        for index, item in enumerate(response["output"]):
            where = {"output_index": index, "item_id": item["id"]}
            if item["type"] == "message":
                text = item["content"][0]["text"]
                size = max(1, math.ceil(len(text) / max(self.fake.chunks, 1)))
                empty = {"type": "output_text", "text": "", "annotations": []}
                events.append({"type": "response.output_item.added", "output_index": index,
                               "item": {**item, "status": "in_progress", "content": []}})
                events.append({"type": "response.content_part.added", **where,
                               "content_index": 0, "part": empty})
                events.extend({"type": "response.output_text.delta", **where, "content_index": 0,
                               "delta": text[i : i + size]} for i in range(0, len(text), size))
                events.append({"type": "response.output_text.done", **where, "content_index": 0,
                               "text": text})
                events.append({"type": "response.content_part.done", **where,
                               "content_index": 0, "part": item["content"][0]})
            elif item["type"] == "function_call":
                events.append({"type": "response.output_item.added", "output_index": index,
                               "item": {**item, "status": "in_progress", "arguments": ""}})
                events.append({"type": "response.function_call_arguments.delta", **where,
                               "delta": item["arguments"]})
                events.append({"type": "response.function_call_arguments.done", **where,
                               "arguments": item["arguments"]})
            else:
                events.append({"type": "response.output_item.added", "output_index": index,
                               "item": item})
            events.append({"type": "response.output_item.done", "output_index": index,
                           "item": item})
        events.append({"type": "response.completed", "response": response})
        return events

    async def _stream(self, conn: Connection, response: dict[str, Any],
                      faults: dict[type, Any]) -> bool:
        if not await conn.send(response_head(200, _SSE, None)):
            return False
        events = self._events(response)
        if NoDone in faults:
            events.pop()
        error = faults.get(ErrorEvent)
        if error is not None:
            cut = min(error.after_chunks or 0, len(events))
            events = [*events[:cut], {"type": "error", "code": error.code,
                                      "message": error.message, "param": None}]
        for number, event in enumerate(events):
            frame = f"event: {event['type']}\ndata: ".encode() + json_bytes(
                {**event, "sequence_number": number}) + b"\n\n"
            if not await conn.send(chunk(frame)):
                return False
        return await conn.send(END_CHUNK)
