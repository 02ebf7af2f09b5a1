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
    ApiKey,
    ChatRequest,
    Credentials,
    MessagesRequest,
    OpenAIChunkStream,
    SSEDecoder,
    UpstreamError,
    UpstreamTimeout,
    anthropic_request,
    openai_completion,
    stream_error,
)

from .errors import error_from_response, name_provider

if TYPE_CHECKING:
    from sluiceway.api import ProviderContext, UpstreamResponse

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
        headers = {
            "content-type": "application/json",
            "accept": "application/json",
            "anthropic-version": options.anthropic_version,
        }
        self.credentials = Credentials(
            ctx.name, options.api_key, options.api_keys,
            cooldown=float(options.key_cooldown), base_headers=headers,
            credential=lambda secret: {"x-api-key": secret},
            models=[entry.upstream_id for entry in ctx.models],
        )
        self.keys = self.credentials.ring
        self._client = ctx.http_client(options.limits(ctx.concurrency))

    async def aclose(self) -> None:
        await self._client.aclose()

    def _body(self, request: ChatRequest, *, stream: bool) -> bytes:
        return _encode(anthropic_request(
            request.body,
            model=request.upstream_model,
            default_max_tokens=self.options.default_max_tokens,
            stream=stream,
        ))

    async def _send(
        self, body: bytes, headers: dict[str, str], url: str | None = None
    ) -> UpstreamResponse:
        try:
            return await self._client.send(
                "POST", url or self._url, headers=headers, body=body
            )
        except (UpstreamError, UpstreamTimeout) as exc:
            raise name_provider(self.name, exc) from exc.__cause__

    async def _read(self, response: UpstreamResponse) -> bytes:
        try:
            return await response.read()
        except (UpstreamError, UpstreamTimeout) as exc:
            raise name_provider(self.name, exc) from exc.__cause__

    async def _raise_for_status(
        self, response: UpstreamResponse, key: ApiKey | None, model: str
    ) -> None:
        if response.status >= 400:
            body = await self._read(response)
            error = error_from_response(self.name, response.status, body, response.headers)
            self.credentials.blame(key, error, model, response.headers)
            raise error

    def _invalid(self, what: str) -> UpstreamError:
        return UpstreamError(
            f"Provider {self.name!r} answered with {what}.", code="upstream_invalid_response"
        )

    async def chat(self, request: ChatRequest) -> dict[str, Any]:
        body = self._body(request, stream=False)
        model = request.upstream_model
        key, headers = self.credentials.pick(model, stream=False)
        response = await self._send(body, headers)
        try:
            await self._raise_for_status(response, key, model)
            data = await self._read(response)
        finally:
            await response.aclose()
        try:
            message = _decode(data)
        except msgspec.DecodeError:
            message = None
        if not isinstance(message, dict) or message.get("type") != "message":
            raise self._invalid("something that is not an Anthropic message")
        return openai_completion(message)

    async def stream(self, request: ChatRequest) -> AsyncIterator[dict[str, Any] | bytes]:
        body = self._body(request, stream=True)
        model = request.upstream_model
        key, headers = self.credentials.pick(model, stream=True)
        response = await self._send(body, headers)
        raw = response.aiter_bytes()
        try:
            await self._raise_for_status(response, key, model)
            content_type = response.headers.get("content-type", "")
            if not content_type.startswith("text/event-stream"):
                raise self._invalid(
                    f"{content_type or 'no content type'!r} to a stream request, not an event "
                    "stream"
                )
            translator = OpenAIChunkStream(provider=self.name)
            decoder = SSEDecoder()
            ended = False
            while not ended:
                try:
                    received = await anext(raw)
                except StopAsyncIteration:
                    events, ended = decoder.flush(), True
                except (UpstreamError, UpstreamTimeout) as exc:
                    raise name_provider(self.name, exc) from exc.__cause__
                else:
                    events = decoder.feed(received)
                for event in events:
                    if not event.data:
                        continue
                    try:
                        data = _decode(event.data)
                    except msgspec.DecodeError:
                        raise self._invalid("an event that is not JSON") from None
                    if not isinstance(data, dict):
                        raise self._invalid("an event that is not a JSON object")
                    for chunk in translator.feed(event.event, data):
                        yield chunk
                    if translator.done:
                        return
            translator.finish()
        finally:
            close = getattr(raw, "aclose", None)
            if close is not None:
                await close()
            await response.aclose()

    # -- native: the gateway's /v1/messages, passed through --------------------

    def _native(
        self, request: MessagesRequest, *, stream: bool
    ) -> tuple[bytes, ApiKey | None, dict[str, str]]:
        """The client's body (only ``model`` replaced), a key, and its headers."""
        key, headers = self.credentials.pick(request.upstream_model, stream=stream)
        if request.beta:
            headers = {**headers, "anthropic-beta": request.beta}
        return _encode({**request.body, "model": request.upstream_model}), key, headers

    async def _native_json(self, request: MessagesRequest, url: str) -> Any:
        body, key, headers = self._native(request, stream=False)
        response = await self._send(body, headers, url)
        try:
            await self._raise_for_status(response, key, request.upstream_model)
            data = await self._read(response)
        finally:
            await response.aclose()
        try:
            return _decode(data)
        except msgspec.DecodeError:
            return None

    async def anthropic_messages(self, request: MessagesRequest) -> dict[str, Any]:
        message = await self._native_json(request, self._url)
        if not isinstance(message, dict) or message.get("type") != "message":
            raise self._invalid("something that is not an Anthropic message")
        return message

    async def anthropic_count_tokens(self, request: MessagesRequest) -> int:
        counted = await self._native_json(request, self._count_url)
        tokens = counted.get("input_tokens") if isinstance(counted, dict) else None
        if not isinstance(tokens, int):
            raise self._invalid("something that is not a token count")
        return tokens

    async def anthropic_messages_stream(
        self, request: MessagesRequest
    ) -> AsyncIterator[tuple[str, bytes]]:
        body, key, headers = self._native(request, stream=True)
        model = request.upstream_model
        response = await self._send(body, headers)
        raw = response.aiter_bytes()
        try:
            await self._raise_for_status(response, key, model)
            content_type = response.headers.get("content-type", "")
            if not content_type.startswith("text/event-stream"):
                raise self._invalid(
                    f"{content_type or 'no content type'!r} to a stream request, not an event "
                    "stream"
                )
            decoder = SSEDecoder()
            ended = False
            while not ended:
                try:
                    received = await anext(raw)
                except StopAsyncIteration:
                    events, ended = decoder.flush(), True
                except (UpstreamError, UpstreamTimeout) as exc:
                    raise name_provider(self.name, exc) from exc.__cause__
                else:
                    events = decoder.feed(received)
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
                            raise self._invalid("an event with no type")
                    yield name, data
                    if name == "message_stop":
                        return
            raise UpstreamError(
                f"Provider {self.name!r} ended the stream without message_stop; the answer "
                "may be incomplete.",
                code="upstream_stream_truncated",
            )
        finally:
            close = getattr(raw, "aclose", None)
            if close is not None:
                await close()
            await response.aclose()

    def _event_object(self, data: bytes) -> dict[str, Any]:
        try:
            decoded = _decode(data)
        except msgspec.DecodeError:
            raise self._invalid("an event that is not JSON") from None
        if not isinstance(decoded, dict):
            raise self._invalid("an event that is not a JSON object")
        return decoded
