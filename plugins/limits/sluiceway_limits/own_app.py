"""Requests-per-window limits around any ASGI application, outside a gateway.

``RateLimit(app, rpm=100)`` limits every HTTP request to ``app`` per client
(by default its IP address), with the same counters, storage and headers as
the gateway's ``limits`` policy: in memory or shared through Redis.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal

from sluiceway.api import GatewayError, Receive, Scope, Send, send_error

from .limiter import Limiter, SlidingWindowCounter
from .moving_window import MovingWindow, RedisMovingWindow
from .policy import format_duration, rate_limit_headers, refusal
from .redis_store import RedisLimiter, RedisStore

__all__ = ["RateLimit", "client_address"]



def client_address(scope: Scope) -> str:
    """The default key: the peer's IP address, as the ASGI server reports it."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class RateLimit:
    """Pure ASGI middleware: at most ``rpm`` requests per ``window`` seconds per key.

    ``key(scope)`` names the caller (default :func:`client_address`; return
    ``None`` to let a request through unlimited, e.g. health checks). A refusal
    is a 429 in the OpenAI error shape with ``retry-after`` and
    ``retry-after-ms``; every answer carries ``x-ratelimit-*-requests``.
    ``storage`` is ``"memory://"`` or a Redis URL. The Redis client is closed
    when the wrapped application's lifespan shuts down (or by entering
    :meth:`lifespan` yourself, when the server runs no lifespan).
    """

    def __init__(
        self,
        app: Callable[..., Any],
        *,
        rpm: int,
        window: float = 60.0,
        key: Callable[[Scope], str | None] = client_address,
        strategy: Literal["sliding-window-counter", "moving-window"] = "sliding-window-counter",
        storage: str = "memory://",
        key_prefix: str = "sluiceway:limits:app:",
        on_storage_error: Literal["open", "closed"] = "open",
    ) -> None:
        if rpm < 0 or window <= 0:
            raise ValueError("rpm must be >= 0 and window > 0")
        self.app = app
        self.rpm = rpm
        self.window = window
        self.key = key
        self.store: RedisStore | None = None
        self.limiter: Limiter
        moving = strategy == "moving-window"
        if storage == "memory://":
            self.limiter = MovingWindow() if moving else SlidingWindowCounter()
        else:
            self.store = RedisStore(storage, key_prefix=key_prefix,
                                    on_storage_error=on_storage_error)
            self.limiter = RedisMovingWindow(self.store) if moving else RedisLimiter(self.store)

    def lifespan(self) -> AbstractAsyncContextManager[None]:
        """Closes the Redis client at shutdown (nothing to do in memory)."""
        return self.store.lifespan() if self.store is not None else contextlib.nullcontext()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" and self.store is not None:
            store = self.store

            async def close_on_shutdown(message: dict[str, Any]) -> None:
                if message["type"].startswith("lifespan.shutdown."):
                    await store.aclose()
                await send(message)

            await self.app(scope, receive, close_on_shutdown)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        key = self.key(scope)
        if key is None:
            await self.app(scope, receive, send)
            return
        headers: dict[str, str] = {}
        try:
            decision = await self.limiter.reserve(f"rpm:{key}", 1, self.rpm, self.window)
        except GatewayError as error:  # storage down with on_storage_error = "closed"
            await send_error(send, error, "openai", "")
            return
        rate_limit_headers(headers, "requests", self.rpm, decision)
        if not decision.allowed:
            refused = refusal(
                f"Rate limit reached for {key}: {self.rpm} requests per "
                f"{format_duration(self.window)}.", decision, headers,
            )
            await send_error(send, refused, "openai", "")
            return
        raw = [(name.encode(), value.encode()) for name, value in headers.items()]

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *raw]
            await send(message)

        await self.app(scope, receive, send_with_headers)
