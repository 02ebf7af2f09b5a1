"""One provider's login: what a browser (or a token endpoint) handed back, and when
it stops being good.

A :class:`Session` holds secrets (cookie values, a bearer token, storage values),
so its ``repr`` shows none of them: only the provider, the id and the times.
"""

from __future__ import annotations

import math
import secrets
import time
from typing import Any, Literal

import msgspec

__all__ = ["Session", "SessionState", "session_state"]

SessionState = Literal["valid", "expiring", "expired"]


def _new_id() -> str:
    return secrets.token_hex(8)


class Session(msgspec.Struct, kw_only=True, repr_omit_defaults=True):
    """A provider's credentials from one login.

    ``cookies`` are Playwright-shaped dicts (``name``, ``value``, ``domain``,
    ``path``, ``expires``, ``httpOnly``...); ``bearer`` is a token for an
    ``Authorization`` header; ``local_storage`` and ``session_storage`` are the
    values kept from the site's origin; ``extra`` is free for the provider.
    ``created_at`` and ``expires_at`` are epoch seconds (``0`` for
    ``expires_at`` means "as long as the configured lifetime allows"). ``id``
    tells one login from the next, so that a request holding a session the site
    refused never throws away a newer one.
    """

    provider: str
    cookies: list[dict[str, Any]] = msgspec.field(default_factory=list)
    bearer: str | None = None
    local_storage: dict[str, str] = msgspec.field(default_factory=dict)
    session_storage: dict[str, str] = msgspec.field(default_factory=dict)
    created_at: float = 0.0
    expires_at: float = 0.0
    extra: dict[str, Any] = msgspec.field(default_factory=dict)
    id: str = msgspec.field(default_factory=_new_id)

    def __repr__(self) -> str:
        # Never the values: a session in a log line or a traceback leaks nothing.
        return (
            f"Session(provider={self.provider!r}, id={self.id!r}, "
            f"expires_in={self.expires_in():.0f}s)"
        )

    __str__ = __repr__

    def expires_in(self, now: float | None = None) -> float:
        """Seconds until expiry (negative once expired; ``inf`` if unbounded)."""
        if not self.expires_at:
            return math.inf
        return self.expires_at - (time.time() if now is None else now)

    def expired(self, now: float | None = None) -> bool:
        return self.expires_in(now) <= 0

    def cookie(self, name: str) -> str | None:
        """The value of the first cookie called ``name``, if any."""
        return next((str(c["value"]) for c in self.cookies if c.get("name") == name), None)

    def cookie_header(self) -> str:
        """Every cookie as one ``Cookie`` header value (``a=1; b=2``)."""
        return "; ".join(f"{c['name']}={c['value']}" for c in self.cookies if "name" in c)


def session_state(session: Session, margin: float, now: float | None = None) -> SessionState:
    """``valid``, ``expiring`` (within ``margin`` of its end: due for a refresh) or
    ``expired``."""
    left = session.expires_in(now)
    if left <= 0:
        return "expired"
    return "expiring" if left <= margin else "valid"
