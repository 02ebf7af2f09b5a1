"""Microsoft Entra ID tokens by the client-credentials grant, fetched once and
renewed before they expire.

Every request asks :meth:`EntraTokens.headers`; while the token is fresh that is
a comparison and a dict. Requests that arrive while a token is being fetched
wait for that one fetch: a burst at expiry makes one call to the token
endpoint, not one per request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlencode

import msgspec

from sluiceway.api import UpstreamClient, UpstreamError, error_snippet

if TYPE_CHECKING:
    from .config import EntraOptions

__all__ = ["EntraTokenError", "EntraTokens"]

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
        self._fetching: asyncio.Future[None] | None = None
        self.fetched = 0

    async def headers(self) -> Mapping[str, str]:
        """``{"authorization": "Bearer ..."}`` with a token that is not about to expire."""
        if time.monotonic() < self._renew_at:
            return self._headers
        if self._fetching is None:
            self._fetching = asyncio.ensure_future(self._fetch())
        fetching = self._fetching
        try:
            # Shielded: one waiter hanging up must not cancel the others' fetch.
            await asyncio.shield(fetching)
        finally:
            if fetching.done() and self._fetching is fetching:
                self._fetching = None
        return self._headers

    async def _fetch(self) -> None:
        started = time.monotonic()
        try:
            response = await self._client.send("POST", self.url, headers=_FORM, body=self._form)
            body = await response.read()
            await response.aclose()
        except UpstreamError as exc:
            raise EntraTokenError(f"Provider {self.provider!r} could not reach the Microsoft "
                                  f"Entra token endpoint: {exc.message}", kind="connect") from exc
        try:
            answer = _decode(body) if body else None
        except msgspec.DecodeError:
            answer = None
        token = answer.get("access_token") if isinstance(answer, dict) else None
        if response.status != 200 or not isinstance(token, str):
            detail = error_snippet(body) or "no details"
            raise EntraTokenError(f"Provider {self.provider!r}: the Microsoft Entra token "
                                  f"endpoint answered HTTP {response.status}: {detail}")
        try:  # a number, or (older endpoints) a string of one
            seconds = float(answer.get("expires_in", 3600))  # type: ignore[union-attr]
        except (TypeError, ValueError):
            seconds = 3600.0
        self._headers = {"authorization": "Bearer " + token}
        self._renew_at = started + min(seconds - self._refresh_before, seconds * 0.9)
        self.fetched += 1
