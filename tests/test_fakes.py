"""FakeOpenAI does what each fault says, seen through plain HTTP clients (no gateway)."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import httpx
import pytest

from sluiceway.testing import wait_until
from sluiceway.testing.fakes import (
    ChunkDelay,
    Close,
    Comments,
    Delay,
    ErrorEvent,
    FakeOpenAI,
    Garbage,
    Hang,
    NoDone,
    Reset,
    Stall,
    Status,
)

StartFake = Callable[..., FakeOpenAI]


def _body(text: str = "hello there", *, stream: bool = False, **extra: Any) -> dict[str, Any]:
    return {"model": "m-1", "messages": [{"role": "user", "content": text}], "stream": stream,
            **extra}


def _events(raw: bytes) -> list[Any]:
    """The ``data:`` payloads of an SSE body, JSON-decoded where they are JSON."""
    events: list[Any] = []
    for line in raw.split(b"\n"):
        if line.startswith(b"data: "):
            payload = line[6:]
            events.append("[DONE]" if payload == b"[DONE]" else json.loads(payload))
    return events


async def _stream(
    client: httpx.AsyncClient, fake: FakeOpenAI, received: list[bytes], **extra: Any
) -> None:
    """Stream a chat request, appending every raw piece to ``received``."""
    async with client.stream("POST", fake.url + "/chat/completions",
                             json=_body(stream=True, **extra)) as response:
        assert response.status_code == 200
        async for piece in response.aiter_raw():
            received.append(piece)


# -- normal answers -------------------------------------------------------------


async def test_chat_echoes_the_last_user_message_under_the_requested_model(
    fake_openai: StartFake,
) -> None:
    fake = fake_openai()
    async with httpx.AsyncClient() as client:
        response = await client.post(fake.url + "/chat/completions", json=_body(),
                                     headers={"Authorization": "Bearer sk-1"})
    assert response.status_code == 200
    data = response.json()
    assert data["object"] == "chat.completion"
    assert data["model"] == "m-1"
    assert data["choices"][0]["message"] == {"role": "assistant", "content": "echo: hello there"}
    assert data["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}
    (seen,) = fake.requests
    assert (seen.method, seen.path) == ("POST", "/v1/chat/completions")
    assert seen.headers["authorization"] == "Bearer sk-1"
    assert seen.body == _body()
    assert isinstance(seen.time, float)  # arrival, on the monotonic clock


async def test_stream_sends_chunks_finish_usage_and_done(fake_openai: StartFake) -> None:
    fake = fake_openai(chunks=3)
    received: list[bytes] = []
    async with httpx.AsyncClient() as client:
        await _stream(client, fake, received, stream_options={"include_usage": True})
    events = _events(b"".join(received))
    assert events[-1] == "[DONE]"
    content, finish, usage = events[:3], events[3], events[4]
    assert "".join(e["choices"][0]["delta"]["content"] for e in content) == "echo: hello there"
    assert content[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(e["model"] == "m-1" and e["object"] == "chat.completion.chunk" for e in events[:-1])
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert usage["choices"] == [] and usage["usage"]["total_tokens"] == 5
    assert len(events) == 6


async def test_stream_without_include_usage_has_no_usage_chunk(fake_openai: StartFake) -> None:
    fake = fake_openai(chunks=2, reply="ab")
    received: list[bytes] = []
    async with httpx.AsyncClient() as client:
        await _stream(client, fake, received)
    events = _events(b"".join(received))
    assert [e if e == "[DONE]" else e["choices"][0]["delta"].get("content") for e in events] == [
        "a", "b", None, "[DONE]"]


async def test_models_are_listed(fake_openai: StartFake) -> None:
    fake = fake_openai(model_ids=["a", "b"])
    async with httpx.AsyncClient() as client:
        response = await client.get(fake.url + "/models")
    assert [m["id"] for m in response.json()["data"]] == ["a", "b"]


def test_keep_alive_serves_two_requests_on_one_connection(fake_openai: StartFake) -> None:
    fake = fake_openai()
    body = json.dumps(_body()).encode()
    request = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json"
               b"\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    with socket.create_connection(("127.0.0.1", fake.port), timeout=5) as sock:
        sock.sendall(request + request)
        received = b""
        while received.count(b"HTTP/1.1 200 OK") < 2 or not received.endswith(b"}"):
            received += sock.recv(65536)
    assert received.count(b"echo: hello there") == 2
    assert len(fake.requests) == 2


def test_a_sync_client_works_too(fake_openai: StartFake) -> None:
    fake = fake_openai()
    with httpx.Client() as client:
        assert client.post(fake.url + "/chat/completions", json=_body()).status_code == 200


# -- scripting ------------------------------------------------------------------


async def test_script_is_consumed_in_order_then_always_then_reset(fake_openai: StartFake) -> None:
    fake = fake_openai()
    fake.script(Status(500), Status(503))
    fake.always(Status(418))
    async with httpx.AsyncClient() as client:

        async def status() -> int:
            response = await client.post(fake.url + "/chat/completions", json=_body())
            return response.status_code

        assert [await status() for _ in range(4)] == [500, 503, 418, 418]
        fake.reset()
        assert await status() == 200
        # /v1/models does not consume scripted faults.
        fake.script(Status(500))
        assert (await client.get(fake.url + "/models")).status_code == 200
        assert await status() == 500


async def test_status_with_headers_default_body_and_raw_body(fake_openai: StartFake) -> None:
    fake = fake_openai()
    fake.script(Status(429, headers={"retry-after": "2", "retry-after-ms": "1500"}),
                Status(502, body=b"<html>bad gateway</html>"),
                Status(400, body={"error": {"code": "context_length_exceeded"}}))
    async with httpx.AsyncClient() as client:
        url = fake.url + "/chat/completions"
        limited = await client.post(url, json=_body())
        html = await client.post(url, json=_body())
        custom = await client.post(url, json=_body())
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "2" and limited.headers["retry-after-ms"] == "1500"
    assert limited.json()["error"]["type"] == "rate_limit_error"
    assert (html.status_code, html.content) == (502, b"<html>bad gateway</html>")
    assert custom.json() == {"error": {"code": "context_length_exceeded"}}


async def test_a_tuple_combines_faults_for_one_request(fake_openai: StartFake) -> None:
    fake = fake_openai()
    fake.script((Comments(), NoDone()))
    received: list[bytes] = []
    async with httpx.AsyncClient() as client:
        await _stream(client, fake, received)
    raw = b"".join(received)
    assert b": keep-alive" in raw and b"[DONE]" not in raw


# -- timing faults --------------------------------------------------------------


@pytest.mark.parametrize(("latency", "delay"), [(30.0, 0.0), (0.0, 30.0)])
async def test_delay_and_latency_hold_the_headers_back(
    fake_openai: StartFake, latency: float, delay: float
) -> None:
    # Shown by a client whose read timeout is shorter than the hold-back: it times
    # out waiting for the headers, while the same client gets an answer without it.
    fake = fake_openai(latency=latency)
    if delay:
        fake.script(Delay(delay))
    async with httpx.AsyncClient(timeout=httpx.Timeout(5.0, read=0.2)) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(fake.url + "/chat/completions", json=_body())
    plain = fake_openai()
    async with httpx.AsyncClient(timeout=httpx.Timeout(5.0, read=0.2)) as client:
        assert (await client.post(plain.url + "/chat/completions", json=_body())).status_code == 200


async def test_hang_never_answers_and_sees_the_client_leave(fake_openai: StartFake) -> None:
    fake = fake_openai()
    fake.script(Hang())
    async with httpx.AsyncClient(timeout=0.3) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(fake.url + "/chat/completions", json=_body())
    assert await fake.wait_for(lambda: fake.disconnects == 1)
    assert fake.active == 0


async def test_chunk_delay_spaces_the_chunks(fake_openai: StartFake) -> None:
    fake = fake_openai(chunks=2, reply="ab")
    fake.script(ChunkDelay(0.1))
    arrivals: list[float] = []
    async with aiohttp.ClientSession() as session, session.post(
        fake.url + "/chat/completions", json=_body(stream=True)
    ) as response:
        async for line in response.content:
            if line.startswith(b"data: "):
                arrivals.append(time.monotonic())
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert len(arrivals) == 4  # two chunks, finish, [DONE]
    assert min(gaps[:2]) >= 0.08


async def test_stall_goes_silent_after_n_chunks(fake_openai: StartFake) -> None:
    fake = fake_openai()
    fake.script(Stall(after_chunks=2, seconds=5))
    received: list[bytes] = []
    timeout = httpx.Timeout(5.0, read=0.3)
    async with httpx.AsyncClient(timeout=timeout) as client:
        with pytest.raises(httpx.ReadTimeout):
            await _stream(client, fake, received)
    assert len(_events(b"".join(received))) == 2
    assert await fake.wait_for(lambda: fake.disconnects == 1)


async def test_a_short_stall_then_goes_on(fake_openai: StartFake) -> None:
    fake = fake_openai()
    fake.script(Stall(after_chunks=1, seconds=0.2))
    received: list[bytes] = []
    async with httpx.AsyncClient() as client:
        await _stream(client, fake, received)
    assert _events(b"".join(received))[-1] == "[DONE]"
    # The stall is real: a client that will not wait that long times out after one chunk.
    fake.script(Stall(after_chunks=1, seconds=30))
    cut: list[bytes] = []
    async with httpx.AsyncClient(timeout=httpx.Timeout(5.0, read=0.2)) as client:
        with pytest.raises(httpx.ReadTimeout):
            await _stream(client, fake, cut)
    assert len(_events(b"".join(cut))) == 1


# -- broken connections ---------------------------------------------------------


async def test_reset_mid_stream_is_a_read_error_after_n_chunks(fake_openai: StartFake) -> None:
    fake = fake_openai()
    fake.script(Reset(after_chunks=2))
    received: list[bytes] = []
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ReadError):
            await _stream(client, fake, received)
    assert len(_events(b"".join(received))) == 2
    assert fake.disconnects == 0  # the server hung up, not the client


async def test_reset_is_seen_by_aiohttp_as_connection_reset(fake_openai: StartFake) -> None:
    fake = fake_openai()
    fake.script(Reset(after_chunks=1))
    async with aiohttp.ClientSession() as session, session.post(
        fake.url + "/chat/completions", json=_body(stream=True)
    ) as response:
        with pytest.raises(aiohttp.ClientPayloadError) as caught:
            await response.read()
    assert "ConnectionResetError" in str(caught.value)


@pytest.mark.parametrize("stream", [False, True])
async def test_reset_before_any_answer(fake_openai: StartFake, stream: bool) -> None:
    fake = fake_openai()
    fake.script(Reset(after_chunks=None) if stream else Reset())
    async with httpx.AsyncClient() as client:
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            await client.post(fake.url + "/chat/completions", json=_body(stream=stream))


async def test_close_mid_stream_is_a_protocol_error(fake_openai: StartFake) -> None:
    fake = fake_openai()
    fake.script(Close(after_chunks=2))
    received: list[bytes] = []
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
            await _stream(client, fake, received)
    assert len(_events(b"".join(received))) == 2


async def test_close_mid_body_truncates_a_completion(fake_openai: StartFake) -> None:
    fake = fake_openai()
    fake.script(Close())
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post(fake.url + "/chat/completions", json=_body())


# -- malformed answers ----------------------------------------------------------


async def test_no_done_ends_cleanly_without_done(fake_openai: StartFake) -> None:
    fake = fake_openai()
    fake.script(NoDone())
    received: list[bytes] = []
    async with httpx.AsyncClient() as client:
        await _stream(client, fake, received)
    events = _events(b"".join(received))
    assert "[DONE]" not in events
    assert events[-1]["choices"][0]["finish_reason"] == "stop"


async def test_error_event_mid_stream(fake_openai: StartFake) -> None:
    fake = fake_openai()
    fake.script(ErrorEvent(after_chunks=1, message="overloaded", code="model_overloaded"),
                ErrorEvent())
    received: list[bytes] = []
    async with httpx.AsyncClient() as client:
        await _stream(client, fake, received)
        completion = await client.post(fake.url + "/chat/completions", json=_body())
    events = _events(b"".join(received))
    assert len(events) == 2
    assert events[1]["error"]["message"] == "overloaded"
    assert events[1]["error"]["code"] == "model_overloaded"
    assert completion.status_code == 500 and "error" in completion.json()


async def test_garbage_instead_of_json_or_sse(fake_openai: StartFake) -> None:
    fake = fake_openai()
    fake.script(Garbage(), Garbage(b"data: {not json\n\n"))
    received: list[bytes] = []
    async with httpx.AsyncClient() as client:
        response = await client.post(fake.url + "/chat/completions", json=_body())
        await _stream(client, fake, received)
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()
    assert b"".join(received) == b"data: {not json\n\n"


async def test_comments_are_interleaved(fake_openai: StartFake) -> None:
    fake = fake_openai(chunks=2)
    fake.script(Comments())
    received: list[bytes] = []
    async with httpx.AsyncClient() as client:
        await _stream(client, fake, received)
    raw = b"".join(received)
    assert raw.count(b": keep-alive\n\n") == 3  # before each of 2 chunks and the finish
    assert _events(raw)[-1] == "[DONE]"


# -- observing the client -------------------------------------------------------


async def test_a_client_leaving_mid_stream_is_counted_at_once(fake_openai: StartFake) -> None:
    fake = fake_openai(chunks=20)
    fake.script(ChunkDelay(0.2))
    async with aiohttp.ClientSession() as session:
        response = await session.post(fake.url + "/chat/completions", json=_body(stream=True))
        await response.content.readline()
        assert fake.active == 1
        response.close()
        # Bounded so a fake that never notices fails instead of hanging; 20 chunks
        # 0.2 s apart would take 4 s to finish on their own.
        assert await fake.wait_for(lambda: fake.disconnects == 1, within=3.0)
    assert await fake.wait_for(lambda: fake.active == 0)


async def test_complete_answers_are_not_disconnects(fake_openai: StartFake) -> None:
    fake = fake_openai()
    async with httpx.AsyncClient() as client:
        for stream in (False, True):
            await client.post(fake.url + "/chat/completions", json=_body(stream=stream))
    await asyncio.sleep(0.05)
    assert fake.disconnects == 0


async def test_active_and_max_active_count_requests_in_flight(fake_openai: StartFake) -> None:
    fake = fake_openai()
    fake.always(Delay(0.2))
    async with httpx.AsyncClient() as client:
        responses = await asyncio.gather(*(
            client.post(fake.url + "/chat/completions", json=_body()) for _ in range(3)
        ))
    assert [r.status_code for r in responses] == [200] * 3
    assert fake.max_active == 3
    # A request stops counting just after its last byte is written.
    assert await fake.wait_for(lambda: fake.active == 0)


def test_stop_drops_hanging_connections(fake_openai: StartFake) -> None:
    fake = fake_openai()
    fake.always(Hang())
    with socket.create_connection(("127.0.0.1", fake.port), timeout=5) as sock:
        body = json.dumps(_body()).encode()
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\ncontent-length: "
                     + str(len(body)).encode() + b"\r\n\r\n" + body)
        assert wait_until(lambda: fake.active == 1, within=2)
        fake.stop()
        assert sock.recv(100) == b""
