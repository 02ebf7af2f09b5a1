"""Driving a login page: the declarative form, what is kept afterwards, and what
is saved when a login fails.

Nothing here logs a credential or a value taken from the site: the session
holds them, sealed by the store. The failure artifacts (a screenshot and the
page's HTML) are for the operator, written with mode 0600 in a 0700 directory.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

from sluiceway.api import Session

from .options import LoginForm

if TYPE_CHECKING:
    from playwright.async_api import BrowserContext, Page

__all__ = ["extract_session", "fill_login_form", "save_artifacts", "storage_of"]

log = logging.getLogger("sluiceway.webchat")

_STORAGE_JS = {
    "local_storage": "() => Object.fromEntries(Object.entries(window.localStorage))",
    "session_storage": "() => Object.fromEntries(Object.entries(window.sessionStorage))",
}


async def fill_login_form(page: Page, form: LoginForm, base_url: str) -> None:
    """Open the form, fill it, submit it, and wait until the site says we are in."""
    await page.goto(urljoin(base_url.rstrip("/") + "/", form.url))
    for selector, value in form.fields.items():
        await page.fill(selector, value.reveal())
    if form.success_url is not None:
        async with page.expect_navigation(url=form.success_url):
            await page.click(form.submit)
    else:
        await page.click(form.submit)
    if form.success_selector is not None:
        await page.wait_for_selector(form.success_selector)


async def storage_of(page: Page, which: str) -> dict[str, str]:
    """The page origin's ``local_storage`` or ``session_storage``, as a dict."""
    values: Any = await page.evaluate(_STORAGE_JS[which])
    return {str(k): str(v) for k, v in dict(values).items()}


async def extract_session(
    provider: str, context: BrowserContext, page: Page, form: LoginForm | None
) -> Session:
    """Cookies, storage values and bearer token after a login, filtered by ``form``'s
    ``keep_*`` lists (without a form: every cookie and all of both storages)."""
    cookies: list[dict[str, Any]] = [dict(c) for c in await context.cookies()]
    local = await storage_of(page, "local_storage")
    session_store = await storage_of(page, "session_storage")
    bearer = None
    expires_at = 0.0
    if form is not None:
        if form.keep_cookies is not None:
            cookies = [c for c in cookies if c.get("name") in form.keep_cookies]
        local = {k: v for k, v in local.items() if k in form.keep_local_storage}
        session_store = {k: v for k, v in session_store.items() if k in form.keep_session_storage}
        if form.bearer_from is not None:
            bearer = _bearer(form.bearer_from, local, session_store, cookies, page)
    # A cookie that expires sooner than the configured lifetime ends the session then.
    ends = [float(c["expires"]) for c in cookies if float(c.get("expires", -1)) > 0]
    if ends:
        expires_at = min(ends)
    return Session(
        provider=provider, cookies=cookies, bearer=bearer, local_storage=local,
        session_storage=session_store, expires_at=expires_at,
    )


def _bearer(
    where: str, local: dict[str, str], session_store: dict[str, str],
    cookies: list[dict[str, Any]], page: Page,
) -> str:
    source, _, key = where.partition(":")
    found: str | None
    if source == "cookie":
        found = next((str(c["value"]) for c in cookies if c.get("name") == key), None)
    else:
        found = (local if source == "local_storage" else session_store).get(key)
    if not found:
        # Only the key's name: what was there instead may be secret.
        raise LookupError(f"no bearer token at {where} after logging in (page {page.url})")
    return found


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:60] or "provider"


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Created 0600 from the start: a screenshot of a login page is sensitive.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


async def save_artifacts(page: Page, directory: Path, provider: str) -> list[Path]:
    """A screenshot and the HTML of ``page`` in ``directory``; the paths written.
    Never raises: a page too broken to capture must not hide the login's error."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"-{os.getpid()}"
    base = directory / f"{_slug(provider)}-{stamp}"
    written: list[Path] = []
    captures: list[tuple[str, Any]] = [
        (".png", lambda: page.screenshot(full_page=True, timeout=5000)),
        (".html", lambda: page.content()),
    ]
    for suffix, capture in captures:
        try:
            data = await asyncio.wait_for(capture(), 10)
            blob = data.encode() if isinstance(data, str) else bytes(data)
            path = base.with_suffix(suffix)
            await asyncio.to_thread(_write_private, path, blob)
            written.append(path)
        except Exception as exc:
            log.warning("provider %r: could not save %s of the failed login: %s",
                        provider, suffix, type(exc).__name__)
    return written
