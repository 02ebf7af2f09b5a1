"""Turning an upstream's error answer into the gateway's own error family.

    upstream 4xx          -> UpstreamStatusError: the same status, with the upstream's
                             message, type, code and param (the client's request was
                             at fault, so the client should see why)
    upstream 5xx, other   -> UpstreamHTTPError (502), naming the provider
    connect/read failure  -> UpstreamError (502), naming the provider
    timeout               -> UpstreamTimeout (504), naming the provider

Bodies that are not an OpenAI error object (HTML from a proxy, plain text, empty)
are normalised to a short, single-line message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from sluiceway import GatewayError, UpstreamError, UpstreamTimeout

__all__ = [
    "UpstreamHTTPError",
    "UpstreamStatusError",
    "error_from_response",
    "name_provider",
]

_SNIPPET = 200
_decode = msgspec.json.Decoder().decode


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
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, code=code, param=param, retry_after=retry_after)
        self.status = status
        self.error_type = error_type or "invalid_request_error"


class UpstreamHTTPError(UpstreamError):
    """The upstream answered with a server error (or a status we cannot pass on)."""

    def __init__(self, message: str, *, upstream_status: int, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.upstream_status = upstream_status


def _text(value: object) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _snippet(body: bytes) -> str:
    text = " ".join(body[: _SNIPPET * 4].decode("utf-8", "replace").split())
    return text if len(text) <= _SNIPPET else text[: _SNIPPET - 3] + "..."


def error_fields(body: bytes) -> dict[str, Any]:
    """``message``/``type``/``code``/``param`` from an error body, whatever its shape.

    Understands ``{"error": {...}}`` (OpenAI), ``{"error": "text"}`` and
    ``{"message": ...}``; anything else gives an empty dict.
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
    return {
        "message": _text(error.get("message")),
        "type": _text(error.get("type")),
        "code": _text(error.get("code")),
        "param": _text(error.get("param")),
    }


def _retry_after(headers: Mapping[str, str]) -> float | None:
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value:
            try:
                return float(value) * scale
            except ValueError:
                continue  # an HTTP date: not worth parsing on this path
    return None


def error_from_response(
    provider: str, status: int, body: bytes, headers: Mapping[str, str]
) -> GatewayError:
    """The error to raise for an upstream answer with ``status >= 400``."""
    fields = error_fields(body)
    message = fields.get("message") or ""
    if 400 <= status < 500:
        if not message:
            detail = _snippet(body)
            message = f"The upstream answered HTTP {status}" + (f": {detail}" if detail else ".")
        return UpstreamStatusError(
            status, message, error_type=fields.get("type"), code=fields.get("code"),
            param=fields.get("param"),
            retry_after=_retry_after(headers) if status == 429 else None,
        )
    detail = message or _snippet(body) or "no details"
    return UpstreamHTTPError(
        f"Provider {provider!r} failed with HTTP {status}: {detail}", upstream_status=status
    )


def name_provider(provider: str, error: UpstreamError | UpstreamTimeout) -> GatewayError:
    """The same error, its message prefixed with the provider's name."""
    cls = UpstreamTimeout if isinstance(error, UpstreamTimeout) else UpstreamError
    renamed = cls(f"Provider {provider!r}: {error.message}", code=error.code)
    renamed.__cause__ = error.__cause__
    return renamed
