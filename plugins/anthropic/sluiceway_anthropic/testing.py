"""A fake Anthropic Messages API for tests: a raw ASGI app to serve on loopback
(``serve_asgi(FakeAnthropic())`` from :mod:`sluiceway.testing`).

It picks its behaviour from the text of the last message, so each test says
what the upstream does in the request it sends: ``hi`` (text), ``tools`` (a
tool call), ``json`` (the response_format tool called), ``think`` (thinking
then text), ``error-mid-stream`` (an ``overloaded_error`` event after some
text), ``no-message-stop``, ``slow`` (2 s before answering), or an error key
of :data:`ERRORS` (``"429"``, ``"529"``...).
``POST /v1/messages/count_tokens`` answers :data:`COUNTED`. Every request is
recorded in ``requests`` (path, headers, parsed body).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["ANSWERS", "COUNTED", "ERRORS", "USAGE", "FakeAnthropic", "events"]

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: What count_tokens answers, whatever the body.
COUNTED = 42

#: The usage of every answer (output_tokens 9 in the answers themselves).
USAGE = {"input_tokens": 11, "cache_read_input_tokens": 4, "cache_creation_input_tokens": 0,
         "output_tokens": 1}


def _message(content: list[dict[str, Any]], stop: str) -> dict[str, Any]:
    return {"id": "msg_up", "type": "message", "role": "assistant", "model": "claude-sonnet-4",
            "content": content, "stop_reason": stop, "stop_sequence": None,
            "usage": {**USAGE, "output_tokens": 9}}


#: Scenario -> the whole message answered (and, streamed, its events).
ANSWERS: dict[str, dict[str, Any]] = {
    "hi": _message([{"type": "text", "text": "Hello there"}], "end_turn"),
    "tools": _message([
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
         "input": {"city": "Paris", "unit": "c"}},
    ], "tool_use"),
    # What an upstream answers when made to call the response_format tool.
    "json": _message([
        {"type": "tool_use", "id": "toolu_json", "name": "json_response",
         "input": {"answer": "4", "confidence": 0.9}},
    ], "tool_use"),
    "think": _message([
        {"type": "thinking", "thinking": "Two and two make four.", "signature": "sig=="},
        {"type": "text", "text": "4"},
    ], "end_turn"),
}


def events(scenario: str) -> list[tuple[str, dict[str, Any]]]:
    """The events of a scenario's streamed answer, as Anthropic would send them."""
    answer = ANSWERS.get(scenario, ANSWERS["hi"])
    sequence: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": {
            **answer, "content": [], "stop_reason": None, "usage": USAGE}}),
        ("ping", {"type": "ping"}),
    ]
    for index, block in enumerate(answer["content"]):
        def delta(d: dict[str, Any], index: int = index) -> tuple[str, dict[str, Any]]:
            return ("content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": d})

        kind = block["type"]
        empty = {"text": {"text": ""}, "thinking": {"thinking": "", "signature": ""},
                 "tool_use": {"id": block.get("id"), "name": block.get("name"), "input": {}}}
        sequence.append(("content_block_start", {
            "type": "content_block_start", "index": index,
            "content_block": {"type": kind, **empty[kind]},
        }))
        if kind == "text":
            text = block["text"]
            sequence += [delta({"type": "text_delta", "text": text[:3]}),
                         delta({"type": "text_delta", "text": text[3:]})]
            if scenario == "error-mid-stream":
                sequence.append(("error", {"type": "error", "error": {
                    "type": "overloaded_error", "message": "Overloaded"}}))
                return sequence
        elif kind == "thinking":
            sequence += [delta({"type": "thinking_delta", "thinking": block["thinking"]}),
                         delta({"type": "signature_delta", "signature": block["signature"]})]
        else:
            raw = json.dumps(block["input"])
            sequence += [delta({"type": "input_json_delta", "partial_json": ""})]
            sequence += [delta({"type": "input_json_delta", "partial_json": raw[i:i + 5]})
                         for i in range(0, len(raw), 5)]
        sequence.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    sequence.append(("message_delta", {"type": "message_delta", "delta": {
        "stop_reason": answer["stop_reason"], "stop_sequence": None},
        "usage": {"output_tokens": 9}}))
    if scenario != "no-message-stop":
        sequence.append(("message_stop", {"type": "message_stop"}))
    return sequence


#: Scenario -> (status, Anthropic error type, message) of an error answer.
ERRORS: dict[str, tuple[int, str, str]] = {
    "400": (400, "invalid_request_error", "messages: text content blocks must be non-empty"),
    "too-long": (400, "invalid_request_error", "prompt is too long: 210000 tokens > 200000"),
    "401": (401, "authentication_error", "invalid x-api-key"),
    "404": (404, "not_found_error", "model: claude-nope"),
    "429": (429, "rate_limit_error", "Number of request tokens has exceeded your limit."),
    "529": (529, "overloaded_error", "Overloaded"),
    "500": (500, "api_error", "Internal server error"),
}


class FakeAnthropic:
    """The Anthropic Messages API as a raw ASGI app; records what it receives."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        # Keys this fake answers with 401, as Anthropic does for a revoked key.
        self.refused_keys: set[str] = set()

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        data = json.loads(body)
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.requests.append({"path": scope["path"], "headers": headers, "body": data})
        if scope["path"].endswith("/count_tokens"):
            await _respond(send, 200, json.dumps({"input_tokens": COUNTED}).encode())
            return
        content = data["messages"][-1]["content"]
        scenario = content if isinstance(content, str) else content[-1].get("text", "")
        if headers.get("x-api-key") in self.refused_keys:
            scenario = "401"
        if scenario == "slow":
            await asyncio.sleep(2)
        if scenario in ERRORS:
            status, kind, text = ERRORS[scenario]
            error = {"type": "error", "error": {"type": kind, "message": text},
                     "request_id": "req_up"}
            extra = [(b"retry-after", b"3")] if status == 429 else []
            await _respond(send, status, json.dumps(error).encode(), extra=extra)
        elif data.get("stream"):
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream")]})
            for name, event in events(scenario):
                frame = f"event: {name}\ndata: {json.dumps(event)}\n\n".encode()
                # Split each frame across two writes: the gateway must reassemble it.
                for part in (frame[:7], frame[7:]):
                    await send({"type": "http.response.body", "body": part, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        else:
            answer = ANSWERS.get(scenario, ANSWERS["hi"])
            await _respond(send, 200, json.dumps(answer).encode())


async def _respond(
    send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), *(extra or [])]})
    await send({"type": "http.response.body", "body": body})
