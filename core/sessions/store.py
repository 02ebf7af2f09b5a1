"""Where sealed sessions live: a directory of files (one process or several on one
host), or Redis (several hosts); both hold only what :class:`KeyRing` sealed.

Every file operation runs in a thread (``asyncio.to_thread``): the event loop
never waits on a disk. Writes are atomic (a temporary file in the same
directory, fsync, rename, fsync of the directory) and made under an exclusive
``fcntl`` lock on ``<path>/.lock``, so two gateway processes, or a gateway and
``sluiceway sessions rotate-key``, never interleave; a reader needs no lock,
because a rename replaces a whole file at once. A file that is damaged,
truncated or sealed with another key is logged and treated as absent: the
provider logs in again and the next save replaces it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .keys import KeyRing, UnreadableSession
from .record import Session

__all__ = ["FileSessionStore", "SessionStore", "StoredSession"]

log = logging.getLogger("sluiceway.sessions")

_SUFFIX = ".session"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,100}$")
# How often a process waiting for another's login checks the lock again.
_LOCK_POLL = 0.05


@dataclass(frozen=True, slots=True)
class StoredSession:
    """One entry of a store: the session, or why it could not be read."""

    provider: str
    session: Session | None
    problem: str | None = None


class SessionStore(Protocol):
    """What the session manager needs from a store."""

    keys: KeyRing

    async def load(self, provider: str) -> Session | None: ...

    async def save(self, session: Session) -> None: ...

    async def delete(self, provider: str, *, only_id: str | None = None) -> bool: ...

    async def entries(self) -> list[StoredSession]: ...

    async def rotate(self, keys: KeyRing) -> int: ...

    def login_lock(self, provider: str) -> contextlib.AbstractAsyncContextManager[None]: ...

    async def aclose(self) -> None: ...


def _file_name(provider: str) -> str:
    """A provider's file name: its own name when that is a safe one, else a hash."""
    if _SAFE_NAME.match(provider):
        return provider
    return "p-" + hashlib.sha256(provider.encode()).hexdigest()[:24]


class FileSessionStore:
    """One sealed file per provider in ``directory`` (created with mode 0700)."""

    def __init__(self, directory: Path, keys: KeyRing) -> None:
        self.directory = directory
        self.keys = keys

    def path_of(self, provider: str) -> Path:
        return self.directory / (_file_name(provider) + _SUFFIX)

    # -- blocking parts, run in threads -----------------------------------

    def _ensure_dir(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self._ensure_dir()
        fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _write(self, path: Path, data: bytes) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a crash
        finally:
            os.close(dir_fd)

    def _read(self, path: Path, provider: str | None) -> Session | None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return self.keys.open(data, provider)
        except UnreadableSession as exc:
            log.warning("session file %s is unusable (%s); treating it as absent", path, exc)
            return None

    def _save(self, session: Session) -> None:
        data = self.keys.seal(session)
        with self._locked():
            self._write(self.path_of(session.provider), data)

    def _delete(self, provider: str, only_id: str | None) -> bool:
        path = self.path_of(provider)
        with self._locked():
            if only_id is not None:
                current = self._read(path, provider)
                if current is not None and current.id != only_id:
                    return False  # a newer login replaced it: keep that one
            try:
                path.unlink()
            except FileNotFoundError:
                return False
            return True

    def _entries(self) -> list[StoredSession]:
        found = []
        for path in sorted(self.directory.glob("*" + _SUFFIX)):
            try:
                session = self.keys.open(path.read_bytes())
            except UnreadableSession as exc:
                found.append(StoredSession(path.stem, None, exc.reason))
            except OSError as exc:
                found.append(StoredSession(path.stem, None, exc.strerror or "unreadable"))
            else:
                found.append(StoredSession(session.provider, session))
        return found

    def _rotate(self, keys: KeyRing) -> int:
        count = 0
        with self._locked():
            for path in sorted(self.directory.glob("*" + _SUFFIX)):
                try:
                    data = keys.reseal(path.read_bytes())
                except Exception as exc:  # unreadable already: left for a re-login
                    log.warning("session file %s not re-encrypted: %s", path, type(exc).__name__)
                    continue
                self._write(path, data)
                count += 1
        self.keys = keys
        return count

    def _try_login_lock(self, provider: str) -> int | None:
        self._ensure_dir()
        path = self.directory / f".{_file_name(provider)}.login"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                return None
            raise
        return fd

    # -- async API ---------------------------------------------------------

    async def load(self, provider: str) -> Session | None:
        """The provider's stored session; ``None`` if absent or unusable."""
        return await asyncio.to_thread(self._read, self.path_of(provider), provider)

    async def save(self, session: Session) -> None:
        await asyncio.to_thread(self._save, session)

    async def delete(self, provider: str, *, only_id: str | None = None) -> bool:
        """Remove the provider's session (only if its id is ``only_id``, when given)."""
        return await asyncio.to_thread(self._delete, provider, only_id)

    async def entries(self) -> list[StoredSession]:
        return await asyncio.to_thread(self._entries)

    async def rotate(self, keys: KeyRing) -> int:
        """Re-seal every readable session with ``keys``' newest key; how many."""
        return await asyncio.to_thread(self._rotate, keys)

    @contextlib.asynccontextmanager
    async def login_lock(self, provider: str) -> AsyncIterator[None]:
        """Held while this process logs ``provider`` in, so that another process
        waits and then finds the new session instead of logging in as well.

        Polled without blocking (a thread blocked in ``flock`` could not be
        cancelled), at a pace that costs nothing next to a browser login.
        """
        # Another process holds it: no Event can tell us when, so poll.
        while (fd := await asyncio.to_thread(self._try_login_lock, provider)) is None:  # noqa: ASYNC110
            await asyncio.sleep(_LOCK_POLL)
        try:
            yield
        finally:
            os.close(fd)

    async def aclose(self) -> None:
        """Nothing stays open between operations."""
