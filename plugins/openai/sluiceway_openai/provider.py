"""The OpenAI-compatible provider: a pass-through fast path.

The client's body goes upstream with only ``model`` replaced (and, for streams,
``stream_options.include_usage`` forced on, so usage is always known). Stream
chunks come back as the upstream's own JSON bytes: the core frames them without
decoding or re-encoding, so a chunk costs one SSE parse and a few byte searches.

Each request picks one of the provider's keys (:class:`~sluiceway.upstream.keys.KeyRing`)
for its upstream model. A key the upstream refuses (401/403) rests for
``key_cooldown`` if another key can take over (the last one never rests: its
refusal must reach the operator as an auth error, not as "all keys resting");
a rate-limited key (429) rests for the upstream's Retry-After. Either error
carries ``alternate=True`` when another key could serve at once, which tells the
core's retry loop to send the request again to this provider straight away.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import msgspec

from sluiceway.api import (
    ApiKey,
    ChatRequest,
    Credentials,
    SSEDecoder,
    UpstreamError,
    UpstreamTimeout,
)

from .errors import (
    UpstreamAuthError,
    error_fields,
    error_from_response,
    is_context_window,
    name_provider,
)

if TYPE_CHECKING:
    from sluiceway.api import ProviderContext, UpstreamResponse

    from .config import OpenAIOptions

__all__ = ["OpenAIProvider"]

log = logging.getLogger("sluiceway.openai")

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode

_DONE = b"[DONE]"
_ERROR_KEY = b'"error"'
_JSON = {"content-type": "application/json", "accept": "application/json"}


class OpenAIProvider:
    """One ``[[providers]]`` table of type ``openai``: one pooled client, reused."""

    def __init__(self, ctx: ProviderContext) -> None:
        options: OpenAIOptions = ctx.options
        self.name = ctx.name
        self.options = options
        self._url = options.base_url.rstrip("/") + "/chat/completions"
        self.credentials = Credentials(
            ctx.name, options.api_key, options.api_keys,
            cooldown=float(options.key_cooldown), base_headers=_JSON,
            credential=lambda secret: {"authorization": "Bearer " + secret},
            models=[entry.upstream_id for entry in ctx.models],
        )
        self.keys = self.credentials.ring
        self._client = ctx.http_client(options.limits(ctx.concurrency))

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

    async def _raise_for_status(
        self, response: UpstreamResponse, key: ApiKey | None, model: str
    ) -> None:
        if response.status >= 400:
            body = await self._read(response)
            error = error_from_response(self.name, response.status, body, response.headers)
            if isinstance(error, UpstreamAuthError) and key is not None:
                # The upstream's text may quote part of the key: it goes to the log only.
                log.warning(
                    "provider %r: upstream refused key %r with HTTP %d: %s",
                    self.name, key.name, error.upstream_status, error.upstream_message,
                )
            self.credentials.blame(key, error, model, response.headers)
            raise error

    async def chat(self, request: ChatRequest) -> dict[str, Any]:
        body = request.body
        model = request.upstream_model
        key, headers = self.credentials.pick(model, stream=False)
        response = await self._send(_encode({**body, "model": model}), headers)
        try:
            await self._raise_for_status(response, key, model)
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
        model = request.upstream_model
        key, headers = self.credentials.pick(model, stream=True)
        stream_options = body.get("stream_options")
        upstream_body = {
            **body,
            "model": model,
            "stream": True,
            "stream_options": {
                **(stream_options if isinstance(stream_options, dict) else {}),
                "include_usage": True,
            },
        }
        response = await self._send(_encode(upstream_body), headers)
        raw = response.aiter_bytes()
        try:
            await self._raise_for_status(response, key, model)
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
        code = fields.get("code")
        return UpstreamError(
            f"Provider {self.name!r} failed mid-stream: {message}",
            code=code or "upstream_stream_error",
            kind="context_window" if is_context_window(code, message) else "server",
        )
