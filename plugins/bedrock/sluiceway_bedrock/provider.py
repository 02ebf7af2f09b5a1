"""The Bedrock provider: Converse and ConverseStream, signed with SigV4.

Every request is signed afresh (the signature covers its time) by botocore's
``SigV4Auth``: the exact URL and body sent, service ``bedrock``. The model id
goes in the path percent-encoded (``anthropic.claude-...-v1%3A0``), as AWS's
own SDKs send it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import msgspec
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from sluiceway.api import ChatRequest, ConfigError, HttpUpstream, UpstreamError

from .converse import converse_request, openai_completion
from .errors import error_from_response
from .stream import ChunkTranslator, frames

if TYPE_CHECKING:
    from sluiceway.api import ProviderContext

    from .config import BedrockOptions

__all__ = ["BedrockProvider"]

_encode = msgspec.json.Encoder().encode
_JSON = {"content-type": "application/json", "accept": "application/json"}
_EVENT_STREAM = "application/vnd.amazon.eventstream"


class BedrockProvider:
    """One ``[[providers]]`` table of type ``bedrock``: one pooled client, reused."""

    def __init__(self, ctx: ProviderContext) -> None:
        options: BedrockOptions = ctx.options
        self.name = ctx.name
        self.options = options
        self.region = options.resolved_region() or ""
        self._root = options.endpoint() + "/model/"
        self.http = HttpUpstream(
            ctx, options, headers=_JSON,
            credential=lambda secret: {"authorization": "Bearer " + secret},
            errors=error_from_response,
        )
        self._signer: SigV4Auth | None = None
        if self.http.credentials.ring is None:
            found = options.credentials()
            if found is None:
                raise ConfigError(
                    f"provider {ctx.name!r}: no AWS credentials: set access_key_id and "
                    "secret_access_key (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), or "
                    "a Bedrock api_key")
            self._signer = SigV4Auth(
                Credentials(found.access_key_id, found.secret_access_key, found.session_token),
                "bedrock", self.region)

    async def aclose(self) -> None:
        await self.http.aclose()

    def _url(self, model: str, action: str) -> str:
        return f"{self._root}{quote(model, safe='')}/{action}"

    def _signed(self, url: str, body: bytes) -> dict[str, str] | None:
        """The SigV4 headers for this exact request (``None`` with an API key)."""
        if self._signer is None:
            return None
        request = AWSRequest(method="POST", url=url, data=body,
                             headers={"content-type": "application/json"})
        self._signer.add_auth(request)
        return {name.lower(): value for name, value in request.headers.items()}

    def _body(self, request: ChatRequest) -> bytes:
        return _encode(converse_request(
            request.body, request.upstream_model,
            additional=self.options.additional_model_request_fields))

    async def chat(self, request: ChatRequest) -> dict[str, Any]:
        model = request.upstream_model
        url, body = self._url(model, "converse"), self._body(request)
        answer = await self.http.post_json(url, body, model, extra=self._signed(url, body))
        if not isinstance(answer, dict) or not isinstance(answer.get("output"), dict):
            raise self.http.invalid("something that is not a Converse answer")
        return openai_completion(answer, model)

    async def stream(self, request: ChatRequest) -> AsyncIterator[dict[str, Any]]:
        model = request.upstream_model
        url, body = self._url(model, "converse-stream"), self._body(request)
        translator = ChunkTranslator(model, self.name)
        async with self.http.stream_bytes(url, body, model, extra=self._signed(url, body),
                                          content_type=_EVENT_STREAM) as chunks:
            async for batch in frames(chunks, self.name):
                for headers, payload in batch:
                    for chunk in translator.feed(headers, payload):
                        yield chunk
        if not translator.stopped:
            raise UpstreamError(
                f"Provider {self.name!r} ended the stream before messageStop; the answer "
                "may be incomplete.", code="upstream_stream_truncated")
