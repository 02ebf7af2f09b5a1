"""The OpenAI-compatible provider: a pass-through fast path.

The client's body goes upstream with only ``model`` replaced (and, for streams,
``stream_options.include_usage`` forced on, so usage is always known). Stream
chunks come back as the upstream's own JSON bytes: the core frames them without
decoding or re-encoding, so a chunk costs one SSE parse and a few byte searches.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import msgspec

from sluiceway import ChatRequest, UpstreamError, UpstreamLimits, UpstreamTimeout
from sluiceway.wire.sse import SSEDecoder

from .errors import error_fields, error_from_response, name_provider

if TYPE_CHECKING:
    from sluiceway import ProviderContext, UpstreamResponse

    from .config import OpenAIOptions

__all__ = ["OpenAIProvider"]

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode

_DONE = b"[DONE]"
_ERROR_KEY = b'"error"'


class OpenAIProvider:
    """One ``[[providers]]`` table of type ``openai``: one pooled client, reused."""

    def __init__(self, ctx: ProviderContext) -> None:
        options: OpenAIOptions = ctx.options
        self.name = ctx.name
        self.options = options
        self._url = options.base_url.rstrip("/") + "/chat/completions"
        headers = {"content-type": "application/json", "accept": "application/json"}
        if options.api_key is not None:
            headers["authorization"] = "Bearer " + options.api_key.reveal()
        self._headers = headers
        self._stream_headers = {**headers, "accept": "text/event-stream"}
        self._client = ctx.http_client(UpstreamLimits(
            max_connections=options.max_connections,
            connect_timeout=float(options.connect_timeout),
            read_timeout=float(options.read_timeout),
            backend=options.backend,
        ))

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- requests ----------------------------------------------------------

    async def _send(self, body: bytes, headers: dict[str, str]) -> UpstreamResponse:
        try:
            return await self._client.send("POST", self._url, headers=headers, body=body)
        except (UpstreamError, UpstreamTimeout) as exc:
            raise name_provider(self.name, exc) from exc.__cause__

    async def _read(self, response: UpstreamResponse) -> bytes:
        try:
            return await response.read()
        except (UpstreamError, UpstreamTimeout) as exc:
            raise name_provider(self.name, exc) from exc.__cause__

    async def _raise_for_status(self, response: UpstreamResponse) -> None:
        if response.status >= 400:
            body = await self._read(response)
            raise error_from_response(self.name, response.status, body, response.headers)

    async def chat(self, request: ChatRequest) -> dict[str, Any]:
        body = request.body
        payload = _encode({**body, "model": request.upstream_model})
        response = await self._send(payload, self._headers)
        try:
            await self._raise_for_status(response)
            data = await self._read(response)
        finally:
            await response.aclose()
        try:
            result = _decode(data)
        except msgspec.DecodeError:
            result = None
        if not isinstance(result, dict):
            raise UpstreamError(
                f"Provider {self.name!r} answered with something that is not a JSON object.",
                code="upstream_invalid_response",
            )
        return result

    async def stream(self, request: ChatRequest) -> AsyncIterator[dict[str, Any] | bytes]:
        body = request.body
        stream_options = body.get("stream_options")
        upstream_body = {
            **body,
            "model": request.upstream_model,
            "stream": True,
            "stream_options": {
                **(stream_options if isinstance(stream_options, dict) else {}),
                "include_usage": True,
            },
        }
        response = await self._send(_encode(upstream_body), self._stream_headers)
        raw = response.aiter_bytes()
        try:
            await self._raise_for_status(response)
            content_type = response.headers.get("content-type", "")
            if not content_type.startswith("text/event-stream"):
                raise UpstreamError(
                    f"Provider {self.name!r} answered a stream request with "
                    f"{content_type or 'no content type'!r}, not an event stream.",
                    code="upstream_invalid_response",
                )
            # One flat loop (no nested async generators): this runs once per
            # network read, and the inner loop once per event.
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
                    data = event.data
                    if data == _DONE:
                        return
                    if not data:
                        continue
                    if _ERROR_KEY in data and (error := self._error_in(data)) is not None:
                        raise error
                    yield data
            raise UpstreamError(
                f"Provider {self.name!r} ended the stream without [DONE]; the answer may be "
                "incomplete.",
                code="upstream_stream_truncated",
            )
        finally:
            close = getattr(raw, "aclose", None)
            if close is not None:
                await close()
            await response.aclose()

    def _error_in(self, data: bytes) -> UpstreamError | None:
        """An error event (``{"error": {...}}`` with no choices), or ``None``."""
        try:
            chunk = _decode(data)
        except msgspec.DecodeError:
            return None
        if not isinstance(chunk, dict) or chunk.get("error") is None or chunk.get("choices"):
            return None
        fields = error_fields(data)
        message = fields.get("message") or "no details"
        return UpstreamError(
            f"Provider {self.name!r} failed mid-stream: {message}",
            code=fields.get("code") or "upstream_stream_error",
        )
