"""The Gemini provider: chat completions translated to ``generateContent`` and back.

Streams use ``streamGenerateContent?alt=sse``: each event is a whole
``GenerateContentResponse`` holding the next parts, the last one its
``finishReason`` and usage. Gemini ends a stream by closing it (there is no
``[DONE]``), so a stream closed before a ``finishReason`` is reported as cut.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import msgspec

from sluiceway.api import (
    ChatRequest,
    EmbeddingsRequest,
    HttpUpstream,
    InvalidRequest,
    UpstreamError,
    embeddings_object,
    estimate_input_tokens,
)

from .request import gemini_request
from .response import ChunkTranslator, completion, error_from_response

if TYPE_CHECKING:
    from sluiceway.api import ProviderContext

    from .config import GeminiOptions

__all__ = ["GeminiProvider"]

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
_JSON = {"content-type": "application/json", "accept": "application/json"}


class GeminiProvider:
    """One ``[[providers]]`` table of type ``gemini``: one pooled client, reused."""

    def __init__(self, ctx: ProviderContext) -> None:
        options: GeminiOptions = ctx.options
        self.name = ctx.name
        self._root = f"{options.base_url.rstrip('/')}/{options.api_version}/models/"
        self.http = HttpUpstream(
            ctx, options, headers=_JSON, credential=lambda secret: {"x-goog-api-key": secret},
            errors=error_from_response,
        )

    def _url(self, model: str, method: str) -> str:
        return f"{self._root}{quote(model.removeprefix('models/'), safe='')}:{method}"

    async def aclose(self) -> None:
        await self.http.aclose()

    async def chat(self, request: ChatRequest) -> dict[str, Any]:
        model = request.upstream_model
        answer = await self.http.post_json(
            self._url(model, "generateContent"), _encode(gemini_request(request.body)), model)
        return completion(answer, model, self.name)

    async def stream(self, request: ChatRequest) -> AsyncIterator[dict[str, Any]]:
        model = request.upstream_model
        translator = ChunkTranslator(model, self.name)
        body = _encode(gemini_request(request.body))
        async with self.http.stream(self._url(model, "streamGenerateContent?alt=sse"),
                                    body, model) as batches:
            async for events in batches:
                for event in events:
                    if not event.data:
                        continue
                    try:
                        answer = _decode(event.data)
                    except msgspec.DecodeError:
                        raise self.http.invalid("an event that is not JSON") from None
                    for chunk in translator.feed(answer):
                        yield chunk
        if not translator.finished:
            raise UpstreamError(
                f"Provider {self.name!r} ended the stream before its finishReason; the "
                "answer may be incomplete.", code="upstream_stream_truncated",
            )

    async def count_tokens(self, request: ChatRequest) -> int:
        """Gemini's own count of the request's input (``countTokens``)."""
        model = request.upstream_model
        generate = {"model": "models/" + model.removeprefix("models/"),
                    **gemini_request(request.body)}
        generate.pop("generationConfig", None)
        answer = await self.http.post_json(
            self._url(model, "countTokens"), _encode({"generateContentRequest": generate}),
            model)
        total = answer.get("totalTokens") if isinstance(answer, dict) else None
        if not isinstance(total, int):
            raise self.http.invalid("a token count without totalTokens")
        return total

    async def embeddings(self, request: EmbeddingsRequest) -> dict[str, Any]:
        """``batchEmbedContents``, one request per input. Gemini reports no usage:
        the input tokens are estimated."""
        model = request.upstream_model
        name = "models/" + model.removeprefix("models/")
        items = []
        for index, text in enumerate(request.inputs):
            if not isinstance(text, str):
                raise InvalidRequest("Gemini embeds text, not token ids.",
                                     param=f"input[{index}]", code="invalid_value")
            item: dict[str, Any] = {"model": name, "content": {"parts": [{"text": text}]}}
            if request.dimensions:
                item["outputDimensionality"] = request.dimensions
            items.append(item)
        answer = await self.http.post_json(
            self._url(model, "batchEmbedContents"), _encode({"requests": items}), model)
        embeddings = answer.get("embeddings") if isinstance(answer, dict) else None
        if not isinstance(embeddings, list) or len(embeddings) != len(items):
            raise self.http.invalid("something other than one embedding per input")
        vectors = [e.get("values") if isinstance(e, dict) else None for e in embeddings]
        if not all(isinstance(v, list) for v in vectors):
            raise self.http.invalid("an embedding without values")
        tokens = estimate_input_tokens({"system": "\n".join(map(str, request.inputs))})
        return embeddings_object(vectors, model=model, prompt_tokens=tokens)  # type: ignore[arg-type]
