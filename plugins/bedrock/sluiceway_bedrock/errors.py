"""Bedrock's error answers: ``{"message": ...}`` with the error's name in the
``x-amzn-errortype`` header (``ValidationException:http://...``).

The usual mapping (``sluiceway.api.status_error``) with Bedrock's names as
codes, and three of its own: a 424 ``ModelErrorException`` and a 408
``ModelTimeoutException`` are the model's failures (502 and 504, worth a retry or
a fallback), and "Input is too long" is a context-window failure.
"""

from __future__ import annotations

from collections.abc import Mapping

from sluiceway.api import GatewayError, UpstreamError, UpstreamTimeout, error_fields, status_error

__all__ = ["error_from_response"]

_CONTEXT = ("input is too long", "too many input tokens", "prompt is too long")


def error_from_response(provider: str, status: int, body: bytes,
                        headers: Mapping[str, str]) -> GatewayError:
    name = (headers.get("x-amzn-errortype") or "").split(":", 1)[0] or None
    message = error_fields(body).get("message") or ""
    label = f"Provider {provider!r} ({name or f'HTTP {status}'}): {message or 'no details'}"
    if status == 408 or name == "ModelTimeoutException":
        return UpstreamTimeout(label)
    if status == 424 or name == "ModelErrorException":
        return UpstreamError(label, code="upstream_model_error", kind="server")
    if status == 400 and any(phrase in message.lower() for phrase in _CONTEXT):
        error = status_error(provider, status, body, headers)
        error.kind, error.code = "context_window", "context_length_exceeded"
        return error
    error = status_error(provider, status, body, headers)
    if name and error.code in (None, "upstream_error") and status < 500:
        error.code = name
    return error
