"""Over real sockets: disconnects, graceful shutdown, internal errors and request ids."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable

import httpx
import openai
import pytest

from sluiceway.config import Duration, ServerSettings
from sluiceway.testing import RunningServer

from ..conftest import CONTROLLED_CONFIG, ControlledPlugin, Script

MESSAGES = [{"role": "user", "content": "hi"}]


def _wait_for(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_client_disconnect_mid_stream_cancels_the_provider(
    gateway_factory: Callable[..., RunningServer],
    script: Script,
    controlled_plugin: tuple[str, ControlledPlugin],
) -> None:
    script.chunks, script.chunk_delay = 1000, 0.02
    server = gateway_factory(CONTROLLED_CONFIG, plugins=[controlled_plugin])
    with (
        httpx.Client() as client,
        client.stream(
            "POST",
            server.base_url + "/chat/completions",
            json={"model": "ctl-model", "messages": MESSAGES, "stream": True},
        ) as response,
    ):
        assert response.status_code == 200
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
    # Leaving the block closed the connection mid-stream.
    _wait_for(lambda: len(script.cancelled) == 1, "the provider stream to be cancelled")
    assert script.completed == []
    _wait_for(lambda: not server.gateway.inflight, "the request to leave the in-flight set")


def test_client_disconnect_while_waiting_cancels_a_plain_request(
    gateway_factory: Callable[..., RunningServer],
    script: Script,
    controlled_plugin: tuple[str, ControlledPlugin],
) -> None:
    script.delay_before_first = 30
    server = gateway_factory(CONTROLLED_CONFIG, plugins=[controlled_plugin])

    def call() -> None:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                server.base_url + "/chat/completions",
                json={"model": "ctl-model", "messages": MESSAGES},
                timeout=0.5,
            )

    call()
    _wait_for(lambda: len(script.cancelled) == 1, "the provider call to be cancelled")
    assert script.completed == []


def test_shutdown_ends_open_streams_with_an_error_frame(
    gateway_factory: Callable[..., RunningServer],
    script: Script,
    controlled_plugin: tuple[str, ControlledPlugin],
) -> None:
    script.chunks, script.chunk_delay = 10_000, 0.05
    settings = ServerSettings(graceful_timeout=Duration(0.5))
    server = gateway_factory(CONTROLLED_CONFIG, plugins=[controlled_plugin], settings=settings)
    client = openai.OpenAI(api_key="x", base_url=server.base_url, max_retries=0)
    stream = client.chat.completions.create(model="ctl-model", messages=MESSAGES, stream=True)
    received: list[str] = []
    stopper = threading.Thread(target=server.stop)
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
            if len(received) == 3:
                stopper.start()
    stopper.join(30)
    assert len(received) >= 3
    assert info.value.code == "server_shutdown"
    assert not server.thread.is_alive()


def test_shutdown_lets_short_streams_finish(
    gateway_factory: Callable[..., RunningServer],
    script: Script,
    controlled_plugin: tuple[str, ControlledPlugin],
) -> None:
    script.chunks, script.chunk_delay = 10, 0.05
    settings = ServerSettings(graceful_timeout=Duration(10))
    server = gateway_factory(CONTROLLED_CONFIG, plugins=[controlled_plugin], settings=settings)
    with (
        httpx.Client() as client,
        client.stream(
            "POST",
            server.base_url + "/chat/completions",
            json={"model": "ctl-model", "messages": MESSAGES, "stream": True},
        ) as response,
    ):
        lines = response.iter_lines()
        first = next(lines)
        stopper = threading.Thread(target=server.stop)
        stopper.start()
        rest = [line for line in lines if line]
    stopper.join(30)
    assert first.startswith("data: ")
    assert rest[-1] == "data: [DONE]"
    assert len(rest) == script.chunks  # nine more chunks and [DONE]
    assert script.cancelled == []


def test_readyz_reports_draining(
    gateway_factory: Callable[..., RunningServer],
    script: Script,
    controlled_plugin: tuple[str, ControlledPlugin],
) -> None:
    server = gateway_factory(CONTROLLED_CONFIG, plugins=[controlled_plugin])
    assert httpx.get(server.url + "/readyz").status_code == 200
    server.gateway.begin_drain()
    response = httpx.get(server.url + "/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "draining"}
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}


def test_internal_errors_never_show_a_traceback(
    gateway_factory: Callable[..., RunningServer],
    script: Script,
    controlled_plugin: tuple[str, ControlledPlugin],
    caplog: pytest.LogCaptureFixture,
) -> None:
    script.fail_with = RuntimeError("secret internal detail")
    server = gateway_factory(CONTROLLED_CONFIG, plugins=[controlled_plugin])
    client = openai.OpenAI(api_key="x", base_url=server.base_url, max_retries=0)
    with (
        caplog.at_level(logging.ERROR, logger="sluiceway.request"),
        pytest.raises(openai.InternalServerError) as info,
    ):
        client.chat.completions.create(model="ctl-model", messages=MESSAGES)
    request_id = info.value.response.headers["x-request-id"]
    assert info.value.status_code == 500
    assert info.value.code == "internal_error"
    assert request_id in info.value.message
    assert "secret internal detail" not in info.value.response.text
    assert "Traceback" not in info.value.response.text
    logged = [r for r in caplog.records if request_id in r.getMessage()]
    assert logged and logged[0].exc_info is not None


def test_a_stream_that_fails_after_starting_ends_with_an_error_frame(
    gateway_factory: Callable[..., RunningServer],
    script: Script,
    controlled_plugin: tuple[str, ControlledPlugin],
) -> None:
    import sluiceway

    script.chunks, script.fail_after = 5, 2
    script.fail_with = sluiceway.UpstreamError("the upstream went away")
    server = gateway_factory(CONTROLLED_CONFIG, plugins=[controlled_plugin])
    client = openai.OpenAI(api_key="x", base_url=server.base_url, max_retries=0)
    received: list[str] = []
    with pytest.raises(openai.APIError) as info:
        for chunk in client.chat.completions.create(
            model="ctl-model", messages=MESSAGES, stream=True
        ):
            received.append(chunk.choices[0].delta.content or "")
    assert received == ["part0 ", "part1 "]
    assert info.value.code == "upstream_error"
    assert "the upstream went away" in info.value.message


def test_a_stream_that_fails_before_starting_gets_an_http_status(
    gateway_factory: Callable[..., RunningServer],
    script: Script,
    controlled_plugin: tuple[str, ControlledPlugin],
) -> None:
    import sluiceway

    script.fail_after = 0
    script.fail_with = sluiceway.RateLimited("slow down", retry_after=2)
    server = gateway_factory(CONTROLLED_CONFIG, plugins=[controlled_plugin])
    client = openai.OpenAI(api_key="x", base_url=server.base_url, max_retries=0)
    with pytest.raises(openai.RateLimitError) as info:
        list(client.chat.completions.create(model="ctl-model", messages=MESSAGES, stream=True))
    assert info.value.response.headers["retry-after"] == "2"
    assert info.value.response.headers["retry-after-ms"] == "2000"


@pytest.mark.parametrize(
    ("incoming", "kept"),
    [("abc-123.DEF:9_x", True), ("has spaces in it", False), ("x" * 200, False)],
)
def test_request_ids(
    gateway_factory: Callable[..., RunningServer],
    controlled_plugin: tuple[str, ControlledPlugin],
    incoming: str,
    kept: bool,
) -> None:
    server = gateway_factory(CONTROLLED_CONFIG, plugins=[controlled_plugin])
    response = httpx.get(server.base_url + "/models", headers={"x-request-id": incoming})
    assert (response.headers["x-request-id"] == incoming) is kept
    error = httpx.get(server.base_url + "/nowhere")
    assert error.headers["x-request-id"].startswith("req_")


async def test_many_concurrent_disconnects_leave_nothing_behind(
    gateway_factory: Callable[..., RunningServer],
    script: Script,
    controlled_plugin: tuple[str, ControlledPlugin],
) -> None:
    script.delay_before_first = 0.05
    script.chunks, script.chunk_delay = 1000, 0.01
    server = gateway_factory(CONTROLLED_CONFIG, plugins=[controlled_plugin])
    body = {"model": "ctl-model", "messages": MESSAGES, "stream": True}
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=200)) as client:

        async def hang_up() -> None:
            async with client.stream(
                "POST", server.base_url + "/chat/completions", json=body
            ) as response:
                async for _ in response.aiter_lines():
                    break

        await asyncio.gather(*(hang_up() for _ in range(100)))
    await asyncio.to_thread(
        _wait_for, lambda: not server.gateway.inflight, "every request to finish"
    )
    assert len(script.cancelled) == 100


def _raw_request(port: int, head: bytes, body: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(head + body)
    return sock


def test_a_body_that_never_finishes_gets_408(
    gateway_factory: Callable[..., RunningServer], controlled_plugin: tuple[str, ControlledPlugin]
) -> None:
    config = {**CONTROLLED_CONFIG, "gateway": {"body_timeout": "300ms"}}
    server = gateway_factory(config, plugins=[controlled_plugin])
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: 1000\r\n\r\n"
    )
    with _raw_request(server.port, head, b'{"model": "ctl-model", ') as sock:
        sock.settimeout(10)
        reply = b""
        while b"request_timeout" not in reply:
            received = sock.recv(65536)
            if not received:
                break
            reply += received
    status_line, _, rest = reply.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 408 "
    assert b'"code":"request_timeout"' in rest
    _wait_for(lambda: not server.gateway.inflight, "the request to end")


def test_a_client_that_hangs_up_mid_upload_is_not_an_error(
    gateway_factory: Callable[..., RunningServer],
    controlled_plugin: tuple[str, ControlledPlugin],
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = gateway_factory(CONTROLLED_CONFIG, plugins=[controlled_plugin])
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: 1000\r\n\r\n"
    )
    with caplog.at_level(logging.DEBUG, logger="sluiceway"):
        sock = _raw_request(server.port, head, b'{"model": ')
        _wait_for(lambda: bool(server.gateway.inflight), "the request to arrive")
        sock.close()
        _wait_for(lambda: not server.gateway.inflight, "the request to end")
    request_records = [r for r in caplog.records if r.name == "sluiceway.request"]
    assert [r.levelno for r in request_records] == [logging.DEBUG]
    assert "client disconnected" in request_records[0].getMessage()
