"""The HTTP client providers use to reach their upstreams, behind a small interface.

Why an interface: the stock httpx 0.28 pool collapses under concurrency and jams
for good after about a hundred requests are cancelled before their headers
arrive (clients hanging up while waiting for a first token); see
``benchmarks/RESULTS.md`` for the measurements that chose the default. The
default backend is aiohttp; ``httpx2`` (which also survives the cancellation
storm) is available for plugins that want httpx semantics.

Errors are translated at this boundary into the gateway's own family:

    UpstreamError (502)       code upstream_connect_error: nothing answered
                              code upstream_read_error: the connection broke
    UpstreamTimeout (504)     code upstream_timeout: connect or read took too long
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol
from urllib.parse import quote

import msgspec

from ..config.values import Duration, Secret
from ..errors import UpstreamError, UpstreamTimeout
from ..wire.headers import retry_after_seconds
from .keys import KeyOptions, check_headers, check_key_options

log = logging.getLogger("sluiceway.upstream")

__all__ = [
    "HttpOptions",
    "UpstreamClient",
    "UpstreamLimits",
    "UpstreamResponse",
    "create_upstream_client",
    "retry_after_seconds",
]


@dataclass(frozen=True, slots=True)
class UpstreamLimits:
    """Pool size and per-phase timeouts (seconds) for one provider's client.

    ``read_timeout`` bounds each wait for bytes (time to first byte, and each gap
    between stream chunks), not the whole response. ``pool_timeout`` bounds the
    wait for a free connection when all ``max_connections`` are busy: a request
    never queues silently inside the client.
    """

    max_connections: int = 100
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    pool_timeout: float = 5.0
    backend: Literal["aiohttp", "httpx2"] = "aiohttp"


class UpstreamResponse(Protocol):
    """A response whose headers have arrived; the body is read or streamed after."""

    status: int
    headers: Mapping[str, str]

    async def read(self) -> bytes: ...

    def aiter_bytes(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class UpstreamClient(Protocol):
    """One pooled client per provider instance."""

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> UpstreamResponse:
        """Send a request and return once the response headers are in."""
        ...

    async def aclose(self) -> None: ...


class HttpOptions(msgspec.Struct, kw_only=True):
    """The options every HTTP provider shares: its credentials and its pooled client.

    A provider's ``config_model`` subclasses it (``class MyOptions(HttpOptions,
    forbid_unknown_fields=True, kw_only=True)``) and adds its own fields.
    ``max_connections`` defaults to the provider's ``concurrency``, so that no
    request waits inside the client, where a wait would look like a connect failure.
    ``headers`` and ``query`` are sent with every request (vLLM, OpenRouter,
    gateways in front of the upstream...); each key's own come over them.
    """

    api_key: Secret | None = None
    api_keys: Annotated[list[KeyOptions], msgspec.Meta(min_length=1)] | None = None
    key_cooldown: Duration = Duration(60)
    max_connections: Annotated[int, msgspec.Meta(ge=1)] | None = None
    connect_timeout: Duration = Duration(5)
    read_timeout: Duration = Duration(60)
    pool_timeout: Duration = Duration(5)
    backend: Literal["aiohttp", "httpx2"] = "aiohttp"
    # Sent with every request (a key's own come over them); values may be "env:VAR".
    headers: dict[str, Secret] | None = None
    query: dict[str, Secret] | None = None

    def __post_init__(self) -> None:
        check_key_options(self.api_key, self.api_keys)
        check_headers(self.headers)

    def limits(self, concurrency: int) -> UpstreamLimits:
        """The client's limits, given the provider's ``concurrency``."""
        return UpstreamLimits(
            max_connections=self.max_connections or concurrency,
            connect_timeout=float(self.connect_timeout),
            read_timeout=float(self.read_timeout),
            pool_timeout=float(self.pool_timeout),
            backend=self.backend,
        )


def create_upstream_client(limits: UpstreamLimits | None = None) -> UpstreamClient:
    """A client on the configured backend (aiohttp by default)."""
    limits = limits or UpstreamLimits()
    if limits.backend == "httpx2":
        return _Httpx2Client(limits)
    return _AiohttpClient(limits)


# -- aiohttp ----------------------------------------------------------------


class _AiohttpResponse:
    __slots__ = ("_response", "headers", "status")

    def __init__(self, response: Any) -> None:
        self._response = response
        self.status: int = response.status
        self.headers: Mapping[str, str] = response.headers

    async def read(self) -> bytes:
        try:
            data: bytes = await self._response.read()
            return data
        except Exception as exc:
            raise _translate_aiohttp(exc) from exc
        finally:
            self._response.release()

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except Exception as exc:
            raise _translate_aiohttp(exc) from exc

    async def aclose(self) -> None:
        if self._response.closed:
            return
        # A fully read body returns its connection to the pool; a half-read one
        # must not, or the next request would read the rest of this one.
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


# What a URL may hold as it is: the reserved characters and existing %XX escapes.
_URL_SAFE = "!#$%&'()*+,/:;=?@[]~"


def _translate_aiohttp(exc: BaseException) -> Exception:
    import aiohttp

    # Client-facing messages never carry the OS error text: it names internal addresses.
    log.debug("upstream failure: %r", exc)
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return UpstreamTimeout(
            "No connection to the upstream could be had in time.",
            code="upstream_timeout",
            kind="connect",
        )
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return UpstreamTimeout("The upstream did not answer in time.", code="upstream_timeout")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamError(
            "Could not connect to the upstream.", code="upstream_connect_error", kind="connect"
        )
    if isinstance(exc, aiohttp.ClientError):
        return UpstreamError(
            f"The upstream connection failed ({type(exc).__name__}).", code="upstream_read_error"
        )
    if isinstance(exc, Exception):
        return exc
    raise exc


class _AiohttpClient:
    def __init__(self, limits: UpstreamLimits) -> None:
        # Imported here, at provider startup, not on the first request (~100 ms).
        import aiohttp  # noqa: F401
        from yarl import URL

        self.limits = limits
        self._session: Any = None
        self._url = URL

    def _get_session(self) -> Any:
        # Created on first use, inside the serving loop, never at import or build time.
        if self._session is None:
            import aiohttp

            connector = aiohttp.TCPConnector(
                limit=self.limits.max_connections,
                limit_per_host=0,
                ttl_dns_cache=300,
                enable_cleanup_closed=True,
            )
            # aiohttp's `connect` covers the wait for a pooled connection plus the
            # connect itself; `sock_connect` the TCP connect alone.
            timeout = aiohttp.ClientTimeout(
                total=None,
                connect=self.limits.pool_timeout + self.limits.connect_timeout,
                sock_connect=self.limits.connect_timeout,
                sock_read=self.limits.read_timeout,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=timeout,
                auto_decompress=True,
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> UpstreamResponse:
        session = self._get_session()
        if not url.isascii() or " " in url:
            url = quote(url, safe=_URL_SAFE)  # a space or a letter from a base_url
        try:
            # As built, never re-quoted: a signed request (AWS SigV4) must go out with
            # the exact path it was signed for (a model id's %3A stays %3A).
            response = await session.request(method, self._url(url, encoded=True),
                                             headers=headers, data=body)
        except Exception as exc:
            raise _translate_aiohttp(exc) from exc
        return _AiohttpResponse(response)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


# -- httpx2 -----------------------------------------------------------------


class _Httpx2Response:
    __slots__ = ("_response", "headers", "status")

    def __init__(self, response: Any) -> None:
        self._response = response
        self.status = response.status_code
        self.headers = response.headers

    async def read(self) -> bytes:
        try:
            data: bytes = await self._response.aread()
            return data
        except Exception as exc:
            raise _translate_httpx2(exc) from exc
        finally:
            await self._response.aclose()

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        try:
            # Decoded bytes: an upstream may gzip even an event stream.
            async for chunk in self._response.aiter_bytes():
                yield chunk
        except Exception as exc:
            raise _translate_httpx2(exc) from exc

    async def aclose(self) -> None:
        await self._response.aclose()


def _translate_httpx2(exc: Exception) -> Exception:
    import httpx2

    log.debug("upstream failure: %r", exc)
    if isinstance(exc, httpx2.PoolTimeout | httpx2.ConnectTimeout):
        return UpstreamTimeout(
            "No connection to the upstream could be had in time.",
            code="upstream_timeout",
            kind="connect",
        )
    if isinstance(exc, httpx2.TimeoutException):
        return UpstreamTimeout("The upstream did not answer in time.", code="upstream_timeout")
    if isinstance(exc, httpx2.ConnectError):
        return UpstreamError(
            "Could not connect to the upstream.", code="upstream_connect_error", kind="connect"
        )
    if isinstance(exc, httpx2.RequestError):
        return UpstreamError(
            f"The upstream connection failed ({type(exc).__name__}).", code="upstream_read_error"
        )
    return exc


class _Httpx2Client:
    def __init__(self, limits: UpstreamLimits) -> None:
        import httpx2

        self._client = httpx2.AsyncClient(
            limits=httpx2.Limits(max_connections=limits.max_connections),
            timeout=httpx2.Timeout(
                connect=limits.connect_timeout,
                read=limits.read_timeout,
                write=limits.read_timeout,
                pool=limits.pool_timeout,
            ),
        )

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> UpstreamResponse:
        request = self._client.build_request(method, url, headers=headers, content=body)
        try:
            response = await self._client.send(request, stream=True)
        except Exception as exc:
            raise _translate_httpx2(exc) from exc
        return _Httpx2Response(response)

    async def aclose(self) -> None:
        await self._client.aclose()
