"""Microsoft Entra ID tokens by the client-credentials grant, fetched once and
renewed before they expire.

Every request asks :meth:`EntraTokens.headers`; while the token is fresh that is
a comparison and a dict. Once it is due for renewal, one fetch starts in the
background and requests go on with the current token until it really expires;
only when there is no valid token do requests wait, all for that one fetch (a
burst makes one call to the token endpoint, not one per request). A failed
fetch is tried again no sooner than :data:`RETRY_AFTER_FAILURE` later, and its
details (which name the tenant and the application) go to the log only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlencode

import msgspec

from sluiceway.api import UpstreamClient, UpstreamError, UpstreamTimeout, error_snippet

if TYPE_CHECKING:
    from .config import EntraOptions

__all__ = ["RETRY_AFTER_FAILURE", "EntraTokenError", "EntraTokens"]

log = logging.getLogger("sluiceway.azure")
RETRY_AFTER_FAILURE = 5.0

_decode = msgspec.json.Decoder().decode
_FORM = {"content-type": "application/x-www-form-urlencoded", "accept": "application/json"}


class EntraTokenError(UpstreamError):
    """The token endpoint refused the application or answered nonsense: a 502,
    the gateway's credential being at fault, not the client's request."""

    default_code = "upstream_auth_error"
    kind = "auth"


class EntraTokens:
    """The current token of one application, for one provider."""

    def __init__(self, provider: str, options: EntraOptions, client: UpstreamClient) -> None:
        self.provider = provider
        self.url = (f"{options.authority.rstrip('/')}/{options.tenant_id}"
                    "/oauth2/v2.0/token")
        self._form = urlencode({
            "grant_type": "client_credentials", "client_id": options.client_id,
            "client_secret": options.client_secret.reveal(), "scope": options.scope,
        }).encode()
        self._refresh_before = float(options.refresh_before)
        self._client = client
        self._headers: Mapping[str, str] = {}
        self._renew_at = 0.0
        self._expires_at = 0.0
        self._not_before = 0.0  # no new fetch before this, after a failure
        self._failure: EntraTokenError | None = None
        self._fetching: asyncio.Task[None] | None = None
        self.fetched = 0

    async def headers(self) -> Mapping[str, str]:
        """``{"authorization": "Bearer ..."}`` with a token that has not expired."""
        now = time.monotonic()
        if now < self._renew_at:
            return self._headers
        fetching = self._fetching
        if fetching is None and now >= self._not_before:
            fetching = self._fetching = asyncio.ensure_future(self._fetch())
            fetching.add_done_callback(self._fetched)
        if now < self._expires_at:
            return self._headers  # still good: the renewal goes on in the background
        if fetching is None:
            assert self._failure is not None
            raise self._failure
        # Shielded: one waiter hanging up must not cancel the others' fetch.
        await asyncio.shield(fetching)
        return self._headers

    def _fetched(self, task: asyncio.Task[None]) -> None:
        self._fetching = None
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            self._failure = error if isinstance(error, EntraTokenError) else EntraTokenError(
                f"Provider {self.provider!r} could not get a Microsoft Entra token.")
            self._not_before = time.monotonic() + RETRY_AFTER_FAILURE

    async def _fetch(self) -> None:
        started = time.monotonic()
        try:
            response = await self._client.send("POST", self.url, headers=_FORM, body=self._form)
            body = await response.read()
            await response.aclose()
        except (UpstreamError, UpstreamTimeout) as exc:
            log.warning("provider %r: the Microsoft Entra token endpoint failed: %s",
                        self.provider, exc.message)
            raise EntraTokenError(f"Provider {self.provider!r} could not reach the Microsoft "
                                  "Entra token endpoint.", kind="connect") from exc
        try:
            answer = _decode(body) if body else None
        except msgspec.DecodeError:
            answer = None
        token = answer.get("access_token") if isinstance(answer, dict) else None
        if response.status != 200 or not isinstance(token, str):
            # The endpoint's text names the tenant and the application: the log's, only.
            log.warning("provider %r: the Microsoft Entra token endpoint answered HTTP %d: %s",
                        self.provider, response.status, error_snippet(body) or "no details")
            raise EntraTokenError(f"Provider {self.provider!r}: the Microsoft Entra token "
                                  f"endpoint refused the application (HTTP {response.status}).")
        try:  # a number, or (older endpoints) a string of one
            seconds = float(answer.get("expires_in", 3600))  # type: ignore[union-attr]
        except (TypeError, ValueError):
            seconds = 3600.0
        self._headers = {"authorization": "Bearer " + token}
        self._expires_at = started + seconds
        # Never renewing sooner than halfway, however short the token's life.
        self._renew_at = started + max(min(seconds - self._refresh_before, seconds * 0.9),
                                       seconds * 0.5)
        self._failure = None
        self.fetched += 1
