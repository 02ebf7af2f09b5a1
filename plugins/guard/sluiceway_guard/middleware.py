"""The abuse guard's middleware: IP bans, which are truly HTTP.

:class:`AbuseGuard` (slot ``before_auth``) refuses every request from a banned
address with 403 ``ip_banned`` before auth runs, and counts the failed
authentications that pass back through it, banning an address at
``max_failed_auth`` within ``failed_auth_window``. Around an app that is not a
sluiceway gateway it counts 401 responses instead and answers bans itself.
Key bursts are a call policy (:mod:`.burst`).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager

from sluiceway.api import (
    CONTEXT_KEY,
    ASGIApp,
    AuthenticationFailed,
    Gateway,
    GatewayError,
    LimitDecided,
    Message,
    PermissionDenied,
    Receive,
    RequestContext,
    Scope,
    Send,
    send_error,
    validate_options,
)

from .client_ip import ClientAddress
from .options import GuardOptions
from .redis_store import RedisGuardStore
from .store import GuardStore, MemoryGuardStore

__all__ = [
    "AbuseGuard",
    "Owner",
    "create_ip_guard",
    "create_store",
    "load_options",
]


PLUGIN = "guard"

log = logging.getLogger("sluiceway.guard")


def create_store(options: GuardOptions) -> GuardStore:
    """The store ``options.storage`` names: in memory, or in Redis."""
    if options.storage == "memory://":
        return MemoryGuardStore(options)
    return RedisGuardStore(options)


def seconds(value: float) -> str:
    return f"{value:g}s"


class Owner:
    """A middleware or call policy that owns a store and closes it with its ``lifespan``."""

    store: GuardStore

    def lifespan(self) -> AbstractAsyncContextManager[None]:
        """Entered by the gateway at startup: closes the store's Redis client
        (opened on first use, in the serving loop) at shutdown."""
        return self._lifespan()

    @contextlib.asynccontextmanager
    async def _lifespan(self) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        await self.store.aclose()


class AbuseGuard(Owner):
    """Bans client addresses after repeated failed authentication.

    In a gateway (slot ``before_auth``) a banned address gets
    :class:`~sluiceway.PermissionDenied` (403 ``ip_banned``, ``Retry-After`` the
    seconds left) before auth runs; public routes (health checks) are never
    refused. Failed authentications are the :class:`~sluiceway.AuthenticationFailed`
    errors that come back through this layer; each is counted, then re-raised.

    Around any other ASGI app (no sluiceway context in the scope) it answers a
    banned address itself with a JSON 403 ``{"error": {...}}`` and counts the
    app's 401 responses as failed authentications::

        app = AbuseGuard(app, options=GuardOptions(max_failed_auth=5, ban_for=Duration(600)))

    It closes its Redis client when the app's lifespan shuts down, or when
    :meth:`lifespan` (or :meth:`aclose`) is used.
    """

    def __init__(
        self,
        app: ASGIApp,
        options: GuardOptions | None = None,
        *,
        store: GuardStore | None = None,
    ) -> None:
        self.app = app
        self.options = options if options is not None else GuardOptions()
        self.store = store if store is not None else create_store(self.options)
        self.client_address = ClientAddress(self.options.trusted_proxies,
                                            self.options.ipv6_prefix)
        self.enabled = self.options.bans

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await self.app(scope, receive, self._closing(send))
            else:
                await self.app(scope, receive, send)
            return
        if not self.enabled:
            await self.app(scope, receive, send)
            return
        ctx: RequestContext | None = scope.get(CONTEXT_KEY)
        if ctx is None:
            await self._guard_app(scope, receive, send)
            return
        if ctx.route is not None and ctx.route.public:
            await self.app(scope, receive, send)
            return
        address = self.client_address(scope)
        if address is None:  # no peer address (a Unix socket): nothing to ban
            await self.app(scope, receive, send)
            return
        left = await self.store.ban_left(address)
        if left > 0:
            _decided(ctx, "ip", allowed=False)
            raise self.banned(left)
        try:
            await self.app(scope, receive, send)
        except AuthenticationFailed:
            if ctx.principal is None:  # the auth chain refused it
                await self.failed(address)
            raise

    def banned(self, left: float) -> PermissionDenied:
        # Not ``retry_after=``: that is capped at 120 s for the SDKs' retries, and
        # no SDK retries a 403; the header tells a person how long the ban lasts.
        return PermissionDenied(
            "Too many failed authentications from your address: it is blocked for "
            f"{math.ceil(left)} more seconds.",
            code="ip_banned", headers={"retry-after": str(math.ceil(left))},
        )

    async def failed(self, address: str) -> None:
        """Count a failed authentication from ``address``; log a ban it causes."""
        banned = await self.store.record_failure(address)
        if banned:
            options = self.options
            log.warning(
                "guard: banned %s for %s after %d failed authentications within %s",
                address, seconds(banned), options.max_failed_auth,
                seconds(options.failed_auth_window),
            )

    async def _guard_app(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Around an app that is not a gateway: bans answered here, 401s counted."""
        address = self.client_address(scope)
        if address is None:
            await self.app(scope, receive, send)
            return
        try:
            left = await self.store.ban_left(address)
        except GatewayError as error:  # storage down with on_storage_error = "closed"
            await _send_error(send, error)
            return
        if left > 0:
            await _send_error(send, self.banned(left))
            return
        status = 0

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self.app(scope, receive, watch)
        if status == 401:
            await self.failed(address)

    def _closing(self, send: Send) -> Send:
        """The lifespan's ``send``: closes the store just before shutdown completes."""

        async def closing(message: Message) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await self.aclose()
            await send(message)

        return closing


async def _send_error(send: Send, error: GatewayError) -> None:
    """``error`` as a complete OpenAI-shaped response (around an app of one's own)."""
    await send_error(send, error, "openai", "")


def _decided(ctx: RequestContext | None, limit: str, *, allowed: bool,
             key_id: str | None = None) -> None:
    if ctx is not None and ctx.gateway.events.enabled:
        ctx.gateway.events.emit(LimitDecided(request_id=ctx.request_id, policy=PLUGIN,
                                             limit=limit, allowed=allowed, key_id=key_id))


def load_options(gateway: Gateway) -> GuardOptions:
    """``[plugin.guard]``, validated; a ``ConfigError`` names a bad key."""
    config = gateway.config
    # Without a storage of its own, the bans live where [state] keeps shared state.
    return validate_options(
        {"storage": config.shared_storage(), **config.plugin_options(PLUGIN)}, GuardOptions,
        source=config.source, key=f"plugin.{PLUGIN}",
    )


def create_ip_guard(app: ASGIApp, gateway: Gateway) -> AbuseGuard:
    """The ``factory(app, gateway)`` of the ``before_auth`` middleware."""
    return AbuseGuard(app, load_options(gateway))


