"""The encrypted session store for providers whose credentials expire (browser
logins, OAuth tokens): ``gateway.sessions``.

* :class:`Session`: one login's cookies, bearer token, storage values and expiry.
* :class:`SessionManager` / :class:`ProviderSessions`: one login in flight per
  provider, refresh before expiry, one re-login and retry when the site refuses
  a session (:class:`SessionRejected`).
* :class:`FileSessionStore` and ``RedisSessionStore`` (in
  :mod:`sluiceway.sessions.redis_store`, needs the redis extra): where sealed
  sessions live; :class:`KeyRing`: Fernet keys (MultiFernet for rotation).

Configured by ``[sessions]`` (docs/configuration.md); operated with
``sluiceway sessions warm|list|clear|rotate-key`` (docs/operator.md).
"""

from .keys import KeyRing, UnreadableSession, key_file_path
from .manager import LoginFn, ProviderSessions, SessionManager, SessionRejected
from .record import Session, SessionState, session_state
from .store import FileSessionStore, SessionStore, StoredSession

__all__ = [
    "FileSessionStore",
    "KeyRing",
    "LoginFn",
    "ProviderSessions",
    "Session",
    "SessionManager",
    "SessionRejected",
    "SessionState",
    "SessionStore",
    "StoredSession",
    "UnreadableSession",
    "key_file_path",
    "session_state",
]
