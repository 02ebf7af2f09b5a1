"""sluiceway-webchat in real headless Chromium: the system browser launches, a
subclass's own login flow works end to end, a failed login leaves private
evidence, and credentials are refused unless they are env: references."""

from __future__ import annotations

import asyncio
import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from sluiceway_webchat import (
    SYSTEM_CHROMIUM,
    BrowserOptions,
    SharedBrowser,
    WebChatOptions,
    WebChatProvider,
    chromium_path,
    shared_browser,
    text_completion,
)
from sluiceway_webchat_demo import DemoSite

import sluiceway
from sluiceway.sessions import Session
from sluiceway.testing import RunningServer

USERS = {"carol@example.com": "correct horse"}


async def test_the_system_chromium_launches_once_for_many_contexts() -> None:
    # The smoke test DEPENDENCIES.md asks for: a Playwright or Debian update that
    # breaks the pairing fails here, loudly.
    options = BrowserOptions()
    assert chromium_path(options) == SYSTEM_CHROMIUM
    browser = SharedBrowser(options)
    try:
        for n in range(2):
            async with browser.context() as context:
                page = await context.new_page()
                await page.set_content(f"<p id='n'>{n}</p>"
                                       "<script>localStorage.setItem('k', 'v')</script>")
                assert await page.inner_text("#n") == str(n)
        assert browser.launches == 1 and browser.running
    finally:
        await browser.aclose()
    assert not browser.running


class ScriptedOptions(WebChatOptions, kw_only=True):
    """The base keys plus one of this provider's own."""

    greeting: str = "hi"


class ScriptedProvider(WebChatProvider):
    """A custom flow: no login table; the subclass drives the page itself and keeps
    extra data; its answer is a plain JSON reply."""

    async def login(self, page: Any) -> None:
        credentials = self.options.credentials
        await page.goto(self.base_url + "/login")
        await page.fill("#email", credentials["email"].reveal())
        await page.fill("#password", credentials["password"].reveal())
        await page.click("#submit")
        await page.wait_for_selector("body[data-ready='1']")

    async def extract(self, context: Any, page: Any) -> Session:
        token = await page.evaluate("() => localStorage.getItem('access_token')")
        cookies = [c for c in await context.cookies() if c["name"] == "sid"]
        return Session(provider=self.name, cookies=[dict(c) for c in cookies], bearer=token,
                       extra={"greeting": getattr(self.options, "greeting", "")})

    async def answer(self, session: Session, request: sluiceway.ChatRequest) -> dict[str, Any]:
        response = await self.post(session, "/api/chat", {"messages": request.messages})
        try:
            reply = msgspec.json.decode(await response.read())["reply"]
        finally:
            await response.aclose()
        return text_completion(request, f"{session.extra['greeting']} {reply}")

    async def stream_answer(
        self, session: Session, request: sluiceway.ChatRequest
    ) -> AsyncIterator[dict[str, Any]]:
        raise NotImplementedError
        yield {}


class ScriptedPlugin:
    @sluiceway.hookimpl
    def register_provider_types(self, register: Callable[[sluiceway.ProviderType], None]) -> None:
        register(sluiceway.ProviderType("scripted", ScriptedProvider, ScriptedOptions))


