"""The session manager with scripted logins (no browser): single flight, parallel
providers, refresh before expiry, refusals, failures and the Redis store."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

import sluiceway
from sluiceway.config import SessionSettings
from sluiceway.sessions import Session, SessionManager, SessionRejected
from sluiceway.testing.redis import RedisServer


class Logins:
    """A login function that records its calls; ``gate`` holds each login until
    released, ``fail`` makes the next ones raise."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.calls = 0
        self.running = 0
        self.gate: asyncio.Event | None = None
        self.started = asyncio.Event()
        self.fail: BaseException | None = None
        self.expires_in = 0.0

    async def __call__(self) -> Session:
        self.calls += 1
        self.running += 1
        self.started.set()
        try:
            if self.gate is not None:
                await self.gate.wait()
            await asyncio.sleep(0)
            if self.fail is not None:
                raise self.fail
            expires = time.time() + self.expires_in if self.expires_in else 0.0
            return Session(provider=self.provider, bearer=f"token-{self.calls}",
                           expires_at=expires)
        finally:
            self.running -= 1


@pytest.fixture
async def manager(tmp_path: Path) -> AsyncIterator[SessionManager]:
    manager = SessionManager(SessionSettings(path=str(tmp_path / "s")), env={})
    async with manager.lifespan():
        yield manager


async def test_twenty_waiters_share_one_login(manager: SessionManager) -> None:
    login = Logins("p")
    login.gate = asyncio.Event()
    handle = manager.provider("p", login)
    waiters = [asyncio.create_task(handle.get()) for _ in range(20)]
    await login.started.wait()
    login.gate.set()
    sessions = await asyncio.gather(*waiters)
    assert login.calls == 1
    assert {s.id for s in sessions} == {sessions[0].id}
    assert handle.logins == 1
    # Then from memory.
    assert (await handle.get()).id == sessions[0].id and login.calls == 1


async def test_two_providers_log_in_at_the_same_time(manager: SessionManager) -> None:
    a, b = Logins("a"), Logins("b")
    both = asyncio.Event()
    a.gate = b.gate = both
    first = asyncio.create_task(manager.provider("a", a).get())
    second = asyncio.create_task(manager.provider("b", b).get())
    # Each login is still running when the other has started: they overlap.
    await a.started.wait()
    await b.started.wait()
    assert a.running == 1 and b.running == 1
    both.set()
    await asyncio.gather(first, second)


async def test_a_cancelled_waiter_leaves_the_login_to_the_others(
    manager: SessionManager,
) -> None:
    login = Logins("p")
    login.gate = asyncio.Event()
    handle = manager.provider("p", login)
    leaving = asyncio.create_task(handle.get())
    staying = asyncio.create_task(handle.get())
    await login.started.wait()
    leaving.cancel()
    login.gate.set()
    assert (await staying).bearer == "token-1"
    assert leaving.cancelled() and login.calls == 1


async def test_a_session_near_its_end_is_renewed_in_the_background(tmp_path: Path) -> None:
    settings = SessionSettings(path=str(tmp_path / "s"), lifetime=sluiceway.Duration(3600),
                               refresh_margin=sluiceway.Duration(600))
    manager = SessionManager(settings, env={})
    async with manager.lifespan():
        login = Logins("p")
        login.expires_in = 300  # the site says: five minutes, inside the margin
        handle = manager.provider("p", login)
        first = await handle.get()
        assert login.calls == 1
        login.expires_in = 0
        login.gate = asyncio.Event()
        login.started.clear()
        # Still answered with the old session at once; a renewal starts.
        assert (await handle.get()).id == first.id
        await login.started.wait()
        renewal = handle._flight
        assert renewal is not None
        login.gate.set()
        await renewal
        assert login.calls == 2 and handle.current is not None
        assert handle.current.expires_in() > 3000


async def test_a_failed_renewal_keeps_the_session_that_still_works(
    manager: SessionManager,
) -> None:
    login = Logins("p")
    login.expires_in = 60  # inside the default 10-minute margin
    handle = manager.provider("p", login)
    first = await handle.get()
    login.fail = RuntimeError("site down")
    login.started.clear()
    assert (await handle.get()).id == first.id
    await login.started.wait()
    renewal = handle._flight
    assert renewal is not None
    assert (await renewal).id == first.id  # the failure handed back the old session
    assert (await handle.get()).id == first.id
    assert login.calls == 2  # and the backoff holds further renewals back


