"""Web-login providers in real headless Chromium (Debian's /usr/bin/chromium)
against the demo site, over a real gateway server: cold and warm requests,
parallel and single-flight logins, expiry, revocation."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from sluiceway_webchat import shared_browser
from sluiceway_webchat_demo import DemoSite

from sluiceway.config import SessionSettings
from sluiceway.sessions import SessionManager
from sluiceway.testing import RunningServer

from .webchat_support import USERS, LoginRecorder, demo_config, provider_table, set_demo_env

PROMPT = [{"role": "user", "content": "hello there"}]


@pytest.fixture(autouse=True)
def _demo_env(monkeypatch: pytest.MonkeyPatch) -> None:
    set_demo_env(monkeypatch)


def _ask(server: RunningServer, model: str = "demo-chat", text: str = "hello there") -> str:
    response = httpx.post(
        server.base_url + "/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": text}]},
        timeout=90,
    )
    assert response.status_code == 200, response.text
    content: str = response.json()["choices"][0]["message"]["content"]
    return content


def test_cold_request_logs_in_then_warm_ones_need_no_browser(
    serve_asgi: Callable[..., RunningServer], gateway_factory: Callable[..., RunningServer],
    tmp_path: Path,
) -> None:
    site = DemoSite(USERS)
    site_server = serve_asgi(site)
    config = demo_config(tmp_path, [provider_table("alice", site_server.url, "alice",
                                                   ["demo-chat"])])
    first = gateway_factory(config)
    with openai.OpenAI(api_key="unused", base_url=first.base_url, max_retries=0) as client:
        reply = client.chat.completions.create(model="demo-chat", messages=PROMPT)  # type: ignore[arg-type]
        assert reply.choices[0].message.content == "You said: hello there"
        stream = client.chat.completions.create(
            model="demo-chat", messages=PROMPT, stream=True,  # type: ignore[arg-type]
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        "You said: hello there"
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
    assert site.logins == 1
    assert shared_browser(first.gateway).launches == 1
    first.stop()

    # A new gateway (a restart) finds the sealed session and uses it: no browser.
    second = gateway_factory(config)
    assert _ask(second) == "You said: hello there"
    assert site.logins == 1
    assert site.chats == 3
    assert shared_browser(second.gateway).launches == 0
    assert not shared_browser(second.gateway).running


def test_two_providers_cold_at_once_log_in_concurrently(
    serve_asgi: Callable[..., RunningServer], gateway_factory: Callable[..., RunningServer],
    tmp_path: Path,
) -> None:
    # The site holds each login page until two visitors wait at once: logins that
    # ran one after the other would time out here instead of passing.
    site = DemoSite(USERS, login_gate=2, gate_timeout=60)
    url = serve_asgi(site).url
    recorder = LoginRecorder()
    server = gateway_factory(
        demo_config(tmp_path, [provider_table("alice", url, "alice", ["alice-chat"]),
                               provider_table("bob", url, "bob", ["bob-chat"])]),
        plugins=[("recorder", recorder)],
    )
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda m: _ask(server, m), ["alice-chat", "bob-chat"]))
    assert answers == ["You said: hello there"] * 2
    assert site.logins == 2
    by_provider = {e.provider: e for e in recorder.logins}
    assert sorted(by_provider) == ["alice", "bob"]
    assert all(e.outcome == "ok" and e.reason == "absent" for e in recorder.logins)
    # The recorded intervals [end - duration, end] overlap.
    a, b = by_provider["alice"], by_provider["bob"]
    assert a.at - a.duration < b.at and b.at - b.duration < a.at
    # One browser served both logins.
    assert shared_browser(server.gateway).launches == 1


def test_twenty_cold_requests_cause_exactly_one_login(
    serve_asgi: Callable[..., RunningServer], gateway_factory: Callable[..., RunningServer],
    tmp_path: Path,
) -> None:
    site = DemoSite(USERS)
    recorder = LoginRecorder()
    server = gateway_factory(
        demo_config(tmp_path, [provider_table("alice", serve_asgi(site).url, "alice",
                                              ["demo-chat"])]),
        plugins=[("recorder", recorder)],
    )
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda i: _ask(server, text=f"request {i}"), range(20)))
    assert answers == [f"You said: request {i}" for i in range(20)]
    assert site.logins == 1
    assert site.login_pages == 1
    assert len(recorder.logins) == 1
    assert site.chats == 20


def _age_stored_session(tmp_path: Path, provider: str) -> None:
    """Rewrite the stored session as one that expired a minute ago (yesterday's file)."""

    async def age() -> None:
        manager = SessionManager(SessionSettings(path=str(tmp_path / "sessions")), env={})
        store = await manager.store()
        session = await store.load(provider)
        assert session is not None
        session.expires_at = time.time() - 60
        await store.save(session)

    asyncio.run(age())


def test_an_expired_session_is_refreshed(
    serve_asgi: Callable[..., RunningServer], gateway_factory: Callable[..., RunningServer],
    tmp_path: Path,
) -> None:
    site = DemoSite(USERS)
    config = demo_config(tmp_path, [provider_table("alice", serve_asgi(site).url, "alice",
                                                   ["demo-chat"])])
    first = gateway_factory(config)
    _ask(first)
    first.stop()
    _age_stored_session(tmp_path, "alice")
    site.expire_all()

    recorder = LoginRecorder()
    second = gateway_factory(config, plugins=[("recorder", recorder)])
    assert _ask(second) == "You said: hello there"
    assert site.logins == 2
    assert site.rejected == 0  # the gateway knew: it never sent the expired token
    assert [(e.reason, e.outcome) for e in recorder.logins] == [("absent", "ok")]
    session = second.call(lambda: second.gateway.sessions.handles["alice"].get())
    assert session.expires_in() > 11 * 3600


def test_a_token_revoked_by_the_site_means_one_relogin_and_success(
    serve_asgi: Callable[..., RunningServer], gateway_factory: Callable[..., RunningServer],
    tmp_path: Path,
) -> None:
    site = DemoSite(USERS)
    recorder = LoginRecorder()
    server = gateway_factory(
        demo_config(tmp_path, [provider_table("alice", serve_asgi(site).url, "alice",
                                              ["demo-chat"])]),
        plugins=[("recorder", recorder)],
    )
    assert _ask(server) == "You said: hello there"
    site.revoke_all()
    assert _ask(server, text="still there?") == "You said: still there?"
    assert site.rejected == 1
    assert site.logins == 2
    assert [e.reason for e in recorder.logins] == ["absent", "rejected"]

    # Streams too: the refusal comes before the first chunk, so it is retried.
    site.revoke_all()
    with openai.OpenAI(api_key="unused", base_url=server.base_url, max_retries=0) as client:
        stream = client.chat.completions.create(
            model="demo-chat", messages=PROMPT, stream=True,  # type: ignore[arg-type]
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "You said: hello there"
    assert site.logins == 3 and site.rejected == 2


def test_a_request_hanging_up_does_not_cancel_the_login_others_wait_for(
    serve_asgi: Callable[..., RunningServer], gateway_factory: Callable[..., RunningServer],
    tmp_path: Path,
) -> None:
    site = DemoSite(USERS)
    server = gateway_factory(
        demo_config(tmp_path, [provider_table("alice", serve_asgi(site).url, "alice",
                                              ["demo-chat"])]),
    )
    body: dict[str, Any] = {"model": "demo-chat", "messages": PROMPT}
    with contextlib.suppress(httpx.ReadTimeout):
        # Gives up long before a cold browser login can finish.
        httpx.post(server.base_url + "/chat/completions", json=body, timeout=0.05)
    assert _ask(server) == "You said: hello there"
    assert site.logins == 1
