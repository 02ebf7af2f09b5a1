"""Gemini answers as OpenAI chat completions and chunks, and Gemini errors as the
gateway's.

* ``text`` parts -> ``content``; ``thought`` parts -> ``reasoning_content``;
  ``functionCall`` parts -> ``tool_calls`` (arguments as JSON text, the part's
  ``thoughtSignature`` kept in the call's id, see :mod:`sluiceway_gemini.request`).
* ``finishReason``: ``STOP`` -> ``stop`` (``tool_calls`` when the model called a
  function), ``MAX_TOKENS`` -> ``length``, the safety family (``SAFETY``,
  ``RECITATION``, ``BLOCKLIST``, ``PROHIBITED_CONTENT``, ``SPII``...) ->
  ``content_filter``, as OpenAI marks an answer its filter stopped.
* a prompt Gemini blocked (``promptFeedback.blockReason``, no candidates) is a 400
  ``content_filter`` naming the reason, never an empty answer.
* ``usageMetadata``: ``promptTokenCount`` (cached ones in
  ``cachedContentTokenCount``), ``candidatesTokenCount`` plus
  ``thoughtsTokenCount`` as completion tokens (the thoughts as reasoning tokens).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

import msgspec

from sluiceway.api import (
    GatewayError,
    InvalidRequest,
    UpstreamError,
    Usage,
    completion_id,
    status_error,
)

from .request import join_call_id

__all__ = ["ChunkTranslator", "blocked", "completion", "error_from_response", "usage"]

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
_FINISH = {"STOP": "stop", "MAX_TOKENS": "length", "FINISH_REASON_UNSPECIFIED": "stop",
           "OTHER": "stop", "MALFORMED_FUNCTION_CALL": "stop", "UNEXPECTED_TOOL_CALL": "stop",
           "TOO_MANY_TOOL_CALLS": "stop"}
_SECONDS = "s"


def _finish(reason: str | None, called: bool) -> str:
    mapped = _FINISH.get(reason or "STOP", "content_filter")
    return "tool_calls" if called and mapped == "stop" else mapped


def _call(part: dict[str, Any], index: int) -> dict[str, Any]:
    function = part["functionCall"]
    call_id = "call_" + os.urandom(8).hex()
    if part.get("thoughtSignature"):
        call_id = join_call_id(call_id, str(part["thoughtSignature"]))
    return {"index": index, "id": call_id, "type": "function",
            "function": {"name": function.get("name"),
                         "arguments": _encode(function.get("args") or {}).decode()}}


def blocked(answer: Mapping[str, Any], provider: str) -> InvalidRequest | None:
    """The error for a prompt Gemini refused to answer, or ``None``."""
    feedback = answer.get("promptFeedback") or {}
    reason = feedback.get("blockReason")
    if answer.get("candidates") or not reason:
        return None
    return InvalidRequest(f"Provider {provider!r} (Gemini) blocked the prompt: {reason}.",
                          code="content_filter", param="messages")


def usage(metadata: object) -> dict[str, Any] | None:
    """OpenAI usage from ``usageMetadata``."""
    if not isinstance(metadata, Mapping):
        return None
    thoughts = int(metadata.get("thoughtsTokenCount") or 0)
    counted = Usage(prompt_tokens=int(metadata.get("promptTokenCount") or 0),
                    completion_tokens=int(metadata.get("candidatesTokenCount") or 0) + thoughts,
                    cached_tokens=int(metadata.get("cachedContentTokenCount") or 0),
                    reasoning_tokens=thoughts)
    return counted.to_openai()


def completion(answer: Any, model: str, provider: str) -> dict[str, Any]:
    """The ``chat.completion`` for a ``generateContent`` answer."""
    if not isinstance(answer, dict):
        raise UpstreamError(f"Provider {provider!r} answered with something that is not a "
                            "Gemini response.", code="upstream_invalid_response")
    refused = blocked(answer, provider)
    if refused is not None:
        raise refused
    candidate = (answer.get("candidates") or [{}])[0]
    text: list[str] = []
    thoughts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in (candidate.get("content") or {}).get("parts") or ():
        if "functionCall" in part:
            call = _call(part, len(calls))
            del call["index"]
            calls.append(call)
        elif part.get("thought"):
            thoughts.append(part.get("text", ""))
        elif "text" in part:
            text.append(part["text"])
    message: dict[str, Any] = {"role": "assistant",
                               "content": "".join(text) if text or not calls else None}
    if thoughts:
        message["reasoning_content"] = "".join(thoughts)
    if calls:
        message["tool_calls"] = calls
    return {"id": completion_id(), "object": "chat.completion", "created": int(time.time()),
            "model": answer.get("modelVersion") or model,
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": _finish(candidate.get("finishReason"), bool(calls))}],
            "usage": usage(answer.get("usageMetadata"))}


class ChunkTranslator:
    """The chunks of one streamed answer: ``feed(answer)`` per event; ``finished``
    once an event carried a ``finishReason`` (then the last chunk held usage)."""

    def __init__(self, model: str, provider: str) -> None:
        self.model, self.provider = model, provider
        self.id = completion_id()
        self.created = int(time.time())
        self.started = False
        self.calls = 0
        self.finished = False

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    def feed(self, answer: Any) -> list[dict[str, Any]]:
        if not isinstance(answer, dict):
            raise UpstreamError(f"Provider {self.provider!r} streamed an event that is not a "
                                "Gemini response.", code="upstream_invalid_response")
        if isinstance(answer.get("error"), dict):
            error = answer["error"]
            raise UpstreamError(f"Provider {self.provider!r} failed mid-stream: "
                                f"{error.get('message') or 'no details'}",
                                code="upstream_stream_error")
        refused = blocked(answer, self.provider)
        if refused is not None:
            raise refused
        self.model = answer.get("modelVersion") or self.model
        chunks: list[dict[str, Any]] = []
        if not self.started:
            self.started = True
            chunks.append(self._chunk({"role": "assistant", "content": ""}))
        candidate = (answer.get("candidates") or [{}])[0]
        for part in (candidate.get("content") or {}).get("parts") or ():
            if "functionCall" in part:
                chunks.append(self._chunk({"tool_calls": [_call(part, self.calls)]}))
                self.calls += 1
            elif part.get("thought"):
                chunks.append(self._chunk({"reasoning_content": part.get("text", "")}))
            elif part.get("text"):
                chunks.append(self._chunk({"content": part["text"]}))
        reason = candidate.get("finishReason")
        if reason:
            self.finished = True
            chunks.append(self._chunk({}, _finish(reason, self.calls > 0)))
            counts = usage(answer.get("usageMetadata"))
            if counts is not None:
                chunks.append({**self._chunk({}), "choices": [], "usage": counts})
        return chunks


def _retry_delay(body: bytes) -> float | None:
    """The wait a ``RetryInfo`` detail asks for (``"retryDelay": "31s"``)."""
    try:
        error = (_decode(body) or {}).get("error") or {}
    except (msgspec.DecodeError, AttributeError):
        return None
    for detail in error.get("details") or () if isinstance(error, dict) else ():
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str) and delay.endswith(_SECONDS):
            try:
                return float(delay[:-1])
            except ValueError:
                return None
    return None


def error_from_response(provider: str, status: int, body: bytes,
                        headers: Mapping[str, str]) -> GatewayError:
    """Gemini's errors: the usual mapping, except that a bad key is a 400
    ``API_KEY_INVALID`` (the gateway's credential, so a 502 like a 401) and a 429
    says its wait in a ``RetryInfo`` detail."""
    if status == 400 and b"API_KEY_INVALID" in body:
        status = 401
    return status_error(provider, status, body, headers,
                        retry_after=_retry_delay(body) if status == 429 else None)
