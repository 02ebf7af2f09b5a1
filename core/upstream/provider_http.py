"""What every HTTP provider does the same way, so a provider plugin only builds
bodies and reads answers.

:class:`HttpUpstream` holds one provider's pooled client and keys. It picks a key
per request, sends, turns a failed answer into the gateway's error (resting the
key the upstream refused or rate-limited), names the provider in every transport
error, and reads a JSON answer or an event stream. A stream is an async context
manager (the response is closed on leaving it, however it is left) that yields
the events of each network read as one batch, so the provider's loop stays flat:
no async generator between the socket and the provider's own.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from ..errors import GatewayError, UpstreamError, UpstreamTimeout
from ..wire.sse import SSEDecoder, SSEEvent
from .keys import ApiKey, Credentials, revealed

if TYPE_CHECKING:
    from ..components import ProviderContext
    from .client import HttpOptions, UpstreamResponse

__all__ = ["ErrorMapper", "HttpUpstream", "UpstreamBytes", "UpstreamEvents", "error_snippet",
           "name_provider"]

log = logging.getLogger("sluiceway.upstream")

_decode = msgspec.json.Decoder().decode
_SNIPPET = 200

# (provider, status, body, headers) -> the error to raise for an answer >= 400.
ErrorMapper = Callable[[str, int, bytes, Mapping[str, str]], GatewayError]


def error_snippet(body: bytes, limit: int = _SNIPPET) -> str:
    """The start of an error body on one line (HTML from a proxy, plain text), at
    most ``limit`` characters."""
    text = " ".join(body[: limit * 4].decode("utf-8", "replace").split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def name_provider(provider: str, error: UpstreamError | UpstreamTimeout) -> GatewayError:
    """The same error (code and kind kept), its message prefixed with the provider's name."""
    cls = UpstreamTimeout if isinstance(error, UpstreamTimeout) else UpstreamError
    renamed = cls(f"Provider {provider!r}: {error.message}", code=error.code, kind=error.kind)
    renamed.__cause__ = error.__cause__
    return renamed


class UpstreamBytes:
    """The body of one streamed answer, as the network gives it; transport errors
    name the provider."""

    __slots__ = ("_provider", "_raw", "response")

    def __init__(self, provider: str, response: UpstreamResponse) -> None:
        self._provider = provider
        self.response = response
        self._raw = response.aiter_bytes()

    def __aiter__(self) -> UpstreamBytes:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await anext(self._raw)
        except (UpstreamError, UpstreamTimeout) as exc:
            raise name_provider(self._provider, exc) from exc.__cause__

    def events(self) -> UpstreamEvents:
        """The same body as server-sent events."""
        return UpstreamEvents(self)

    async def aclose(self) -> None:
        close = getattr(self._raw, "aclose", None)
        if close is not None:
            await close()
        await self.response.aclose()


class UpstreamEvents:
    """The server-sent events of one streamed answer, a batch per network read."""

    __slots__ = ("_bytes", "_decoder", "_ended", "response")

    def __init__(self, chunks: UpstreamBytes) -> None:
        self._bytes = chunks
        self.response = chunks.response
        self._decoder = SSEDecoder()
        self._ended = False

    def __aiter__(self) -> UpstreamEvents:
        return self

    async def __anext__(self) -> Iterator[SSEEvent]:
        if self._ended:
            raise StopAsyncIteration
        try:
            received = await anext(self._bytes)
        except StopAsyncIteration:
            self._ended = True
            return self._decoder.flush()
        return self._decoder.feed(received)

    async def aclose(self) -> None:
        await self._bytes.aclose()


