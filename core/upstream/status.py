"""Turning an upstream's error answer into the gateway's own error family, for any
HTTP provider whose upstream answers errors as JSON (OpenAI's ``{"error": {...}}``,
Google's ``{"error": {"code", "message", "status"}}``, plain ``{"message"}``).

Each error's ``kind`` tells the core's retry loop what the failure says::

    upstream 400 "context length"  -> UpstreamStatusError 400, kind context_window
                                      (too long for this model; another may take it)
    upstream 401 / 403             -> UpstreamAuthError 502, kind auth, code
                                      upstream_auth_error: the gateway's key was
                                      refused, not the client's
    upstream 429                   -> RateLimited 429, kind rate_limit, with the
                                      upstream's Retry-After (capped at 120 s)
    upstream other 4xx             -> UpstreamStatusError, same status, kind client,
                                      with the upstream's message, type, code, param
    upstream 503 / 529             -> UpstreamHTTPError 502, kind server, code
                                      upstream_overloaded (an Anthropic client sees 529)
    upstream 5xx, other            -> UpstreamHTTPError 502, kind server

Bodies that are not an error object (HTML from a proxy, plain text, empty) are
normalised to a short, single-line message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from ..errors import MAX_RETRY_AFTER_SECONDS, GatewayError, RateLimited, UpstreamError
from ..wire.headers import retry_after_seconds
from .provider_http import error_snippet

__all__ = [
    "UpstreamAuthError",
    "UpstreamHTTPError",
    "UpstreamStatusError",
    "error_fields",
    "is_context_window",
    "status_error",
]

_CONTEXT_CODES = frozenset({"context_length_exceeded", "model_context_window_exceeded"})
_CONTEXT_PHRASES = ("context length", "maximum context", "context window", "too many tokens",
                    "maximum number of tokens")
_decode = msgspec.json.Decoder().decode
# "Busy, come back later" rather than "broken": 503, and 529 from Anthropic-style upstreams.
_OVERLOADED = frozenset({503, 529})


class UpstreamStatusError(GatewayError):
    """An upstream 4xx answer, passed through with its own status and fields."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_type: str | None,
        code: str | None,
        param: str | None,
        kind: str = "client",
    ) -> None:
        super().__init__(message, code=code, param=param, kind=kind)
        self.status = status
        self.error_type = error_type or "invalid_request_error"


class UpstreamHTTPError(UpstreamError):
    """The upstream answered with a server error (or a status we cannot pass on)."""

    def __init__(self, message: str, *, upstream_status: int, code: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message, code=code, kind="server", retry_after=retry_after)
        self.upstream_status = upstream_status


class UpstreamAuthError(UpstreamError):
    """The upstream refused the gateway's credential (401/403): a 502, because the
    client's own request is not at fault. The upstream's message (which may quote
    part of the key) stays in ``upstream_message`` for the log."""

    default_code = "upstream_auth_error"
    kind = "auth"

    def __init__(
        self, message: str, *, upstream_status: int, upstream_message: str = ""
    ) -> None:
        super().__init__(message)
        self.upstream_status = upstream_status
        self.upstream_message = upstream_message


def _text(value: object) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def error_fields(body: bytes) -> dict[str, Any]:
    """``message``/``type``/``code``/``param`` from an error body, whatever its shape.

    Understands ``{"error": {...}}`` (OpenAI's; Google's, whose numeric ``code``
    gives way to its ``status`` name, ``"INVALID_ARGUMENT"``), ``{"error": "text"}``
    and ``{"message": ...}``; anything else gives an empty dict.
    """
    try:
        data = _decode(body) if body else None
    except msgspec.DecodeError:
        return {}
    if not isinstance(data, dict):
        return {}
    error = data.get("error", data)
    if isinstance(error, str):
        return {"message": error}
    if not isinstance(error, dict):
        return {}
    code = error.get("code")
    if not isinstance(code, str) and isinstance(error.get("status"), str):
        code = error["status"]
    return {
        "message": _text(error.get("message")),
        "type": _text(error.get("type")),
        "code": _text(code),
        "param": _text(error.get("param")),
    }


def is_context_window(code: str | None, message: str | None) -> bool:
    """Whether an error says the prompt is too long for the model."""
    if code in _CONTEXT_CODES:
        return True
    lowered = (message or "").lower()
    return any(phrase in lowered for phrase in _CONTEXT_PHRASES)


def status_error(
    provider: str, status: int, body: bytes, headers: Mapping[str, str], *,
    retry_after: float | None = None,
) -> GatewayError:
    """The error to raise for an upstream answer with ``status >= 400`` (usable as
    an :data:`~sluiceway.api.ErrorMapper`). ``retry_after`` overrides the wait the
    headers give, for upstreams that say it in the body; a 5xx's wait, like a
    429's, paces the core's retry."""
    fields = error_fields(body)
    message = fields.get("message") or ""
    code = fields.get("code")
    if status in (401, 403):
        return UpstreamAuthError(
            f"Provider {provider!r} refused the gateway's upstream credential "
            f"(HTTP {status}).",
            upstream_status=status,
            upstream_message=message or error_snippet(body),
        )
    if status == 429:
        wait = retry_after if retry_after is not None else retry_after_seconds(headers)
        return RateLimited(
            message or f"Provider {provider!r} is rate limited.",
            code=code or "rate_limit_exceeded",
            retry_after=None if wait is None else min(wait, MAX_RETRY_AFTER_SECONDS),
        )
    if 400 <= status < 500:
        if not message:
            detail = error_snippet(body)
            message = f"The upstream answered HTTP {status}" + (f": {detail}" if detail else ".")
        return UpstreamStatusError(
            status, message, error_type=fields.get("type"), code=code, param=fields.get("param"),
            kind="context_window" if status == 400 and is_context_window(code, message)
            else "client",
        )
    detail = message or error_snippet(body) or "no details"
    # A busy upstream's Retry-After paces the core's retry of it, as a 429's does.
    wait = retry_after if retry_after is not None else retry_after_seconds(headers)
    return UpstreamHTTPError(
        f"Provider {provider!r} failed with HTTP {status}: {detail}", upstream_status=status,
        code="upstream_overloaded" if status in _OVERLOADED else None,
        retry_after=None if wait is None else min(wait, MAX_RETRY_AFTER_SECONDS),
    )
