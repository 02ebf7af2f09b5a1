"""One exception family for everything sluiceway raises.

Startup problems (bad configuration, plugins that cannot load) stop the process
before it serves anything. Request problems are ``GatewayError`` subclasses: each
carries the HTTP status, the OpenAI ``type`` and ``code``, and the ``param`` at
fault; the edge renders them in the client's dialect (OpenAI or Anthropic).
Anything else that escapes a handler becomes a 500 whose body names only the
request id; the traceback goes to the log.

    SluicewayError
    ├── StartupError                 the gateway cannot start
    │   ├── ConfigError              plugins.toml is wrong (file, key, found, expected)
    │   └── PluginError              a named plugin is missing, broken or clashes
    ├── ClientDisconnected           the client went away; nothing is sent
    └── GatewayError                 rendered to the client
        ├── InvalidRequest           400 invalid_request_error
        ├── AuthenticationFailed     401 authentication_error
        ├── PermissionDenied         403 permission_error
        ├── NotFound                 404 invalid_request_error (model_not_found, unknown_url)
        ├── MethodNotAllowed         405
        ├── RequestTimeout           408 the body did not arrive in time
        ├── PayloadTooLarge          413
        ├── RateLimited              429 (Retry-After)
        ├── UpstreamError            502 the provider failed or answered garbage
        ├── ServiceUnavailable       503 busy, dropped or shutting down (Retry-After)
        └── UpstreamTimeout          504

Every ``GatewayError`` also has a ``kind``, which tells the retry loop what the
failure says about the upstream: ``client`` (the request is wrong; never
retried), ``context_window`` (too long for this model; another may take it),
``auth`` (the upstream refused our credential), ``rate_limit``, ``server``,
``timeout``, ``connect``, and ``busy`` (no capacity here; not the upstream's
fault). ``alternate`` is set by a provider that has another credential to try.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

__all__ = [
    "AuthenticationFailed",
    "ClientDisconnected",
    "ConfigError",
    "GatewayError",
    "InvalidRequest",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "PluginError",
    "RateLimited",
    "RequestTimeout",
    "ServiceUnavailable",
    "SluicewayError",
    "StartupError",
    "UpstreamError",
    "UpstreamTimeout",
]

# The OpenAI SDK will not retry at all when Retry-After exceeds 120 s, and the
# Anthropic SDK sleeps for any value it is given: never advertise more.
MAX_RETRY_AFTER_SECONDS = 120.0


class SluicewayError(Exception):
    """Base of every exception sluiceway raises on purpose."""


class StartupError(SluicewayError):
    """The gateway cannot start; the message says why, without a traceback."""


class ConfigError(StartupError):
    """The configuration is invalid.

    The message names the file, the key path, what was found and what was expected.
    """

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        key: str | None = None,
    ) -> None:
        self.source = source
        self.key = key
        where = ": ".join(part for part in (source, key) if part)
        super().__init__(f"{where}: {message}" if where else message)


class PluginError(StartupError):
    """A plugin named in the configuration cannot be used."""


class ClientDisconnected(SluicewayError):
    """The client hung up; there is nobody left to answer."""


class GatewayError(SluicewayError):
    """An error that reaches the client as a well-formed error response.

    Subclasses fix ``status``, ``error_type`` and ``kind``; instances may set
    ``code``, ``param``, extra response ``headers``, ``retry_after`` (seconds),
    ``kind`` and ``alternate`` (see the module docstring).
    """

    status: int = 500
    error_type: str = "server_error"
    default_code: str | None = None
    kind: str = "server"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
        retry_after: float | None = None,
        kind: str | None = None,
        alternate: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code if code is not None else self.default_code
        self.param = param
        self.headers: dict[str, str] = dict(headers or {})
        if kind is not None:
            self.kind = kind
        self.alternate = alternate
        if retry_after is not None and not math.isfinite(retry_after):
            retry_after = None
        self.retry_after = retry_after
        if retry_after is not None:
            seconds = min(max(retry_after, 0.0), MAX_RETRY_AFTER_SECONDS)
            self.headers.setdefault("retry-after", str(math.ceil(seconds)))
            self.headers.setdefault("retry-after-ms", str(int(seconds * 1000)))


class InvalidRequest(GatewayError):
    """The request is malformed or a field is missing or of the wrong type."""

    status = 400
    kind = "client"
    error_type = "invalid_request_error"


class AuthenticationFailed(GatewayError):
    """No credential, or one that is not valid."""

    status = 401
    kind = "client"
    error_type = "authentication_error"
    default_code = "invalid_api_key"


class PermissionDenied(GatewayError):
    """A valid credential that may not do this (model not allowed, banned)."""

    status = 403
    kind = "client"
    error_type = "permission_error"


class NotFound(GatewayError):
    """Unknown model or path."""

    status = 404
    kind = "client"
    error_type = "invalid_request_error"


class MethodNotAllowed(GatewayError):
    """The path exists but not for this method."""

    status = 405
    kind = "client"
    error_type = "invalid_request_error"
    default_code = "method_not_allowed"


class RequestTimeout(GatewayError):
    """The request body did not arrive within the body timeout."""

    status = 408
    kind = "client"
    error_type = "invalid_request_error"
    default_code = "request_timeout"


class PayloadTooLarge(GatewayError):
    """The request body exceeds the configured limit."""

    status = 413
    kind = "client"
    error_type = "invalid_request_error"
    default_code = "request_too_large"


class RateLimited(GatewayError):
    """A limit refused the request; ``retry_after`` says when to try again."""

    status = 429
    kind = "rate_limit"
    error_type = "rate_limit_error"
    default_code = "rate_limit_exceeded"


class UpstreamError(GatewayError):
    """The provider failed, refused the connection or answered something unusable."""

    status = 502
    error_type = "upstream_error"
    default_code = "upstream_error"


class ServiceUnavailable(GatewayError):
    """The gateway is busy, dropped the request, or is shutting down."""

    status = 503
    kind = "busy"
    error_type = "service_unavailable"
    default_code = "service_unavailable"


class UpstreamTimeout(GatewayError):
    """The provider did not answer within its deadline."""

    status = 504
    kind = "timeout"
    error_type = "timeout_error"
    default_code = "upstream_timeout"
