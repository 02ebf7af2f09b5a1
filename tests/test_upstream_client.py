"""The upstream client backends against real loopback servers.

The cancellation storm is the regression guard for the httpx 0.28 pool bug
(encode/httpcore#961; DEPENDENCIES.md section 4.5): after a few rounds of about
a hundred requests cancelled between connect and response headers, the stock
httpx pool is left full of dead connections and every later request times out.
Each backend must still answer a normal request afterwards. Every wait is
bounded, so a jammed pool fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sluiceway import UpstreamError, UpstreamLimits, UpstreamTimeout
from sluiceway.testing import RunningServer
from sluiceway.upstream.client import UpstreamClient, UpstreamResponse, create_upstream_client

BACKENDS = ("aiohttp", "httpx2")
SLOW_SECONDS = 0.1
CANCEL_AFTER = 0.05
DRIP_CHUNKS = 20
BOUND = 10.0  # generous: only a jammed pool comes near it


async def slow_upstream(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``/slow`` answers after 100 ms; ``/drip`` sends a chunk every 50 ms."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            done = "lifespan.startup.complete" if message["type"] == "lifespan.startup" else (
                "lifespan.shutdown.complete")
            await send({"type": done})
            if done == "lifespan.shutdown.complete":
                return
    if scope["path"].startswith("/echo"):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": scope["raw_path"]})
        return
    if scope["path"] == "/drip":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for index in range(DRIP_CHUNKS):
            await send({"type": "http.response.body", "body": b"chunk %d\n" % index,
                        "more_body": True})
            await asyncio.sleep(0.05)
        await send({"type": "http.response.body", "body": b""})
        return
    await asyncio.sleep(SLOW_SECONDS)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
def upstream(serve_asgi: Callable[..., RunningServer]) -> RunningServer:
    return serve_asgi(slow_upstream)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


async def _get(client: UpstreamClient, url: str) -> bytes:
    response = await client.send("GET", url)
    assert response.status == 200
    return await response.read()


async def test_pool_survives_a_cancellation_storm(upstream: RunningServer, backend: str) -> None:
    client = create_upstream_client(UpstreamLimits(max_connections=100, backend=backend))  # type: ignore[arg-type]
    url = upstream.url + "/slow"
    try:
        assert await asyncio.wait_for(_get(client, url), BOUND) == b"ok"
        for _ in range(10):
            tasks = [asyncio.create_task(client.send("GET", url)) for _ in range(150)]
            await asyncio.sleep(CANCEL_AFTER)  # connected and sent; no headers yet
            for task in tasks:
                task.cancel()
            results = await asyncio.wait_for(
                asyncio.gather(*tasks, return_exceptions=True), BOUND
            )
            for result in results:  # any that beat the cancel must not leak a connection
                if not isinstance(result, BaseException):
                    await result.aclose()
        # The pool must still work, at once and under load.
        assert await asyncio.wait_for(_get(client, url), BOUND) == b"ok"
        bodies = await asyncio.wait_for(
            asyncio.gather(*(_get(client, url) for _ in range(100))), BOUND
        )
        assert bodies == [b"ok"] * 100
    finally:
        await asyncio.wait_for(client.aclose(), BOUND)


async def test_cancel_mid_body_then_reuse_and_close(upstream: RunningServer, backend: str) -> None:
    client = create_upstream_client(UpstreamLimits(max_connections=4, backend=backend))  # type: ignore[arg-type]
    url = upstream.url + "/drip"

    async def read_some(response: UpstreamResponse) -> None:
        async for _ in response.aiter_bytes():
            pass

    try:
        for _ in range(3):  # more rounds than the pool has connections
            responses = [await asyncio.wait_for(client.send("GET", url), BOUND) for _ in range(4)]
            readers = [asyncio.create_task(read_some(r)) for r in responses]
            await asyncio.sleep(0.12)  # a couple of chunks in
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
            for response in responses:
                await asyncio.wait_for(response.aclose(), BOUND)
        response = await asyncio.wait_for(client.send("GET", url), BOUND)
        body = await asyncio.wait_for(response.read(), BOUND)
        assert body.count(b"chunk") == DRIP_CHUNKS
        # Closing the client with a response still open must not hang; the
        # response can still be closed afterwards.
        dangling = await asyncio.wait_for(client.send("GET", url), BOUND)
    finally:
        await asyncio.wait_for(client.aclose(), BOUND)
    await asyncio.wait_for(dangling.aclose(), BOUND)


@pytest.fixture
def refused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose kernel accepts connections (the backlog) but nothing ever answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


async def test_refused_connection_is_upstream_connect_error(
    refused_port: int, backend: str
) -> None:
    client = create_upstream_client(UpstreamLimits(backend=backend))  # type: ignore[arg-type]
    try:
        with pytest.raises(UpstreamError) as caught:
            await asyncio.wait_for(
                client.send("GET", f"http://127.0.0.1:{refused_port}/"), BOUND
            )
    finally:
        await client.aclose()
    assert caught.value.code == "upstream_connect_error"
    assert caught.value.status == 502


async def test_silent_server_is_upstream_timeout(silent_port: int, backend: str) -> None:
    client = create_upstream_client(
        UpstreamLimits(read_timeout=0.3, backend=backend)  # type: ignore[arg-type]
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        with pytest.raises(UpstreamTimeout) as caught:
            await asyncio.wait_for(client.send("GET", f"http://127.0.0.1:{silent_port}/"), BOUND)
    finally:
        await client.aclose()
    assert caught.value.code == "upstream_timeout"
    assert caught.value.status == 504
    assert loop.time() - started < 3


async def test_urls_go_out_as_built_and_only_unsendable_characters_are_quoted(
    upstream: RunningServer, backend: str,
) -> None:
    """A signed path keeps its escapes (%3A stays %3A); a space or a non-ASCII letter
    from a configured base URL is escaped, on either backend alike."""
    client = create_upstream_client(UpstreamLimits(backend=backend))  # type: ignore[arg-type]
    try:
        assert await _get(client, upstream.url + "/echo/model/a.b-v1%3A0/x") == \
            b"/echo/model/a.b-v1%3A0/x"
        assert await _get(client, upstream.url + "/echo/my path/caf\u00e9") == \
            b"/echo/my%20path/caf%C3%A9"
    finally:
        await client.aclose()
