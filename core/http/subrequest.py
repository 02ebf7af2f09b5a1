"""A request the gateway makes of itself, in-process: through every middleware,
the auth chain, the route and its call policies, as a client's would go, with
no socket in between.

A plugin that needs what a route does (a cache's embedding of a prompt, for
example) asks the route, rather than reaching for a provider: the request is
routed, pooled, retried, limited, priced and reported like any other, under
whatever credentials the plugin passes in its headers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from ..components import Message

__all__ = ["SubResponse", "run_subrequest"]

Header = tuple[bytes, bytes]
_decode = msgspec.json.Decoder().decode


@dataclass(frozen=True, slots=True)
class SubResponse:
    """What the gateway answered its own request: status, headers, whole body."""

    status: int
    headers: tuple[Header, ...]
    body: bytes

    def header(self, name: bytes) -> str | None:
        """The first value of a response header (``name`` in lower case)."""
        for key, value in self.headers:
            if key == name:
                return value.decode("latin-1")
        return None

    def json(self) -> Any:
        """The body, decoded as JSON (``msgspec.DecodeError`` if it is not)."""
        return _decode(self.body)


async def run_subrequest(app: Any, method: str, path: str, *, body: bytes = b"",
                         headers: Iterable[Header] = ()) -> SubResponse:
    """Send ``method path`` with ``body`` to the ASGI ``app`` and collect the answer
    (a stream's frames joined). Header names must be lower case."""
    extra = list(headers)
    names = {name for name, _ in extra}
    if b"content-type" not in names and body:
        extra.append((b"content-type", b"application/json"))
    extra.append((b"content-length", str(len(body)).encode()))
    scope: dict[str, Any] = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1", "method": method, "scheme": "http", "path": path,
        "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": extra, "client": ("127.0.0.1", 0), "server": ("127.0.0.1", 0),
        "state": {},
    }
    delivered = False

    async def receive() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        # The caller never hangs up: watchers of a disconnect wait until cancelled.
        await asyncio.get_running_loop().create_future()
        raise AssertionError("unreachable")

    status = 0
    response_headers: tuple[Header, ...] = ()
    parts: list[bytes] = []

    async def send(message: Message) -> None:
        nonlocal status, response_headers
        if message["type"] == "http.response.start":
            status = message["status"]
            response_headers = tuple(message.get("headers", ()))
        elif message["type"] == "http.response.body":
            parts.append(message.get("body", b""))

    await app(scope, receive, send)
    return SubResponse(status, response_headers, b"".join(parts))
