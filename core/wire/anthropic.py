"""The Anthropic Messages wire format (error bodies for now; the ingress builds on it)."""

from __future__ import annotations

import msgspec

from ..errors import GatewayError

__all__ = ["error_body", "error_type"]

_encode = msgspec.json.Encoder().encode

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
}


def error_type(status: int) -> str:
    """Anthropic's error ``type`` for an HTTP status."""
    return _TYPES.get(status, "api_error")


def error_body(error: GatewayError, request_id: str) -> bytes:
    """``{"type": "error", "error": {"type", "message"}, "request_id"}`` as bytes."""
    return _encode(
        {
            "type": "error",
            "error": {"type": error_type(error.status), "message": error.message},
            "request_id": request_id,
        }
    )
