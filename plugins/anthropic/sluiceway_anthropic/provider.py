"""The Anthropic provider: OpenAI chat completions in, Anthropic Messages upstream.

Translation is the core's (:mod:`sluiceway.wire.chat_to_messages` and
:mod:`sluiceway.wire.anthropic_stream`), so the Anthropic ingress and this
provider agree on every rule; this module only moves bytes and maps errors.

The gateway's own ``/v1/messages`` reaches this provider natively instead
(``anthropic_messages``, ``anthropic_messages_stream``,
``anthropic_count_tokens``): the client's body goes upstream with only ``model``
replaced, the client's ``anthropic-beta`` header with it, and the answer comes
back as Anthropic sent it, events included.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import msgspec

from sluiceway.api import (
    ChatRequest,
    HttpUpstream,
    MessagesRequest,
    OpenAIChunkStream,
    UpstreamError,
    anthropic_request,
    asks_for_schema,
    openai_completion,
    stream_error,
)

from .errors import error_from_response

if TYPE_CHECKING:
    from sluiceway.api import ProviderContext

    from .config import AnthropicOptions

__all__ = ["AnthropicProvider"]

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


class AnthropicProvider:
    """One ``[[providers]]`` table of type ``anthropic``: one pooled client, reused."""

    def __init__(self, ctx: ProviderContext) -> None:
        options: AnthropicOptions = ctx.options
        self.name = ctx.name
        self.options = options
        self._url = options.base_url.rstrip("/") + "/v1/messages"
        self._count_url = self._url + "/count_tokens"
        self.http = HttpUpstream(
            ctx, options,
            headers={
                "content-type": "application/json",
                "accept": "application/json",
                "anthropic-version": options.anthropic_version,
            },
            credential=lambda secret: {"x-api-key": secret},
            errors=error_from_response,
        )
        self.keys = self.http.credentials.ring

    async def aclose(self) -> None:
        await self.http.aclose()

    def _body(self, request: ChatRequest, *, stream: bool) -> bytes:
        return _encode(anthropic_request(
            request.body,
            model=request.upstream_model,
            default_max_tokens=self.options.default_max_tokens,
            stream=stream,
        ))

    async def chat(self, request: ChatRequest) -> dict[str, Any]:
        message = await self.http.post_json(
            self._url, self._body(request, stream=False), request.upstream_model
        )
        if not isinstance(message, dict) or message.get("type") != "message":
            raise self.http.invalid("something that is not an Anthropic message")
        return openai_completion(message)

    async def stream(self, request: ChatRequest) -> AsyncIterator[dict[str, Any] | bytes]:
        body = self._body(request, stream=True)
        translator = OpenAIChunkStream(provider=self.name,
                                       json_answer=asks_for_schema(request.body))
        async with self.http.stream(self._url, body, request.upstream_model) as batches:
            async for events in batches:
                for event in events:
                    if not event.data:
                        continue
                    for chunk in translator.feed(event.event, self._event_object(event.data)):
                        yield chunk
                    if translator.done:
                        return
        translator.finish()

    # -- native: the gateway's /v1/messages, passed through --------------------

    def _native(self, request: MessagesRequest) -> tuple[bytes, dict[str, str] | None]:
        """The client's body (only ``model`` replaced), and its beta header if any."""
        extra = {"anthropic-beta": request.beta} if request.beta else None
        return _encode({**request.body, "model": request.upstream_model}), extra

    async def anthropic_messages(self, request: MessagesRequest) -> dict[str, Any]:
        body, extra = self._native(request)
        message = await self.http.post_json(self._url, body, request.upstream_model, extra=extra)
        if not isinstance(message, dict) or message.get("type") != "message":
            raise self.http.invalid("something that is not an Anthropic message")
        return message

    async def anthropic_count_tokens(self, request: MessagesRequest) -> int:
        body, extra = self._native(request)
        counted = await self.http.post_json(
            self._count_url, body, request.upstream_model, extra=extra
        )
        tokens = counted.get("input_tokens") if isinstance(counted, dict) else None
        if not isinstance(tokens, int):
            raise self.http.invalid("something that is not a token count")
        return tokens

    async def anthropic_messages_stream(
        self, request: MessagesRequest
    ) -> AsyncIterator[tuple[str, bytes]]:
        body, extra = self._native(request)
        async with self.http.stream(
            self._url, body, request.upstream_model, extra=extra
        ) as batches:
            async for events in batches:
                for event in events:
                    name, data = event.event, event.data
                    if not data:
                        continue
                    if name is None or name == "error":
                        # Only these are decoded: the rest pass through as they came.
                        decoded = self._event_object(data)
                        name = str(decoded.get("type") or "")
                        if name == "error":
                            raise stream_error(self.name, decoded)
                        if not name:
                            raise self.http.invalid("an event with no type")
                    yield name, data
                    if name == "message_stop":
                        return
        raise UpstreamError(
            f"Provider {self.name!r} ended the stream without message_stop; the answer "
            "may be incomplete.",
            code="upstream_stream_truncated",
        )

    def _event_object(self, data: bytes) -> dict[str, Any]:
        try:
            decoded = _decode(data)
        except msgspec.DecodeError:
            raise self.http.invalid("an event that is not JSON") from None
        if not isinstance(decoded, dict):
            raise self.http.invalid("an event that is not a JSON object")
        return decoded
