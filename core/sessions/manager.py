"""The gateway's session manager: one login in flight per provider, sessions kept
encrypted, refreshed before they expire, and replaced once when the site refuses
them.

``gateway.sessions`` is a :class:`SessionManager`, built from ``[sessions]``.
A provider whose credentials come from a login asks it for a handle in its
factory::

    self.sessions = ctx.gateway.sessions.provider(ctx.name, login=self.login)

and then, per request, ``await self.sessions.call(send, request_id=...)``:
``send(session)`` makes the upstream call with the session's cookies or token
and raises :class:`SessionRejected` when the site answers 401/403; the handle
then drops that session, logs in once more and calls ``send`` once more.

Single flight: while a login for a provider runs, every other request for that
provider awaits the same task instead of starting its own; logins of different
providers run in parallel. The task is shielded, so a client that hangs up does
not cancel a login others wait for. Across processes the store's login lock does
the same: the second process finds the first one's session when it gets the lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..config.settings import SESSION_KEY_ENV, SessionSettings
from ..errors import ConfigError, GatewayError, StartupError, UpstreamError
from .keys import KeyRing
from .record import Session, session_state
from .store import FileSessionStore, SessionStore

if TYPE_CHECKING:
    from ..events import Events

__all__ = ["LoginFn", "ProviderSessions", "SessionManager", "SessionRejected"]

log = logging.getLogger("sluiceway.sessions")

T = TypeVar("T")
LoginFn = Callable[[], Awaitable[Session]]


class SessionRejected(Exception):
    """Raised by a provider's upstream call when the site refused the session
    (HTTP 401 or 403): the handle invalidates it, logs in again, retries once."""


class SessionManager:
    """Per gateway: the store, one :class:`ProviderSessions` per provider that logs
    in, objects the providers share (a browser), and background refreshes."""

    def __init__(
        self,
        settings: SessionSettings,
        *,
        base_dir: str = ".",
        source: str = "<config>",
        events: Events | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.base_dir = base_dir
        self.events = events
        self.env = os.environ if env is None else env
        self.handles: dict[str, ProviderSessions] = {}
        self._store: SessionStore | None = None
        self._store_lock: asyncio.Lock | None = None
        self._shared: dict[str, Any] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        shared_store = settings.storage != "file"
        if shared_store and settings.key is None and not settings.key_file and (
            not self.env.get(SESSION_KEY_ENV)
        ):
            # A key file per host would make each instance unable to read the
            # others' sessions: refuse instead of failing quietly at runtime.
            raise ConfigError(
                f"a Redis session store is shared, so its key must be too: set "
                f"{SESSION_KEY_ENV}, or key = \"env:VAR\", or a key_file all instances read",
                source=source, key="sessions.key",
            )

    # -- the store -----------------------------------------------------------

    async def store(self) -> SessionStore:
        """The store, opened on first use (its key file created if need be)."""
        if self._store is not None:
            return self._store
        if self._store_lock is None:
            self._store_lock = asyncio.Lock()
        async with self._store_lock:
            if self._store is None:
                self._store = await self._open_store()
        return self._store

    async def _open_store(self) -> SessionStore:
        settings = self.settings
        try:
            keys = await asyncio.to_thread(KeyRing.load, settings, self.base_dir, self.env)
        except (OSError, ValueError) as exc:
            raise StartupError(f"sessions: cannot load the session key: {exc}") from exc
        if settings.storage == "file":
            return FileSessionStore(Path(self.base_dir) / settings.path, keys)
        try:
            from .redis_store import RedisSessionStore
        except ImportError as exc:  # the redis extra is not installed
            raise StartupError(
                "sessions: a Redis store needs the redis package: pip install 'sluiceway[redis]'"
            ) from exc
        try:
            return RedisSessionStore(settings.storage, keys)
        except ValueError as exc:
            raise StartupError(f"sessions.storage: {exc}") from exc

    async def prepare(self) -> None:
        """Open the store at startup when some provider uses it, so a bad key
        stops the gateway instead of failing its first request."""
        if self.handles:
            await self.store()

    # -- providers and what they share ----------------------------------------

    def provider(self, name: str, login: LoginFn) -> ProviderSessions:
        """The handle through which provider ``name`` gets its session; ``login``
        makes a new one (it may leave ``expires_at`` at 0 for the configured
        lifetime)."""
        handle = ProviderSessions(self, name, login)
        self.handles[name] = handle
        return handle

    def shared(self, key: str, factory: Callable[[], T]) -> T:
        """One object per gateway under ``key`` (say, the browser all of a plugin's
        providers log in with), made by ``factory`` on first request. If it has an
        ``aclose()`` the manager awaits it at shutdown, after the providers closed."""
        if key not in self._shared:
            self._shared[key] = factory()
        value: T = self._shared[key]
        return value

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run ``coro`` in a task that shutdown cancels (a background refresh)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def emit_login(self, provider: str, reason: str, outcome: str, duration: float,
                   request_id: str) -> None:
        if self.events is not None and self.events.enabled:
            from ..events import SessionLogin

            self.events.emit(SessionLogin(
                request_id=request_id, provider=provider, reason=reason,
                outcome=outcome, duration=duration,
            ))

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """Entered before the providers open and left after they closed: cancels
        background logins, closes what providers shared, then the store."""
        try:
            yield
        finally:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            shared, self._shared = list(self._shared.items()), {}
            for key, value in reversed(shared):
                closer = getattr(value, "aclose", None)
                if closer is not None:
                    try:
                        await closer()
                    except Exception:
                        log.exception("sessions: closing %r failed", key)
            for handle in self.handles.values():
                handle.forget()
            store, self._store = self._store, None
            if store is not None:
                await store.aclose()


class ProviderSessions:
    """One provider's session: cached in memory, kept in the store, renewed by
    one login at a time."""

    def __init__(self, manager: SessionManager, name: str, login: LoginFn) -> None:
        self.manager = manager
        self.name = name
        self.login = login
        self.current: Session | None = None
        # Logins this process made for the provider (what metrics would count).
        self.logins = 0
        self._flight: asyncio.Task[Session] | None = None
        self._rejected_id: str | None = None
        self._blocked_until = 0.0
        self._failure: GatewayError | None = None

    def forget(self) -> None:
        """Drop the in-memory copy (at shutdown; the store keeps the session)."""
        self.current = None
        self._flight = None

    async def get(self, *, request_id: str = "") -> Session:
        """A usable session: from memory, else from the store, else a new login.

        A session within ``refresh_margin`` of its end is still returned, and a
        new login starts in the background."""
        session = self.current
        margin = self.manager.settings.refresh_margin
        if session is not None and session.id != self._rejected_id:
            state = session_state(session, margin)
            if state == "valid":
                return session
            if state == "expiring":
                if self._flight is None and time.monotonic() >= self._blocked_until:
                    self._start("refresh", "")
                return session
            return await self._join("expired", request_id)
        return await self._join("rejected" if self._rejected_id else "absent", request_id)

    async def warm(self, *, force: bool = False) -> Session:
        """Make sure a session that is not about to expire exists (``sessions warm``)."""
        session = self.current
        if not force and session is not None and session_state(
            session, self.manager.settings.refresh_margin
        ) == "valid":
            return session
        if force:
            self._blocked_until = 0.0
        return await self._join("forced" if force else "warm", "")

    async def invalidate(self, session: Session) -> None:
        """The site refused ``session``: forget it, here and in the store, unless a
        newer login already replaced it."""
        self._rejected_id = session.id
        if self.current is not None and self.current.id == session.id:
            self.current = None
        store = await self.manager.store()
        await store.delete(self.name, only_id=session.id)

    async def clear(self) -> bool:
        """Forget the session everywhere (``sessions clear``)."""
        self.current = None
        store = await self.manager.store()
        return await store.delete(self.name)

    async def call(
        self, operation: Callable[[Session], Awaitable[T]], *, request_id: str = ""
    ) -> T:
        """``operation(session)``; if it raises :class:`SessionRejected`, one new
        login and one more try. A second refusal is a 502 of kind ``auth``."""
        session = await self.get(request_id=request_id)
        try:
            return await operation(session)
        except SessionRejected:
            log.info("provider %r: the site refused session %s; logging in again",
                     self.name, session.id)
            await self.invalidate(session)
        session = await self.get(request_id=request_id)
        try:
            return await operation(session)
        except SessionRejected as exc:
            await self.invalidate(session)
            error = UpstreamError(
                f"Provider {self.name!r} refused the session of a fresh login.",
                code="upstream_session_rejected", kind="auth",
            )
            self._block(error)
            raise error from exc

    # -- logging in ------------------------------------------------------------

    def _block(self, error: GatewayError) -> None:
        self._failure = error
        self._blocked_until = time.monotonic() + self.manager.settings.login_backoff

    def _start(self, reason: str, request_id: str) -> asyncio.Task[Session]:
        flight = self.manager.spawn(self._obtain(reason, request_id))

        def landed(task: asyncio.Task[Session]) -> None:
            if self._flight is task:
                self._flight = None
            if not task.cancelled():
                task.exception()  # retrieved: a failed background refresh is logged already

        flight.add_done_callback(landed)
        self._flight = flight
        return flight

    async def _join(self, reason: str, request_id: str) -> Session:
        flight = self._flight
        if flight is None:
            wait = self._blocked_until - time.monotonic()
            if wait > 0 and self._failure is not None:
                raise UpstreamError(
                    f"{self._failure} (not tried again for {wait:.0f}s)",
                    code=self._failure.code, kind="auth", retry_after=wait,
                )
            flight = self._start(reason, request_id)
        # Shielded: a waiter that is cancelled (its client left) leaves the login
        # running for the others.
        try:
            return await asyncio.shield(flight)
        except GatewayError as error:
            # Every waiter gets its own copy: the layers above add headers to the
            # error they raise, and must not write into one shared by other requests.
            own = copy.copy(error)
            own.headers = dict(error.headers)
            raise own from None

    async def _obtain(self, reason: str, request_id: str) -> Session:
        manager = self.manager
        store = await manager.store()
        async with store.login_lock(self.name):
            stored = await store.load(self.name)
            if stored is not None and stored.id != self._rejected_id:
                state = session_state(stored, manager.settings.refresh_margin)
                if state == "valid" or (state == "expiring" and reason not in (
                    "refresh", "warm", "forced"
                )):
                    # Left by an earlier run, or by another process that logged in
                    # while we waited for the lock.
                    if reason != "forced":
                        self.current = stored
                        return stored
            return await self._login(store, reason, request_id)

    async def _login(self, store: SessionStore, reason: str, request_id: str) -> Session:
        manager = self.manager
        started = time.monotonic()
        log.info("provider %r: logging in (%s)", self.name, reason)
        try:
            fresh = await self.login()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            duration = time.monotonic() - started
            manager.emit_login(self.name, reason, "failed", duration, request_id)
            error = exc if isinstance(exc, GatewayError) else UpstreamError(
                f"Provider {self.name!r} could not log in: {type(exc).__name__}",
                code="upstream_login_failed", kind="auth",
            )
            self._block(error)
            log.warning("provider %r: login failed after %.1fs: %s", self.name, duration, error)
            previous = self.current
            if previous is not None and not previous.expired() and reason == "refresh":
                # A failed renewal never throws away a session that still works.
                return previous
            raise error from (None if error is exc else exc)
        duration = time.monotonic() - started
        now = time.time()
        fresh.provider = self.name
        fresh.created_at = now
        limit = now + manager.settings.lifetime
        fresh.expires_at = min(fresh.expires_at, limit) if fresh.expires_at else limit
        try:
            await store.save(fresh)
        except OSError as exc:
            log.warning("provider %r: session not stored (%s); kept in memory", self.name, exc)
        self.current = fresh
        self._rejected_id = None
        self._failure = None
        self._blocked_until = 0.0
        self.logins += 1
        manager.emit_login(self.name, reason, "ok", duration, request_id)
        log.info("provider %r: logged in in %.1fs; session %s", self.name, duration, fresh.id)
        return fresh
