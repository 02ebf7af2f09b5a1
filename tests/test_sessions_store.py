"""The encrypted session store on its own: sealing, damaged files, keys and their
rotation, and two processes writing one store at once."""

from __future__ import annotations

import logging
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

import sluiceway
from sluiceway.config import SessionSettings, parse_config
from sluiceway.sessions import FileSessionStore, KeyRing, Session, UnreadableSession
from sluiceway.sessions.keys import read_key_file
from sluiceway.testing import RedisServer

COOKIE = "cookie-value-7d1f0c"
TOKEN = "bearer-token-9a4e21"


def _session(provider: str = "site") -> Session:
    return Session(
        provider=provider,
        cookies=[{"name": "sid", "value": COOKIE, "domain": "127.0.0.1", "path": "/"}],
        bearer=TOKEN, local_storage={"access_token": TOKEN}, expires_at=4_000_000_000.0,
    )


def _ring(tmp_path: Path) -> KeyRing:
    return KeyRing.load(SessionSettings(path=str(tmp_path / "s")), str(tmp_path), env={})


async def test_a_sealed_session_opens_again_and_shows_no_secret(tmp_path: Path) -> None:
    store = FileSessionStore(tmp_path / "s", _ring(tmp_path))
    session = _session()
    await store.save(session)
    data = store.path_of("site").read_bytes()
    assert COOKIE.encode() not in data and TOKEN.encode() not in data
    loaded = await store.load("site")
    assert loaded == session
    assert COOKIE not in repr(loaded) and TOKEN not in str(loaded)
    assert stat.S_IMODE(store.path_of("site").stat().st_mode) == 0o600
    key_file = tmp_path / "s" / "session.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "s").stat().st_mode) == 0o700
    assert await store.load("other") is None


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "garbage", "other_key"])
async def test_a_damaged_or_foreign_file_is_absent_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    store = FileSessionStore(tmp_path / "s", _ring(tmp_path))
    await store.save(_session())
    path = store.path_of("site")
    data = path.read_bytes()
    if damage == "flip":
        path.write_bytes(data[:-20] + bytes([data[-20] ^ 0x04]) + data[-19:])
    elif damage == "truncate":
        path.write_bytes(data[:-30])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "garbage":
        path.write_bytes(b"\x00\xff not json at all")
    else:
        store.keys = KeyRing([Fernet.generate_key()], "test")
    caplog.set_level(logging.WARNING, logger="sluiceway.sessions")
    assert await store.load("site") is None
    assert "unusable" in caplog.text
    assert ("wrong_key" if damage == "other_key" else "corrupt") in caplog.text
    assert COOKIE not in caplog.text and TOKEN not in caplog.text


def test_a_session_sealed_for_another_provider_is_refused(tmp_path: Path) -> None:
    ring = _ring(tmp_path)
    with pytest.raises(UnreadableSession, match="mismatch"):
        ring.open(ring.seal(_session("a")), "b")


async def test_rotating_the_key_keeps_every_session(tmp_path: Path) -> None:
    ring = _ring(tmp_path)
    store = FileSessionStore(tmp_path / "s", ring)
    await store.save(_session("a"))
    await store.save(_session("b"))
    rotated = ring.rotated(Fernet.generate_key())
    assert await store.rotate(rotated) == 2
    assert rotated.ids[1] == ring.ids[0]
    for name in ("a", "b"):
        assert rotated.ids[0] in store.path_of(name).read_text()
        assert (await store.load(name)) is not None
    # The new key alone opens them: nothing still depends on the old one.
    alone = FileSessionStore(tmp_path / "s", KeyRing(rotated.keys[:1], "new"))
    assert (await alone.load("a")) is not None


async def test_a_key_file_rotated_by_another_process_is_read_again(tmp_path: Path) -> None:
    first = FileSessionStore(tmp_path / "s", _ring(tmp_path))
    other = FileSessionStore(tmp_path / "s", _ring(tmp_path))
    new_keys = other.keys.rotated(Fernet.generate_key())
    from sluiceway.sessions.keys import write_key_file

    write_key_file(tmp_path / "s" / "session.key", new_keys.keys)
    other.keys = new_keys
    await other.save(_session())
    # `first` still holds only the old key: it meets an unknown key id, re-reads the file.
    assert (await first.load("site")) is not None


