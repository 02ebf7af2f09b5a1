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

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from sluiceway.api import ChatRequest, EmbeddingsRequest, HttpUpstream, UpstreamError

from .errors import error_fields, error_from_response, is_context_window

if TYPE_CHECKING:
    from sluiceway.api import ProviderContext

    from .config import OpenAIOptions

__all__ = ["OpenAIProvider"]

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode

_DONE = b"[DONE]"
_ERROR_KEY = b'"error"'
_JSON = {"content-type": "application/json", "accept": "application/json"}


def bearer(secret: str) -> dict[str, str]:
    """The headers that carry an OpenAI key."""
    return {"authorization": "Bearer " + secret}


class OpenAIProvider:
    """One ``[[providers]]`` table of type ``openai``: one pooled client, reused.

    Subclasses serve upstreams that speak the same API at other addresses or
    with other credentials (Azure OpenAI): ``url(path, model)`` places each
    request, ``credential`` and ``query`` are given to :class:`HttpUpstream`, and
    ``auth_headers`` (when set) is awaited per request for headers that change
    over time, such as a bearer token that expires.
    """

    auth_headers: Callable[[], Awaitable[Mapping[str, str]]] | None = None

    def __init__(
        self, ctx: ProviderContext, *, base_url: str | None = None,
        credential: Callable[[str], dict[str, str]] = bearer,
        query: Mapping[str, str] | None = None,
    ) -> None:
        options: OpenAIOptions = ctx.options
        self.name = ctx.name
        self.options = options
        self._base = (base_url or options.base_url).rstrip("/")
        self.http = HttpUpstream(
            ctx, options, headers=_JSON, credential=credential, errors=error_from_response,
            query=query,
        )
        self.keys = self.http.credentials.ring

    def url(self, path: str, model: str) -> str:
        """Where a request for ``model`` to ``path`` (``"chat/completions"``) goes."""
        return f"{self._base}/{path}"

    async def _extra(self) -> Mapping[str, str] | None:
        return await self.auth_headers() if self.auth_headers is not None else None

    async def aclose(self) -> None:
        await self.http.aclose()

    async def chat(self, request: ChatRequest) -> dict[str, Any]:
        model = request.upstream_model
        result = await self.http.post_json(
            self.url("chat/completions", model), _encode({**request.body, "model": model}),
            model, extra=await self._extra(),
        )
        if not isinstance(result, dict):
            raise self.http.invalid("something that is not a JSON object")
        return result

    async def embeddings(self, request: EmbeddingsRequest) -> dict[str, Any]:
        """The client's body with only ``model`` replaced; the answer as it came (the
        core puts its vectors in the encoding the client asked for)."""
        model = request.upstream_model
        result = await self.http.post_json(
            self.url("embeddings", model), _encode({**request.body, "model": model}), model,
            extra=await self._extra(),
        )
        if not isinstance(result, dict):
            raise self.http.invalid("something that is not a JSON object")
        return result

    async def stream(self, request: ChatRequest) -> AsyncIterator[dict[str, Any] | bytes]:
        body = request.body
        model = request.upstream_model
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
        async with self.http.stream(self.url("chat/completions", model), _encode(upstream_body),
                                    model, extra=await self._extra()) as batches:
            # Chunks pass on as the upstream's own JSON bytes: the core frames them.
            async for events in batches:
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
