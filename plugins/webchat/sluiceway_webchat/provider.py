"""The base class of web-login providers.

A subclass writes two methods, the site's chat call, and inherits the rest:

* ``answer(session, request) -> dict``: one OpenAI ``chat.completion``;
* ``stream_answer(session, request)``: an async iterator of OpenAI
  ``chat.completion.chunk`` objects.

Both use :meth:`WebChatProvider.post` (or their own calls with
:meth:`WebChatProvider.headers`), which raises
:class:`~sluiceway.sessions.SessionRejected` on a 401/403: the session manager
then logs in again once and calls the method once more. The login itself is the
declarative form of the provider's ``login`` table, or the subclass's own
:meth:`WebChatProvider.login` for flows a form description cannot express.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

import sluiceway.api as sluiceway
from sluiceway.api import (
    ChatRequest,
    RateLimited,
    Session,
    SessionRejected,
    UpstreamError,
    UpstreamLimits,
)

from .browser import browser_options, shared_browser
from .login import extract_session, fill_login_form, save_artifacts
from .options import WebChatOptions

if TYPE_CHECKING:
    from playwright.async_api import BrowserContext, Page

    from sluiceway.api import UpstreamResponse

__all__ = ["LoginFailed", "WebChatProvider"]

log = logging.getLogger("sluiceway.webchat")

_encode = msgspec.json.Encoder().encode


class LoginFailed(UpstreamError):
    """A browser login did not succeed; kind ``auth``, so the retry loop falls over
    to another target instead of charging the deployment's health."""

    def __init__(self, message: str, *, code: str = "upstream_login_failed") -> None:
        super().__init__(message, code=code, kind="auth")


class WebChatProvider:
    """One ``[[providers]]`` table of a web-login type. Satisfies ``sluiceway.Provider``.

    ``self.sessions`` is the provider's handle in ``gateway.sessions``;
    ``self.browser`` the gateway's shared Chromium; ``self.http`` a pooled client
    for the site's API (warm requests need no browser at all).
    """

    options_type: ClassVar[type[WebChatOptions]] = WebChatOptions

    def __init__(self, ctx: sluiceway.ProviderContext) -> None:
        self.name = ctx.name
        self.options: WebChatOptions = ctx.options
        self.base_url = self.options.base_url.rstrip("/")
        gateway = ctx.gateway
        self.browser = shared_browser(gateway)
        artifacts = browser_options(gateway).artifacts_dir
        settings = gateway.config.sessions
        self.artifacts_dir = Path(gateway.config.base_dir) / (
            artifacts or str(Path(settings.path) / "failures")
        )
        self.http = ctx.http_client(UpstreamLimits(
            max_connections=min(ctx.concurrency, 256),
            read_timeout=float(self.options.read_timeout),
        ))
        self.sessions = gateway.sessions.provider(ctx.name, self._login)

    # -- logging in -----------------------------------------------------------

    async def _login(self) -> Session:
        """A fresh context, the login flow, extraction; artifacts if it fails."""
        async with self.browser.context() as context:
            page = await context.new_page()
            try:
                async with asyncio.timeout(float(self.options.login_timeout)):
                    await self.login(page)
                    return await self.extract(context, page)
            except TimeoutError as exc:
                await self._keep_evidence(page)
                raise LoginFailed(
                    f"Provider {self.name!r}: the login did not finish within "
                    f"{float(self.options.login_timeout):.0f}s.",
                    code="upstream_login_timeout",
                ) from exc
            except Exception as exc:
                await self._keep_evidence(page)
                raise LoginFailed(
                    f"Provider {self.name!r}: the login failed ({type(exc).__name__})."
                ) from exc

    async def _keep_evidence(self, page: Page) -> None:
        paths = await save_artifacts(page, self.artifacts_dir, self.name)
        if paths:
            log.warning("provider %r: login failed; saved %s", self.name,
                        ", ".join(str(p) for p in paths))

    async def login(self, page: Page) -> None:
        """Log in on ``page`` (a fresh context). The default fills the declarative
        ``login`` form; override it for other flows (read secrets from
        ``self.options.credentials``)."""
        if self.options.login is None:
            raise NotImplementedError(
                f"provider {self.name!r} has no login table and its type no login flow"
            )
        await fill_login_form(page, self.options.login, self.base_url)

    async def extract(self, context: BrowserContext, page: Page) -> Session:
        """The session to keep once logged in. The default keeps what the ``login``
        table's ``keep_*`` and ``bearer_from`` name; override it to add ``extra``
        or an ``expires_at`` the site announces."""
        return await extract_session(self.name, context, page, self.options.login)

    # -- the site's API ---------------------------------------------------------

    def headers(self, session: Session, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """Request headers carrying the session: its cookies, and its bearer token."""
        headers = {"accept": "application/json", **(extra or {})}
        cookies = session.cookie_header()
        if cookies:
            headers["cookie"] = cookies
        if session.bearer:
            headers["authorization"] = "Bearer " + session.bearer
        return headers

    async def post(
        self, session: Session, path: str, body: Any, *, headers: Mapping[str, str] | None = None
    ) -> UpstreamResponse:
        """POST ``body`` as JSON to ``base_url + path`` with the session; the response
        once its status is a success (the caller reads or streams it and closes it).

        401/403 raise :class:`SessionRejected`; 429 ``RateLimited``; other failures
        ``UpstreamError``, naming the provider."""
        all_headers = self.headers(session, {"content-type": "application/json", **(headers or {})})
        # Connect failures and timeouts come out as UpstreamError/UpstreamTimeout.
        response = await self.http.send(
            "POST", self.base_url + path, headers=all_headers, body=_encode(body)
        )
        if response.status < 400:
            return response
        await response.aclose()
        status = response.status
        if status in (401, 403):
            raise SessionRejected(f"{self.name}: HTTP {status}")
        if status == 429:
            raise RateLimited(f"Provider {self.name!r} is rate limiting us.")
        kind = "server" if status >= 500 else "client"
        raise UpstreamError(f"Provider {self.name!r} answered HTTP {status}.",
                            code="upstream_error", kind=kind)

    async def answer(self, session: Session, request: ChatRequest) -> dict[str, Any]:
        """The site's answer to ``request`` as an OpenAI ``chat.completion``."""
        raise NotImplementedError

    def stream_answer(
        self, session: Session, request: ChatRequest
    ) -> AsyncIterator[dict[str, Any]]:
        """The site's answer as OpenAI ``chat.completion.chunk`` objects."""
        raise NotImplementedError

    # -- the Provider protocol --------------------------------------------------

    async def chat(self, request: ChatRequest) -> dict[str, Any]:
        return await self.sessions.call(
            lambda session: self.answer(session, request), request_id=request.request_id
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[dict[str, Any]]:
        async def first(
            session: Session,
        ) -> tuple[AsyncIterator[dict[str, Any]], dict[str, Any] | None]:
            # The first chunk is pulled inside the session call: a 401 arrives
            # before it, while a re-login and a retry are still possible.
            chunks = self.stream_answer(session, request)
            try:
                return chunks, await anext(chunks)
            except StopAsyncIteration:
                return chunks, None
            except BaseException:
                await _close(chunks)
                raise

        chunks, head = await self.sessions.call(first, request_id=request.request_id)
        try:
            if head is not None:
                yield head
                async for chunk in chunks:
                    yield chunk
        finally:
            await _close(chunks)

    async def aclose(self) -> None:
        """The HTTP client is closed by the gateway, the browser by the session manager."""


async def _close(chunks: AsyncIterator[Any]) -> None:
    closer = getattr(chunks, "aclose", None)
    if closer is not None:
        await closer()
