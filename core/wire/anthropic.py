"""The Anthropic Messages wire format: error bodies (ours, and reading an
upstream's). Translation to and from the OpenAI shape is in
:mod:`sluiceway.wire.translate`, :mod:`sluiceway.wire.translate_ingress` and
:mod:`sluiceway.wire.anthropic_stream`.
"""

from __future__ import annotations

import msgspec

from ..errors import GatewayError

__all__ = ["error_body", "error_type", "parse_error"]

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode

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


def parse_error(body: bytes) -> tuple[str | None, str | None]:
    """``(type, message)`` from an Anthropic error body; ``(None, None)`` if it is not one."""
    try:
        data = _decode(body) if body else None
    except msgspec.DecodeError:
        return None, None
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return None, None
    kind, message = error.get("type"), error.get("message")
    return (
        kind if isinstance(kind, str) else None,
        message if isinstance(message, str) else None,
    )
