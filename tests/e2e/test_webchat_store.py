"""What the session store keeps after a real browser login: no secret in clear,
recovery from damaged files and a wrong key, and a Redis store shared by two
gateways."""

from __future__ import annotations

import logging
import stat
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet
from sluiceway_webchat import shared_browser
from sluiceway_webchat_demo import DemoSite

from sluiceway.testing import RunningServer
from sluiceway.testing.redis import RedisServer

from .webchat_support import USERS, demo_config, provider_table, set_demo_env


@pytest.fixture(autouse=True)
def _demo_env(monkeypatch: pytest.MonkeyPatch) -> None:
    set_demo_env(monkeypatch)


def _ask(server: RunningServer) -> None:
    response = httpx.post(
        server.base_url + "/chat/completions",
        json={"model": "demo-chat", "messages": [{"role": "user", "content": "hi"}]},
        timeout=90,
    )
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "You said: hi"


def _secrets_of(site: DemoSite) -> list[bytes]:
    """Every cookie and token value the site handed out."""
    values = [*site._sessions, *site._tokens]
    assert values
    return [v.encode() for v in values]


def test_the_session_file_holds_no_cookie_or_token_in_clear(
    serve_asgi: Callable[..., RunningServer], gateway_factory: Callable[..., RunningServer],
    tmp_path: Path,
) -> None:
    site = DemoSite(USERS)
    server = gateway_factory(demo_config(
        tmp_path, [provider_table("alice", serve_asgi(site).url, "alice", ["demo-chat"])]))
    _ask(server)
    directory = tmp_path / "sessions"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    files = sorted(directory.iterdir())
    assert {f.name for f in files} >= {"alice.session", "session.key"}
    for file in files:
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    data = (directory / "alice.session").read_bytes()
    for secret in _secrets_of(site):
        assert secret not in data
    assert b"alice@example.com" not in data and b"wonderland" not in data


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "corrupt":
        middle = len(data) // 2
        path.write_bytes(data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1:])
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 3])
    elif how == "wrong key":
        # The key file now holds another key: the session was sealed with a key
        # this gateway no longer has.
        (path.parent / "session.key").write_bytes(Fernet.generate_key() + b"\n")
    elif how == "empty":
        path.write_bytes(b"")


@pytest.mark.parametrize("how", ["corrupt", "truncated", "wrong key", "empty"])
def test_an_unusable_session_file_means_logging_in_again(
    serve_asgi: Callable[..., RunningServer], gateway_factory: Callable[..., RunningServer],
    tmp_path: Path, caplog: pytest.LogCaptureFixture, how: str,
) -> None:
    site = DemoSite(USERS)
    config = demo_config(
        tmp_path, [provider_table("alice", serve_asgi(site).url, "alice", ["demo-chat"])])
    first = gateway_factory(config)
    _ask(first)
    first.stop()
    path = tmp_path / "sessions" / "alice.session"
    _damage(path, how)

    caplog.set_level(logging.WARNING, logger="sluiceway.sessions")
    second = gateway_factory(config)
    _ask(second)
    assert site.logins == 2
    assert "unusable" in caplog.text
    expected = "wrong_key" if how == "wrong key" else "corrupt"
    assert expected in caplog.text
    # The new login replaced the bad file with one this gateway can read.
    session = second.call(lambda: second.gateway.sessions.handles["alice"].get())
    stored = second.call(lambda: _load(second, "alice"))
    assert stored is not None and stored.id == session.id


async def _load(server: RunningServer, provider: str) -> object:
    store = await server.gateway.sessions.store()
    return await store.load(provider)


def test_a_redis_store_shares_logins_between_gateways(
    serve_asgi: Callable[..., RunningServer], gateway_factory: Callable[..., RunningServer],
    tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLUICEWAY_SESSION_KEY", Fernet.generate_key().decode())
    site = DemoSite(USERS)
    config = demo_config(
        tmp_path, [provider_table("alice", serve_asgi(site).url, "alice", ["demo-chat"])],
        storage=redis_server.url,
    )
    one, two = gateway_factory(config), gateway_factory(config)
    _ask(one)
    _ask(two)
    assert site.logins == 1
    assert shared_browser(one.gateway).launches == 1
    assert shared_browser(two.gateway).launches == 0
    # Nothing was written to disk, and Redis holds the sealed envelope only.
    assert not (tmp_path / "sessions").exists()
    import redis

    client = redis.Redis(port=redis_server.port)
    try:
        stored = client.hget("sluiceway:sessions:{all}", "alice")
    finally:
        client.close()
    assert stored is not None
    for secret in _secrets_of(site):
        assert secret not in stored
