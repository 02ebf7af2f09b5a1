"""Small helpers for sending complete responses over raw ASGI."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from ..components import Send

__all__ = ["JSON", "encode_headers", "send_bytes", "send_json"]

JSON = b"application/json"
_encode = msgspec.json.Encoder().encode


def encode_headers(headers: Mapping[str, str] | None) -> list[tuple[bytes, bytes]]:
    """ASGI header pairs from a str mapping."""
    if not headers:
        return []
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


async def send_bytes(
    send: Send,
    status: int,
    body: bytes,
    *,
    content_type: bytes = JSON,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    """Send a whole response in two ASGI messages."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_json(
    send: Send, status: int, payload: Any, *, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """Encode ``payload`` as JSON and send it."""
    await send_bytes(send, status, _encode(payload), headers=headers)