class HttpUpstream:
    """One provider's way to its upstream: a pooled client, its keys, its error mapping.

    ``headers`` and ``query`` (the provider's fixed parameters, such as an API
    version) go with every request; the options' own ``headers`` and ``query``
    come over them, then ``credential(secret)`` (the headers that carry a key,
    ``{"authorization": "Bearer ..."}``), then each key's own headers and query.
    ``errors`` maps an answer with status >= 400 to the gateway's error (see the
    openai plugin's ``error_from_response`` for the kinds the retry loop
    understands).
    """

    def __init__(
        self,
        ctx: ProviderContext,
        options: HttpOptions,
        *,
        headers: Mapping[str, str],
        credential: Callable[[str], dict[str, str]],
        errors: ErrorMapper,
        query: Mapping[str, str] | None = None,
    ) -> None:
        self.name = ctx.name
        self.credentials = Credentials(
            ctx.name, options.api_key, options.api_keys,
            cooldown=float(options.key_cooldown),
            base_headers={**headers, **revealed(options.headers, lower=True)},
            credential=credential,
            models=[entry.upstream_id for entry in ctx.models],
            query={**(query or {}), **revealed(options.query)},
        )
        self.client = ctx.http_client(options.limits(ctx.concurrency))
        self._errors = errors

    async def aclose(self) -> None:
        """Close the pooled client (the gateway also does, at shutdown)."""
        await self.client.aclose()

    def invalid(self, what: str) -> UpstreamError:
        """The error for an answer that is not what the API promises: ``what`` it was."""
        return UpstreamError(
            f"Provider {self.name!r} answered with {what}.", code="upstream_invalid_response"
        )

    def pick(
        self, model: str, *, stream: bool, extra: Mapping[str, str] | None = None
    ) -> tuple[ApiKey | None, dict[str, str]]:
        """A key for ``model`` and the headers to send (``extra`` added)."""
        key, headers = self.credentials.pick(model, stream=stream)
        return key, {**headers, **extra} if extra else headers

    def target(self, url: str, key: ApiKey | None) -> str:
        """``url`` with the query parameters for requests sent with ``key``."""
        query = self.credentials.query_for(key)
        if not query:
            return url
        return f"{url}{'&' if '?' in url else '?'}{query}"

    async def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> UpstreamResponse:
        """POST ``body``; returns once the answer's headers are in."""
        try:
            return await self.client.send("POST", url, headers=headers, body=body)
        except (UpstreamError, UpstreamTimeout) as exc:
            raise name_provider(self.name, exc) from exc.__cause__

    async def read(self, response: UpstreamResponse) -> bytes:
        """The whole body of ``response``."""
        try:
            return await response.read()
        except (UpstreamError, UpstreamTimeout) as exc:
            raise name_provider(self.name, exc) from exc.__cause__

    async def check(self, response: UpstreamResponse, key: ApiKey | None, model: str) -> None:
        """Raise the mapped error for an answer >= 400, resting ``key`` as it warrants."""
        if response.status < 400:
            return
        body = await self.read(response)
        error = self._errors(self.name, response.status, body, response.headers)
        if error.kind == "auth" and key is not None:
            # The upstream's text may quote part of the key: it goes to the log only.
            log.warning(
                "provider %r: upstream refused key %r with HTTP %d: %s", self.name, key.name,
                response.status, getattr(error, "upstream_message", "") or error_snippet(body),
            )
        self.credentials.blame(key, error, model, response.headers)
        raise error

    async def post_json(
        self, url: str, body: bytes, model: str, *, extra: Mapping[str, str] | None = None
    ) -> Any:
        """POST ``body`` for ``model`` and decode the JSON answer; ``None`` if the
        answer is not JSON (the caller says what it expected)."""
        key, headers = self.pick(model, stream=False, extra=extra)
        response = await self.send(self.target(url, key), body, headers)
        try:
            await self.check(response, key, model)
            data = await self.read(response)
        finally:
            await response.aclose()
        try:
            return _decode(data)
        except msgspec.DecodeError:
            return None

    @contextlib.asynccontextmanager
    async def stream(
        self, url: str, body: bytes, model: str, *, extra: Mapping[str, str] | None = None
    ) -> AsyncIterator[UpstreamEvents]:
        """POST ``body`` for ``model`` and give its event stream, checked: an error
        answer raises, and so does one that is not ``text/event-stream``."""
        async with self.stream_bytes(url, body, model, extra=extra) as chunks:
            yield chunks.events()

    @contextlib.asynccontextmanager
    async def stream_bytes(
        self, url: str, body: bytes, model: str, *, extra: Mapping[str, str] | None = None,
        content_type: str = "text/event-stream",
    ) -> AsyncIterator[UpstreamBytes]:
        """POST ``body`` for ``model`` and give the answer's bytes as they arrive, for
        an upstream with framing of its own (AWS's binary event stream): checked as
        :meth:`stream` checks, against ``content_type``."""
        key, headers = self.pick(model, stream=True, extra=extra)
        if content_type != "text/event-stream":
            headers = {**headers, "accept": content_type}
        response = await self.send(self.target(url, key), body, headers)
        chunks = UpstreamBytes(self.name, response)
        try:
            await self.check(response, key, model)
            received = response.headers.get("content-type", "")
            if not received.startswith(content_type):
                wanted = ("an event stream" if content_type == "text/event-stream"
                          else repr(content_type))
                raise self.invalid(
                    f"{received or 'no content type'!r} to a stream request, not {wanted}"
                )
            yield chunks
        finally:
            await chunks.aclose()
