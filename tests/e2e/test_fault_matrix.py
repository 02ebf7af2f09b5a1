"""Each upstream fault, from a real upstream over sockets, and what the client sees.

The upstream is sluiceway.testing.fakes.FakeOpenAI (a raw asyncio server that can reset
or cut a connection mid-body); the gateway runs the `openai` provider against
it; the client is the real OpenAI SDK with its own retries off, so every retry
counted at the fake is the gateway's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from sluiceway.testing import RunningServer
from sluiceway.testing.fakes import (
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

MESSAGES = [{"role": "user", "content": "ping"}]
Factory = Callable[..., RunningServer]


def _provider(fake: FakeOpenAI, name: str = "up", **policy: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": "openai",
        "base_url": fake.url,
        "models": ["m"],
        "read_timeout": "2s",
        **policy,
    }


def _gateway(gateway_factory: Factory, *providers: dict[str, Any], **config: Any) -> RunningServer:
    return gateway_factory(
        {"gateway": {"plugins": ["openai"]}, "providers": list(providers), **config}
    )


def _client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(api_key="x", base_url=server.base_url, max_retries=0, timeout=30)


def _chats(fake: FakeOpenAI) -> int:
    return sum(1 for r in fake.requests if r.path.endswith("/chat/completions"))


# --- before anything is sent to the client: retried or failed with a status -------


@pytest.mark.parametrize(
    ("faults", "stream", "calls", "outcome"),
    [
        ((Status(500),), False, 2, 200),
        ((Status(502),), True, 2, 200),
        ((Status(503), Status(503), Status(503)), False, 3, 502),
        ((Status(429, headers={"retry-after": "0.2"}),), False, 2, 200),
        ((Reset(None),), True, 2, 200),
        ((Reset(),), False, 2, 200),
        ((Garbage(b"<html>oops</html>"),), False, 2, 200),
        ((Garbage(b"<html>oops</html>"),) * 3, False, 3, 502),
        (
            (
                Status(
                    400,
                    body={
                        "error": {
                            "message": "bad",
                            "type": "invalid_request_error",
                            "code": "invalid_value",
                            "param": "top_p",
                        }
                    },
                ),
            ),
            False,
            1,
            400,
        ),
    ],
)
def test_failures_before_the_first_byte(
    gateway_factory: Factory,
    fake_openai: Callable[..., FakeOpenAI],
    faults: tuple[Any, ...],
    stream: bool,
    calls: int,
    outcome: int,
) -> None:
    fake = fake_openai()
    fake.script(*faults)
    server = _gateway(gateway_factory, _provider(fake))
    response = httpx.post(
        server.base_url + "/chat/completions",
        timeout=30,
        json={"model": "m", "messages": MESSAGES, "stream": stream},
    )
    assert response.status_code == outcome, response.text
    assert _chats(fake) == calls
    if outcome == 200:
        assert response.headers["x-sluiceway-attempts"] == str(calls)
    else:
        body = response.json()["error"]
        assert set(body) == {"message", "type", "code", "param"}
        assert "up" in body["message"] or outcome == 400


def test_a_long_retry_after_is_handed_to_the_client(
    gateway_factory: Factory,
    fake_openai: Callable[..., FakeOpenAI],
) -> None:
    fake = fake_openai()
    fake.script(Status(429, headers={"retry-after": "60"}))
    server = _gateway(gateway_factory, _provider(fake))
    with _client(server) as client, pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="m", messages=MESSAGES)
    assert _chats(fake) == 1
    assert info.value.response.headers["retry-after"] == "60"


def test_the_deadline_turns_a_slow_upstream_into_504(
    gateway_factory: Factory,
    fake_openai: Callable[..., FakeOpenAI],
) -> None:
    fake = fake_openai()
    fake.always(Delay(30))
    server = _gateway(gateway_factory, _provider(fake, timeout="0.5s", read_timeout="60s"))
    with _client(server) as client, pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="m", messages=MESSAGES)
    assert info.value.status_code == 504  # the fake would have answered after 30 s
    assert info.value.code == "deadline_exceeded"
    assert _chats(fake) == 1
    # The gateway let go of the upstream call at its deadline, long before the fake
    # would have answered (a bounded poll, so a leak fails instead of hanging).
    for _ in range(250):
        if fake.disconnects == 1:
            break
        time.sleep(0.02)
    assert fake.disconnects == 1


def test_a_refused_connection_is_502_naming_the_provider(gateway_factory: Factory) -> None:
    dead = {
        "name": "dead",
        "type": "openai",
        "base_url": "http://127.0.0.1:9/v1",
        "models": ["m"],
        "max_retries": 1,
    }
    server = _gateway(gateway_factory, dead)
    with _client(server) as client, pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="m", messages=MESSAGES)
    assert info.value.status_code == 502
    assert "dead" in info.value.message
    assert "127.0.0.1" not in info.value.message  # internal addresses stay in the log
    assert info.value.response.headers["x-sluiceway-attempts"] == "2"


def test_context_window_errors_fall_over_to_a_bigger_model(
    gateway_factory: Factory,
    fake_openai: Callable[..., FakeOpenAI],
) -> None:
    small, big = fake_openai(), fake_openai()
    small.always(
        Status(
            400,
            body={
                "error": {
                    "message": "This model's maximum context length is 8192 tokens.",
                    "type": "invalid_request_error",
                    "code": "context_length_exceeded",
                    "param": None,
                }
            },
        )
    )
    server = _gateway(
        gateway_factory,
        _provider(small, "small"),
        {**_provider(big, "big"), "models": ["m-big"]},
        aliases=[{"name": "auto", "targets": ["small/m", "big/m-big"]}],
    )
    with _client(server) as client:
        raw = client.chat.completions.with_raw_response.create(model="auto", messages=MESSAGES)
    assert raw.headers["x-sluiceway-provider"] == "big"
    assert (_chats(small), _chats(big)) == (1, 1)


# --- after the first byte: never retried, always an error frame ---------------------


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        (Reset(after_chunks=2), "upstream_read_error"),
        (Close(after_chunks=2), "upstream_read_error"),
        (NoDone(), "upstream_stream_truncated"),
        (Stall(after_chunks=1, seconds=30), "upstream_timeout"),
        (ErrorEvent(after_chunks=1, message="model crashed", code="server_error"), None),
    ],
)
def test_failures_mid_stream_end_in_an_error_frame(
    gateway_factory: Factory,
    fake_openai: Callable[..., FakeOpenAI],
    fault: Any,
    code: str | None,
) -> None:
    fake = fake_openai(chunks=5)
    fake.script(fault)
    server = _gateway(gateway_factory, _provider(fake, read_timeout="0.5s"))
    received: list[str] = []
    with _client(server) as client, pytest.raises(openai.APIError) as info:
        for chunk in client.chat.completions.create(model="m", messages=MESSAGES, stream=True):
            received.extend(c.delta.content or "" for c in chunk.choices)
    assert received  # the stream had started: no retry was possible
    assert _chats(fake) == 1
    if code is not None:
        assert info.value.code == code


def test_sse_comments_and_keep_alives_are_tolerated(
    gateway_factory: Factory,
    fake_openai: Callable[..., FakeOpenAI],
) -> None:
    fake = fake_openai(chunks=4)
    fake.script(Comments())
    server = _gateway(gateway_factory, _provider(fake))
    with _client(server) as client:
        text = "".join(
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
            if c.choices
        )
    assert text == client_reply(fake)


def client_reply(fake: FakeOpenAI) -> str:
    with httpx.Client() as http:
        return str(
            http.post(
                fake.url + "/chat/completions", json={"model": "m", "messages": MESSAGES}
            ).json()["choices"][0]["message"]["content"]
        )


# --- isolation and disconnects ------------------------------------------------------


async def test_a_stalled_provider_never_delays_another(
    gateway_factory: Factory,
    fake_openai: Callable[..., FakeOpenAI],
) -> None:
    stuck, healthy = fake_openai(), fake_openai()
    stuck.always(Hang())
    server = _gateway(
        gateway_factory,
        {
            **_provider(
                stuck, "stuck", concurrency=4, buffer=0, drop_excess=True, read_timeout="30s"
            ),
            "models": ["slow"],
        },
        _provider(healthy, "healthy"),
    )
    async with httpx.AsyncClient(timeout=60) as client:
        body = {"model": "slow", "messages": MESSAGES}
        hung = [
            asyncio.create_task(client.post(server.base_url + "/chat/completions", json=body))
            for _ in range(4)
        ]
        await stuck.wait_for(lambda: stuck.active == 4, within=5)
        refused = await client.post(server.base_url + "/chat/completions", json=body)
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "busy"
        answers = await asyncio.gather(
            *(
                client.post(
                    server.base_url + "/chat/completions", json={"model": "m", "messages": MESSAGES}
                )
                for _ in range(20)
            )
        )
        assert [a.status_code for a in answers] == [200] * 20
        for task in hung:
            task.cancel()
        await asyncio.gather(*hung, return_exceptions=True)
    await stuck.wait_for(lambda: stuck.disconnects == 4, within=5)


async def test_a_client_hanging_up_cancels_the_upstream_and_frees_the_slot(
    gateway_factory: Factory,
    fake_openai: Callable[..., FakeOpenAI],
) -> None:
    fake = fake_openai(chunks=1000)
    fake.always(Stall(after_chunks=2, seconds=60))
    server = _gateway(gateway_factory, _provider(fake, concurrency=1, read_timeout="60s"))
    async with httpx.AsyncClient(timeout=30) as client:
        async with client.stream(
            "POST",
            server.base_url + "/chat/completions",
            json={
                "model": "m",
                "messages": MESSAGES,
                "stream": True,
            },
        ) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    break
    await fake.wait_for(lambda: fake.disconnects == 1, within=5)
    pool = server.gateway.router.resolve("m").deployments[0].pool
    for _ in range(100):
        if pool.active == 0:
            break
        await asyncio.sleep(0.02)
    assert pool.active == 0
    fake.reset()
    async with httpx.AsyncClient(timeout=30) as client:
        again = await client.post(
            server.base_url + "/chat/completions", json={"model": "m", "messages": MESSAGES}
        )
    assert again.status_code == 200  # the one slot was free again
