"""One Chromium per gateway, shared by every login, with a fresh context per login.

A browser costs about 350 MB and a Node driver about 140 MB, a context about 60
MB: so all logins share one browser, each in its own context (its own cookies
and storage, closed as soon as the login is extracted). The browser is launched
on the first login, closed after ``idle_timeout`` without one, and closed at
shutdown by the session manager (``gateway.sessions.shared``).

Playwright is imported only when a browser is first needed: a gateway whose
sessions are all warm never loads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from sluiceway.api import validate_options

from .options import BrowserOptions, chromium_path

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext, Playwright

    import sluiceway.api as sluiceway

__all__ = ["SharedBrowser", "browser_options", "shared_browser"]

log = logging.getLogger("sluiceway.webchat")

_SHARED_KEY = "webchat.browser"


class SharedBrowser:
    """Lazily launched Chromium; :meth:`context` hands out one context per login."""

    def __init__(self, options: BrowserOptions) -> None:
        self.options = options
        self.executable_path = chromium_path(options)
        # Browsers launched by this object: how tests see that warm requests launch none.
        self.launches = 0
        self._playwright: Playwright | None = None
        self._browser: Browser | None = None
        self._lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(options.max_concurrent_logins)
        self._active = 0
        self._idle: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._browser is not None and self._browser.is_connected()

    async def _launch(self) -> Browser:
        async with self._lock:
            if self._browser is not None and self._browser.is_connected():
                return self._browser
            await self._close_now()
            from playwright.async_api import async_playwright

            self._playwright = await async_playwright().start()
            try:
                self._browser = await self._playwright.chromium.launch(
                    executable_path=self.executable_path,
                    args=list(self.options.args),
                    headless=self.options.headless,
                )
            except BaseException:
                await self._close_now()
                raise
            self.launches += 1
            log.info("launched Chromium %s (%s)", self._browser.version,
                     self.executable_path or "Playwright's own")
            return self._browser

    @contextlib.asynccontextmanager
    async def context(self) -> AsyncIterator[BrowserContext]:
        """A fresh browser context (no cookies, no storage), closed on exit."""
        async with self._slots:
            self._active += 1
            if self._idle is not None:
                self._idle.cancel()
                self._idle = None
            try:
                browser = await self._launch()
                context = await browser.new_context()
                try:
                    yield context
                finally:
                    with contextlib.suppress(Exception):  # the browser may be gone already
                        await context.close()
            finally:
                self._active -= 1
                if not self._active and self.options.idle_timeout > 0:
                    self._idle = asyncio.get_running_loop().create_task(self._close_when_idle())

    async def _close_when_idle(self) -> None:
        await asyncio.sleep(self.options.idle_timeout)
        async with self._lock:
            if not self._active:
                log.info("closing Chromium after %.0fs without a login", self.options.idle_timeout)
                await self._close_now()

    async def _close_now(self) -> None:
        browser, self._browser = self._browser, None
        playwright, self._playwright = self._playwright, None
        if browser is not None:
            with contextlib.suppress(Exception):
                await browser.close()
        if playwright is not None:
            with contextlib.suppress(Exception):
                await playwright.stop()

    async def aclose(self) -> None:
        """Close the browser and the driver (at shutdown)."""
        idle, self._idle = self._idle, None
        if idle is not None:
            idle.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await idle
        async with self._lock:
            await self._close_now()


def browser_options(gateway: sluiceway.Gateway) -> BrowserOptions:
    """``[plugin.webchat]``, validated (defaults when the table is absent)."""
    config = gateway.config
    options: BrowserOptions = validate_options(
        config.plugin_options("webchat"), BrowserOptions,
        source=config.source, key="plugin.webchat",
    )
    return options


def shared_browser(gateway: sluiceway.Gateway) -> SharedBrowser:
    """The gateway's one browser (made on first call, closed at shutdown)."""
    browser: SharedBrowser = gateway.sessions.shared(
        _SHARED_KEY, lambda: SharedBrowser(browser_options(gateway))
    )
    return browser