def test_a_subclass_with_its_own_login_flow(
    serve_asgi: Callable[..., RunningServer], gateway_factory: Callable[..., RunningServer],
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CAROL_EMAIL", "carol@example.com")
    monkeypatch.setenv("CAROL_PASSWORD", "correct horse")
    site = DemoSite(USERS)
    server = gateway_factory({
        "gateway": {"plugins": ["webchat"]},
        "plugin": {"webchat": {"max_concurrent_logins": 1, "idle_timeout": "1m"}},
        "providers": [{
            "name": "carol", "type": "scripted", "base_url": serve_asgi(site).url,
            "models": ["scripted"], "greeting": "Hello!",
            "credentials": {"email": "env:CAROL_EMAIL", "password": "env:CAROL_PASSWORD"},
        }],
        "sessions": {"path": str(tmp_path / "sessions")},
    }, plugins=[("scripted", ScriptedPlugin())])
    for _ in range(2):
        response = httpx.post(server.base_url + "/chat/completions", timeout=60, json={
            "model": "scripted", "messages": [{"role": "user", "content": "ping"}]})
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"] == "Hello! You said: ping"
    assert site.logins == 1
    assert shared_browser(server.gateway).launches == 1


def test_a_failed_login_saves_a_private_screenshot_and_page(
    serve_asgi: Callable[..., RunningServer], gateway_factory: Callable[..., RunningServer],
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("CAROL_EMAIL", "carol@example.com")
    monkeypatch.setenv("CAROL_PASSWORD", "not the password")
    site = DemoSite(USERS)
    server = gateway_factory({
        "gateway": {"plugins": ["webchat-demo"]},
        "providers": [{
            "name": "carol", "type": "webchat-demo", "base_url": serve_asgi(site).url,
            "max_retries": 0, "login_timeout": "4s",
            "login": {
                "url": "/login", "submit": "#submit", "success_url": "**/app",
                "fields": {"#email": "env:CAROL_EMAIL", "#password": "env:CAROL_PASSWORD"},
            },
        }],
        "sessions": {"path": str(tmp_path / "sessions")},
    })
    response = httpx.post(server.base_url + "/chat/completions", timeout=60, json={
        "model": "demo-chat", "messages": [{"role": "user", "content": "ping"}]})
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_login_timeout"
    assert site.failed_logins == 1
    failures = tmp_path / "sessions" / "failures"
    assert stat.S_IMODE(failures.stat().st_mode) == 0o700
    saved = sorted(failures.iterdir())
    assert [p.suffix for p in saved] == [".html", ".png"]
    for path in saved:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    page = saved[0].read_text()
    assert "Wrong email or password" in page and "not the password" not in page
    assert saved[1].read_bytes().startswith(b"\x89PNG")
    assert "not the password" not in caplog.text
    # The next request within the backoff fails at once, without a browser.
    again = httpx.post(server.base_url + "/chat/completions", timeout=60, json={
        "model": "demo-chat", "messages": [{"role": "user", "content": "ping"}]})
    assert again.status_code == 502 and "not tried again" in again.json()["error"]["message"]
    assert site.login_pages == 2  # the form, and the error page it led back to


@pytest.mark.parametrize(("table", "message"), [
    ({"login": {"url": "/login", "submit": "#s", "success_url": "**/app",
                "fields": {"#password": "hunter2"}}},
     "login field '#password': write it as 'env:VAR'"),
    ({"login": {"url": "/login", "submit": "#s", "fields": {}}},
     "set success_url or success_selector"),
    ({"credentials": {"password": "hunter2"}}, "credential 'password': write it as 'env:VAR'"),
    ({"login": {"url": "/l", "submit": "#s", "success_url": "*", "fields": {},
                "bearer_from": "header:x"}}, "bearer_from must be local_storage:KEY"),
])
def test_credentials_only_from_the_environment(table: dict[str, Any], message: str) -> None:
    config = {"gateway": {"plugins": ["webchat-demo"]}, "providers": [
        {"name": "p", "type": "webchat-demo", "base_url": "http://127.0.0.1:9", **table}]}
    with pytest.raises(sluiceway.ConfigError) as error:
        sluiceway.create_app(config)
    assert message in str(error.value)
    assert "hunter2" not in str(error.value)


def test_a_misspelt_browser_table_stops_startup(tmp_path: Path) -> None:
    gateway = sluiceway.create_app({
        "gateway": {"plugins": ["webchat"]},
        "plugin": {"webchat": {"executable": "/usr/bin/chromium"}},
    })
    with pytest.raises(sluiceway.ConfigError, match=r"plugin\.webchat\.executable: unknown key"):
        asyncio.run(gateway.startup())
