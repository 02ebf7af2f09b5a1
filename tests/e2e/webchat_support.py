"""Shared parts of the web-login tests: the demo site's users, provider tables, and
a sink that records session logins (the tests' evidence of what happened when)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import sluiceway
from sluiceway.events import Event, SessionLogin

USERS = {"alice@example.com": "wonderland", "bob@example.com": "builder"}
ENV = {
    "DEMO_ALICE_EMAIL": "alice@example.com", "DEMO_ALICE_PASSWORD": "wonderland",
    "DEMO_BOB_EMAIL": "bob@example.com", "DEMO_BOB_PASSWORD": "builder",
}


def set_demo_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials as the provider tables reference them; no session key in the
    environment, so the key file is used unless a test sets one."""
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SLUICEWAY_SESSION_KEY", raising=False)


def provider_table(name: str, site_url: str, user: str, models: list[str],
                   **extra: Any) -> dict[str, Any]:
    """A ``webchat-demo`` provider logging in as ``user`` (``alice`` or ``bob``)
    with the declarative form."""
    upper = user.upper()
    return {
        "name": name, "type": "webchat-demo", "base_url": site_url, "models": models,
        "login_timeout": "60s",
        # One attempt: a test sees exactly what one request caused.
        "max_retries": 0,
        "login": {
            "url": "/login",
            "fields": {"#email": f"env:DEMO_{upper}_EMAIL",
                       "#password": f"env:DEMO_{upper}_PASSWORD"},
            "submit": "#submit",
            "success_url": "**/app",
            "success_selector": "body[data-ready='1']",
            "keep_cookies": ["sid"],
            "keep_local_storage": ["access_token"],
            "bearer_from": "local_storage:access_token",
        },
        **extra,
    }


def demo_config(tmp_path: Path, providers: list[dict[str, Any]],
                **sessions: Any) -> dict[str, Any]:
    return {
        "gateway": {"plugins": ["webchat-demo"]},
        "providers": providers,
        "sessions": {"path": str(tmp_path / "sessions"), **sessions},
    }


class LoginRecorder:
    """An event sink keeping every :class:`SessionLogin` (it runs on the gateway's
    loop; the test thread reads the list after the requests are done)."""

    def __init__(self) -> None:
        self.logins: list[SessionLogin] = []

    def handle(self, event: Event) -> None:
        if isinstance(event, SessionLogin):
            self.logins.append(event)

    @sluiceway.hookimpl
    def register_event_sinks(self, register: Callable[[sluiceway.EventSinkType], None]) -> None:
        register(sluiceway.EventSinkType("login-recorder", lambda gateway: self))
