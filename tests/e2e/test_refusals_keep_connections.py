"""A refusal sent before the request body was read (a bad key, a policy) leaves the
connection usable for the client's next request, or says ``connection: close``.

Without this, the server closes a connection whose body it never read, while a
pooling client (the OpenAI SDK) may already be reusing it: its next request
fails with "Server disconnected without sending a response"."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

from sluiceway_api_keys import KeyStore

from sluiceway.testing import RunningServer

Factory = Callable[..., RunningServer]


def exchange(sock: socket.socket, body: bytes, key: str, *, pause: float = 0.0) -> bytes:
    """One POST on an open socket; the whole response (headers and body). With
    ``pause``, the body follows the headers that much later, as it does from a
    client whose body is still on its way."""
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: test\r\n"
        b"content-type: application/json\r\n"
        + f"authorization: Bearer {key}\r\ncontent-length: {len(body)}\r\n\r\n".encode()
    )
    time.sleep(pause)
    sock.sendall(body)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return head + b"\r\n\r\n" + rest


def test_refusals_before_the_body_keep_the_connection(
    gateway_factory: Factory, tmp_path: Path
) -> None:
    keys = KeyStore(tmp_path / "keys.toml")
    good = keys.create("crm")
    server = gateway_factory({
        "gateway": {"plugins": ["mock", "api-keys"]},
        "providers": [{"name": "mock", "type": "mock", "models": ["mock-gpt"]}],
        "auth": {"chain": ["api-keys"], "api-keys": {"keys_file": str(tmp_path / "keys.toml")}},
    })
    body = b'{"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}'
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        for pause in (0.0, 0.2, 0.0):  # refused three times, unread bodies, one connection
            refused = exchange(sock, body, "sk-sw-" + "A" * 43, pause=pause)
            assert refused.startswith(b"HTTP/1.1 401")
            assert b"connection: close" not in refused.lower()
        answered = exchange(sock, body, good.secret)
        assert answered.startswith(b"HTTP/1.1 200"), answered[:200]

    # A body too large to drop quickly: the refusal says the connection closes.
    big = b'{"model": "mock-gpt", "messages": [{"role": "user", "content": "' + (
        b"x" * 200_000) + b'"}]}'
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        refused = exchange(sock, big, "sk-sw-" + "B" * 43)
        assert refused.startswith(b"HTTP/1.1 401")
        assert b"connection: close" in refused.lower()
