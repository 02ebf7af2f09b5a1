"""The Anthropic Messages wire format: error bodies, statuses and headers (ours,
and reading an upstream's). Translation to and from the OpenAI shape is in
:mod:`sluiceway.wire.chat_to_messages`, :mod:`sluiceway.wire.messages_to_chat` and
:mod:`sluiceway.wire.anthropic_stream`; requests are validated in
:mod:`sluiceway.wire.anthropic_request`.

The gateway's errors keep their status on this dialect, with two exceptions
that follow Anthropic's conventions (and pick the SDK's exception class): "no
capacity" (503: the gateway is busy, every deployment is cooling down, or it is
shutting down) and an overloaded upstream (``upstream_overloaded``) are 529
``overloaded_error``. Statuses Anthropic does not use itself (502) keep their
status with type ``api_error``, which the SDK treats as any other 5xx.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import msgspec

from ..errors import GatewayError
from .sse import event_frame

__all__ = [
    "MAX_RETRY_AFTER_SECONDS",
    "error_body",
    "error_event",
    "error_headers",
    "error_status",
    "error_type",
    "parse_error",
]

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode

# The Anthropic SDK sleeps for whatever retry-after says, with no cap (it slept
# on 600 s when measured): never advertise more than this to its clients.
MAX_RETRY_AFTER_SECONDS = 60

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_OVERLOADED = 529


def error_status(error: GatewayError) -> int:
    """The HTTP status of ``error`` on the Anthropic dialect."""
    if error.status == 503 or error.code == "upstream_overloaded":
        return _OVERLOADED
    return error.status


def error_type(error: GatewayError | int) -> str:
    """Anthropic's error ``type`` for an error (or a bare HTTP status)."""
    status = error if isinstance(error, int) else error_status(error)
    return _TYPES.get(status, "api_error")


def error_body(error: GatewayError, request_id: str) -> bytes:
    """``{"type": "error", "error": {"type", "message"}, "request_id"}`` as bytes."""
    return _encode(
        {
            "type": "error",
            "error": {"type": error_type(error), "message": error.message},
            "request_id": request_id,
        }
    )


def error_event(error: GatewayError) -> bytes:
    """The ``event: error`` frame that ends a stream which failed after it started."""
    return event_frame(
        "error",
        _encode({"type": "error", "error": {"type": error_type(error), "message": error.message}}),
    )


def _seconds(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def error_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """An error's headers with ``retry-after`` and ``retry-after-ms`` capped at
    :data:`MAX_RETRY_AFTER_SECONDS`. A wait that was longer also gets
    ``x-should-retry: false``: the SDK would otherwise retry before the limit
    lifts and be refused again. A value that is not a number (an HTTP date,
    which the SDK would also obey) is dropped."""
    result = {name.lower(): value for name, value in headers.items()}
    too_long = False
    for name, scale in (("retry-after", 1), ("retry-after-ms", 1000)):
        value = result.get(name)
        if value is None:
            continue
        seconds = _seconds(value)
        if seconds is None:
            del result[name]
            continue
        seconds /= scale
        if seconds > MAX_RETRY_AFTER_SECONDS:
            too_long = True
            result[name] = str(MAX_RETRY_AFTER_SECONDS * scale)
    if too_long:
        result.setdefault("x-should-retry", "false")
    return result


def parse_error(body: bytes) -> tuple[str | None, str | None]:
    """``(type, message)`` from an Anthropic error body; ``(None, None)`` if it is not one."""
    try:
        data: Any = _decode(body) if body else None
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