async def test_a_refused_session_means_one_new_login_and_one_retry(
    manager: SessionManager,
) -> None:
    login = Logins("p")
    handle = manager.provider("p", login)
    seen: list[str | None] = []

    async def send(session: Session) -> str:
        seen.append(session.bearer)
        if session.bearer == "token-1":
            raise SessionRejected("401")
        return "answer"

    assert await handle.call(send) == "answer"
    assert seen == ["token-1", "token-2"] and login.calls == 2
    store = await manager.store()
    stored = await store.load("p")
    assert stored is not None and stored.bearer == "token-2"

    async def always_refused(session: Session) -> str:
        raise SessionRejected("401")

    with pytest.raises(sluiceway.UpstreamError) as error:
        await handle.call(always_refused)
    assert error.value.code == "upstream_session_rejected" and error.value.kind == "auth"
    assert login.calls == 3


async def test_many_refusals_of_one_session_cause_one_login(manager: SessionManager) -> None:
    login = Logins("p")
    handle = manager.provider("p", login)
    await handle.get()
    login.gate = asyncio.Event()

    async def send(session: Session) -> str | None:
        if session.bearer == "token-1":
            raise SessionRejected("401")
        return session.bearer

    calls = [asyncio.create_task(handle.call(send)) for _ in range(10)]
    await asyncio.sleep(0.05)
    login.gate.set()
    assert await asyncio.gather(*calls) == ["token-2"] * 10
    assert login.calls == 2


async def test_a_failed_login_is_not_retried_at_once(manager: SessionManager) -> None:
    login = Logins("p")
    login.fail = RuntimeError("the form changed")
    handle = manager.provider("p", login)
    with pytest.raises(sluiceway.UpstreamError) as first:
        await handle.get()
    assert first.value.code == "upstream_login_failed" and first.value.kind == "auth"
    with pytest.raises(sluiceway.UpstreamError) as second:
        await handle.get()
    assert "not tried again" in str(second.value) and second.value.retry_after
    assert login.calls == 1
    login.fail = None
    assert (await handle.warm(force=True)).bearer == "token-2"


async def test_a_stored_session_is_used_without_logging_in(tmp_path: Path) -> None:
    settings = SessionSettings(path=str(tmp_path / "s"))
    first = SessionManager(settings, env={})
    async with first.lifespan():
        made = await first.provider("p", Logins("p")).get()
    second = SessionManager(settings, env={})
    async with second.lifespan():
        login = Logins("p")
        assert (await second.provider("p", login).get()).id == made.id
        assert login.calls == 0


def test_a_redis_store_needs_a_shared_key() -> None:
    with pytest.raises(sluiceway.ConfigError, match=r"sessions\.key: a Redis session store"):
        SessionManager(SessionSettings(storage="redis://127.0.0.1:1/0"), env={})


async def test_the_redis_store_keeps_and_locks(redis_server: RedisServer) -> None:
    env = {"SLUICEWAY_SESSION_KEY": Fernet.generate_key().decode()}
    settings = SessionSettings(storage=redis_server.url)
    one, two = SessionManager(settings, env=env), SessionManager(settings, env=env)
    async with one.lifespan(), two.lifespan():
        login_one, login_two = Logins("p"), Logins("p")
        login_one.gate = asyncio.Event()
        first = asyncio.create_task(one.provider("p", login_one).get())
        await login_one.started.wait()
        # The second instance waits on the login lock, then finds the first's session.
        second = asyncio.create_task(two.provider("p", login_two).get())
        await asyncio.sleep(0.2)
        login_one.gate.set()
        made, found = await asyncio.gather(first, second)
        assert found.id == made.id and login_two.calls == 0
        store = await two.store()
        assert [e.provider for e in await store.entries()] == ["p"]
        assert await store.delete("p", only_id="someone-else") is False
        assert await store.delete("p", only_id=made.id) is True  # compare-and-delete
        assert await store.load("p") is None
        await store.save(made)
        assert await store.delete("p") is True
        assert await store.load("p") is None
        redis_server.kill()
        # Down: the listing says so, instead of "nothing stored".
        with pytest.raises(sluiceway.ServiceUnavailable):
            await store.entries()


