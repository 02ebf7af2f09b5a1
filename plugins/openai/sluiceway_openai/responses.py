"""The Responses API passed through to an upstream that serves it.

Used when the provider's ``responses_api`` is on (by default for api.openai.com):
``/v1/responses`` bodies go to ``{base_url}/responses`` with only ``model``
replaced, and stream events come back as the upstream's own bytes (the core
decodes only the last one, for usage).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec

from sluiceway.api import ResponsesRequest, UpstreamError

from .errors import error_fields, is_context_window
from .provider import OpenAIProvider

__all__ = ["OpenAIResponsesProvider"]

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode

# The events that end a Responses stream.
_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})


def _event_type(data: bytes) -> str:
    """The ``type`` of an event sent without an ``event:`` line."""
    try:
        event = _decode(data)
    except msgspec.DecodeError:
        return ""
    kind = event.get("type") if isinstance(event, dict) else None
    return kind if isinstance(kind, str) else ""


class OpenAIResponsesProvider(OpenAIProvider):
    """An ``openai`` provider whose upstream also serves the Responses API."""

    async def responses(self, request: ResponsesRequest) -> dict[str, Any]:
        """The client's body with only ``model`` replaced; the response as it came."""
        model = request.upstream_model
        result = await self.http.post_json(
            self.url("responses", model), _encode({**request.body, "model": model}), model,
            extra=await self._extra(),
        )
        if not isinstance(result, dict):
            raise self.http.invalid("something that is not a JSON object")
        return result

    async def responses_stream(self, request: ResponsesRequest
                               ) -> AsyncIterator[tuple[str, bytes]]:
        """Each event's type and its JSON as received, up to the terminal one."""
        model = request.upstream_model
        body = _encode({**request.body, "model": model, "stream": True})
        async with self.http.stream(self.url("responses", model), body, model,
                                    extra=await self._extra()) as batches:
            async for events in batches:
                for event in events:
                    data = event.data
                    if not data or data == b"[DONE]":
                        continue
                    name = event.event or _event_type(data)
                    if name == "error":
                        raise self._stream_error(data)
                    yield name, data
                    if name in _TERMINAL:
                        return
        raise UpstreamError(
            f"Provider {self.name!r} ended the stream without response.completed; the "
            "answer may be incomplete.",
            code="upstream_stream_truncated",
        )

    def _stream_error(self, data: bytes) -> UpstreamError:
        """An ``error`` event (``{"type": "error", "code", "message"}``) as an error."""
        fields = error_fields(data)
        message = fields.get("message") or "no details"
        code = fields.get("code")
        return UpstreamError(
            f"Provider {self.name!r} failed mid-stream: {message}",
            code=code or "upstream_stream_error",
            kind="context_window" if is_context_window(code, message) else "server",
        )
