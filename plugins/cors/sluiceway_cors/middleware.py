"""CORS as pure ASGI middleware, in the ``edge`` slot: outside the request
context, so every answer the gateway sends carries the headers (a 401 or a 429
too, which a browser could not read otherwise), and a preflight is answered
before auth, limits or metrics see it."""

from __future__ import annotations

import re
from typing import Annotated

import msgspec

from sluiceway.api import (
    ASGIApp,
    Duration,
    Gateway,
    Message,
    PermissionDenied,
    Receive,
    Scope,
    Send,
    send_error,
    validate_options,
)

__all__ = ["CORS", "CorsOptions", "create_cors"]

PLUGIN = "cors"

_Token = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")]


class CorsOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[plugin.cors]``. With no ``allow_origins`` and no ``allow_origin_regex``
    no origin is allowed: list the web apps that call the gateway."""

    # Exact origins ("https://app.example.com"), or "*" for any.
    allow_origins: list[str] = msgspec.field(default_factory=list)
    # An origin matching this (whole) is allowed too, e.g. "https://.*\\.example\\.com".
    allow_origin_regex: str | None = None
    allow_methods: list[_Token] = msgspec.field(
        default_factory=lambda: ["GET", "POST", "OPTIONS"])
    # "*": whatever the preflight asks for (the SDKs send x-stainless-* and more).
    allow_headers: list[_Token] = msgspec.field(default_factory=lambda: ["*"])
    # What a page may read of an answer besides the CORS-safelisted headers.
    expose_headers: list[_Token] = msgspec.field(default_factory=lambda: [
        "x-request-id", "request-id", "retry-after", "retry-after-ms",
        "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests", "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens",
        "x-sluiceway-provider", "x-sluiceway-model",
    ])
    # Cookies and HTTP auth from the page; an allowed origin is then echoed, never "*".
    allow_credentials: bool = False
    # How long a browser may keep a preflight's answer.
    max_age: Duration = Duration(600)

    def __post_init__(self) -> None:
        for origin in self.allow_origins:
            if origin != "*" and (origin.endswith("/") or "://" not in origin):
                raise ValueError(
                    f"allow_origins: {origin!r} is not an origin (scheme://host[:port], "
                    "no path), or \"*\"")
        if self.allow_origin_regex is not None:
            try:
                re.compile(self.allow_origin_regex)
            except re.error as exc:
                raise ValueError(f"allow_origin_regex: {exc}") from None


class CORS:
    """Adds CORS headers to the answers of allowed origins and answers their
    preflights (204); a preflight from an origin, for a method or with headers
    that are not allowed gets a 403 that says which. Requests without an
    ``Origin`` header pass through untouched."""

    def __init__(self, app: ASGIApp, options: CorsOptions) -> None:
        self.app = app
        self.options = options
        self._any_origin = "*" in options.allow_origins
        self._origins = frozenset(o.lower() for o in options.allow_origins if o != "*")
        self._regex = re.compile(options.allow_origin_regex) if options.allow_origin_regex else None
        self._any_method = "*" in options.allow_methods
        self._methods = frozenset(m.upper() for m in options.allow_methods)
        self._any_header = "*" in options.allow_headers
        self._headers = frozenset(h.lower() for h in options.allow_headers)
        # The same for every allowed origin: built once.
        self._common: list[tuple[bytes, bytes]] = []
        if options.allow_credentials:
            self._common.append((b"access-control-allow-credentials", b"true"))
        self._expose = (b"access-control-expose-headers",
                        ", ".join(options.expose_headers).encode())
        self._allow_methods = (b"access-control-allow-methods",
                               ", ".join(m.upper() for m in options.allow_methods).encode())
        self._max_age = (b"access-control-max-age", str(int(options.max_age)).encode())
        # "*" answers may be cached for every origin; an echoed origin may not.
        self._echo = options.allow_credentials or not self._any_origin

    def _allowed(self, origin: str) -> bool:
        if self._any_origin or origin.lower() in self._origins:
            return True
        return self._regex is not None and self._regex.fullmatch(origin) is not None

    def _origin_headers(self, origin: bytes) -> list[tuple[bytes, bytes]]:
        if self._echo:
            return [(b"access-control-allow-origin", origin), (b"vary", b"Origin"),
                    *self._common]
        return [(b"access-control-allow-origin", b"*"), *self._common]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        origin = requested_method = requested_headers = None
        for name, value in scope["headers"]:
            if name == b"origin":
                origin = value
            elif name == b"access-control-request-method":
                requested_method = value
            elif name == b"access-control-request-headers":
                requested_headers = value
        if origin is not None and scope["method"] == "OPTIONS" and requested_method is not None:
            await self._answer_preflight(send, origin, requested_method, requested_headers)
            return
        if origin is not None and self._allowed(origin.decode("latin-1")):
            added = [*self._origin_headers(origin), self._expose]
        elif self._echo:
            # The answer depends on the Origin (none here, or one not allowed): say so,
            # or a shared cache may hand this one to an allowed origin.
            added = [(b"vary", b"Origin")]
        else:
            await self.app(scope, receive, send)
            return

        async def with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                # Ours replace any the app set: two values would make the browser refuse.
                kept = [(name, value) for name, value in message.get("headers", ())
                        if not name.lower().startswith(b"access-control-")]
                message["headers"] = [*kept, *added]
            await send(message)

        await self.app(scope, receive, with_cors)

    async def _answer_preflight(
        self, send: Send, origin: bytes, method: bytes, headers: bytes | None
    ) -> None:
        text = origin.decode("latin-1")
        if not self._allowed(text):
            await _refuse(send, f"Origin {text!r} may not call this gateway "
                                "(see [plugin.cors] allow_origins).", "cors_origin_not_allowed")
            return
        wanted = method.decode("latin-1").strip().upper()
        if not self._any_method and wanted not in self._methods:
            await _refuse(send, f"Method {wanted!r} is not allowed from other origins "
                                "(see [plugin.cors] allow_methods).", "cors_method_not_allowed")
            return
        asked = [h.strip().lower() for h in (headers or b"").decode("latin-1").split(",")
                 if h.strip()]
        if not self._any_header:
            refused = [h for h in asked if h not in self._headers]
            if refused:
                await _refuse(send, f"Request headers {', '.join(refused)} are not allowed "
                                    "from other origins (see [plugin.cors] allow_headers).",
                              "cors_headers_not_allowed")
                return
        reply = [*self._origin_headers(origin), self._max_age,
                 self._allow_methods if not self._any_method
                 else (b"access-control-allow-methods", wanted.encode())]
        if asked:
            reply.append((b"access-control-allow-headers", ", ".join(asked).encode()))
        # The reply echoes what the preflight asked: caches must key on it.
        reply.append((b"vary", b"Access-Control-Request-Method, Access-Control-Request-Headers"))
        await send({"type": "http.response.start", "status": 204, "headers": reply})
        await send({"type": "http.response.body", "body": b""})


async def _refuse(send: Send, message: str, code: str) -> None:
    await send_error(send, PermissionDenied(message, code=code), "openai", "")


def load_options(gateway: Gateway) -> CorsOptions:
    """``[plugin.cors]``, validated; a ``ConfigError`` names a bad key."""
    config = gateway.config
    return validate_options(config.plugin_options(PLUGIN), CorsOptions,
                            source=config.source, key=f"plugin.{PLUGIN}")


def create_cors(app: ASGIApp, gateway: Gateway) -> CORS:
    """The ``factory(app, gateway)`` of the ``edge`` middleware."""
    return CORS(app, load_options(gateway))