def test_key_from_the_environment_and_bad_keys(tmp_path: Path) -> None:
    key, old = Fernet.generate_key(), Fernet.generate_key()
    ring = KeyRing.load(SessionSettings(), str(tmp_path),
                        env={"SLUICEWAY_SESSION_KEY": f"{key.decode()},{old.decode()}"})
    assert ring.keys == [key, old] and ring.source == "env:SLUICEWAY_SESSION_KEY"
    assert not (tmp_path / ".sessions").exists()
    with pytest.raises(ValueError, match="not a Fernet key") as error:
        KeyRing.load(SessionSettings(), str(tmp_path), env={"SLUICEWAY_SESSION_KEY": "hunter2"})
    assert "hunter2" not in str(error.value)


def test_the_sessions_table_is_validated() -> None:
    with pytest.raises(sluiceway.ConfigError, match="sessions: write the session key as"):
        parse_config({"sessions": {"key": Fernet.generate_key().decode()}})
    with pytest.raises(sluiceway.ConfigError, match="expected 'file' or a Redis URL"):
        parse_config({"sessions": {"storage": "s3://bucket"}})
    with pytest.raises(sluiceway.ConfigError, match="refresh_margin must be shorter"):
        parse_config({"sessions": {"lifetime": "1h", "refresh_margin": "2h"}})
    with pytest.raises(sluiceway.ConfigError, match=r"sessions\.lifetme: unknown key"):
        parse_config({"sessions": {"lifetme": "1h"}})
    assert parse_config({"sessions": {"lifetime": "12h"}}).sessions.lifetime == 43200


_HAMMER = textwrap.dedent("""
    import asyncio, sys
    from pathlib import Path
    from sluiceway.config import SessionSettings
    from sluiceway.sessions import FileSessionStore, KeyRing, Session

    async def main(base: str, me: str, rounds: int) -> None:
        keys = KeyRing.load(SessionSettings(path="s"), base, env={})
        store = FileSessionStore(Path(base) / "s", keys)
        for i in range(rounds):
            await store.save(Session(provider="shared", bearer=f"{me}-{i}" * 50,
                                     extra={"pad": "x" * (i % 7) * 300}))
            loaded = await store.load("shared")
            if loaded is None or not loaded.bearer:
                sys.exit(f"round {i}: the file did not open")
        print(keys.ids[0])

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
""")


def test_two_processes_hammering_one_store_never_leave_an_unreadable_file(
    tmp_path: Path,
) -> None:
    # Started together, they also race to create the key file: both must end
    # up with the same key.
    processes = [
        subprocess.Popen([sys.executable, "-c", _HAMMER, str(tmp_path), name, "150"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name in ("one", "two")
    ]
    results = [p.communicate(timeout=100) for p in processes]
    for process, (_out, err) in zip(processes, results, strict=True):
        assert process.returncode == 0, err
    assert results[0][0] == results[1][0]
    ring = KeyRing(read_key_file(tmp_path / "s" / "session.key"), "file")
    session = ring.open((tmp_path / "s" / "shared.session").read_bytes(), "shared")
    assert session.bearer is not None and session.bearer.startswith(("one-149", "two-149"))
    assert not list((tmp_path / "s").glob(".*.tmp"))


def test_every_sessions_key_is_documented() -> None:
    import msgspec

    text = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text()
    section = text.split("## [sessions]", 1)[1].split("\n## ", 1)[0]
    missing = [f.name for f in msgspec.structs.fields(SessionSettings)
               if f"| `{f.name}` |" not in section]
    assert not missing, f"docs/configuration.md [sessions] does not document {missing}"


async def test_rotating_the_key_in_redis_keeps_every_session_and_a_newer_login(
    tmp_path: Path, redis_server: RedisServer,
) -> None:
    from sluiceway.sessions.redis_store import RedisSessionStore

    ring = _ring(tmp_path)
    store = RedisSessionStore(redis_server.url, ring)
    try:
        await store.save(_session("a"))
        await store.save(_session("b"))
        rotated = ring.rotated(Fernet.generate_key())
        assert await store.rotate(rotated) == 2
        alone = RedisSessionStore(redis_server.url, KeyRing(rotated.keys[:1], "new"))
        try:
            assert (await alone.load("a")) is not None and (await alone.load("b")) is not None
        finally:
            await alone.redis.aclose()
        # A session saved after the listing is not overwritten by the re-sealed old one.
        client = store.redis.client()
        before = await client.hget(store._hash, "a")
        fresh = _session("a")
        await store.save(fresh)
        assert await store.redis.script("replace_if", [store._hash], ["a", before, b"old"]) == 0
        loaded = await store.load("a")
        assert loaded is not None and loaded.id == fresh.id
    finally:
        await store.redis.aclose()
