"""Turning an Anthropic upstream's error answer into the gateway's own family.

    400 "prompt is too long"...  -> InvalidRequest (400), kind context_window,
                                    code context_length_exceeded
    400, 404, 413, other 4xx     -> AnthropicStatusError: the same status, kind client
    401, 403                     -> UpstreamError (502), kind auth, code upstream_auth_error:
                                    the gateway's key is at fault, not the client's
    429                          -> RateLimited, retry_after from the upstream's headers
    529 overloaded, 5xx          -> UpstreamError (502), kind server
    connect/read failure         -> UpstreamError (502), naming the provider
    timeout                      -> UpstreamTimeout (504), naming the provider

Every message names the provider and keeps the upstream's own message.
"""

from __future__ import annotations

from collections.abc import Mapping

from sluiceway.api import (
    GatewayError,
    InvalidRequest,
    RateLimited,
    UpstreamError,
    error_snippet,
    retry_after_seconds,
)
from sluiceway.api import parse_anthropic_error as parse_error

__all__ = ["AnthropicStatusError", "error_from_response"]

_CONTEXT_MARKERS = (
    "prompt is too long",
    "exceed context limit",
    "context window",
    "too many tokens",
)


class AnthropicStatusError(GatewayError):
    """An upstream 4xx the client caused, passed on with its own status."""

    kind = "client"

    def __init__(self, status: int, message: str, *, error_type: str | None) -> None:
        super().__init__(message, code=error_type)
        self.status = status
        self.error_type = error_type or "invalid_request_error"


def error_from_response(
    provider: str, status: int, body: bytes, headers: Mapping[str, str]
) -> GatewayError:
    """The error to raise for an upstream answer with ``status >= 400``."""
    error_type, message = parse_error(body)
    detail = message or error_snippet(body) or "no details"
    label = f" ({error_type})" if error_type else ""
    text = f"Provider {provider!r} answered HTTP {status}{label}: {detail}"
    if status == 429:
        return RateLimited(text, retry_after=retry_after_seconds(headers))
    if status in (401, 403):
        return UpstreamError(text, code="upstream_auth_error", kind="auth")
    if status == 400 and any(marker in detail.lower() for marker in _CONTEXT_MARKERS):
        return InvalidRequest(text, code="context_length_exceeded", kind="context_window")
    if 400 <= status < 500:
        return AnthropicStatusError(status, text, error_type=error_type)
    code = "upstream_overloaded" if status == 529 or error_type == "overloaded_error" else None
    return UpstreamError(text, code=code, kind="server", retry_after=retry_after_seconds(headers))
