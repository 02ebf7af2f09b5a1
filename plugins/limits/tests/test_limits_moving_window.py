"""The moving window (in memory with an injected clock, and in a real Redis), and
``RateLimit`` around an application of one's own."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sluiceway_limits import (
    Limiter,
    MovingWindow,
    RateLimit,
    RedisMovingWindow,
    RedisStore,
    SlidingWindowCounter,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sluiceway.testing import RedisServer, RunningServer

Serve = Callable[..., RunningServer]
BODY: dict[str, Any] = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_limits_moving_window_holds_across_a_window_boundary() -> None:
    clock = Clock(1009.0)  # one second before a 10 s window boundary
    moving, counter = MovingWindow(clock), SlidingWindowCounter(clock)
    assert isinstance(moving, Limiter)
    for limiter in (moving, counter):
        assert all([(await limiter.reserve("k", 1, 10, 10)).allowed for _ in range(10)])
    clock.now = 1010.5  # just after the boundary: the same ten are 1.5 s old
    # The counter weighs the previous bucket by 95 %: it lets no more through
    # either, but it forgets them gradually; the window forgets each at 10 s exactly.
    refused = await moving.reserve("k", 1, 10, 10)
    assert not refused.allowed and refused.remaining == 0
    assert refused.retry_after == pytest.approx(8.5, abs=0.01)
    assert refused.reset_after == pytest.approx(8.5, abs=0.01)
    clock.now = 1013.0
    # 30 % into the new bucket the counter already has room for 3 more ...
    assert [(await counter.reserve("k", 1, 10, 10)).allowed for _ in range(4)] == [
        True, True, True, False,
    ]
    # ... the moving window for none: all ten are still inside the last 10 s.
    assert not (await moving.reserve("k", 1, 10, 10)).allowed
    clock.now = 1019.0  # ten seconds after them: all gone at once
    seen = [await moving.reserve("k", 1, 10, 10) for _ in range(11)]
    assert [d.allowed for d in seen] == [True] * 10 + [False]
    assert [d.remaining for d in seen[:3]] == [9, 8, 7]


async def test_limits_moving_window_gives_back_and_forgets_idle_keys() -> None:
    clock = Clock()
    moving = MovingWindow(clock)
    await moving.reserve("k", 3, 10, 60)
    clock.now += 1
    await moving.reserve("k", 4, 10, 60)
    await moving.adjust("k", -5, 60)  # from the newest: 4 of them, then 1 of the 3
    assert (await moving.reserve("k", 0, 10, 60)).remaining == 8
    await moving.adjust("k", 2, 60)
    assert (await moving.reserve("k", 0, 10, 60)).remaining == 6
    too_big = await moving.reserve("k", 11, 10, 60)
    assert not too_big.allowed and math.isinf(too_big.retry_after)
    clock.now += 61
    assert (await moving.reserve("k", 0, 10, 60)).remaining == 10
    assert len(moving) == 0  # nothing held: the key is gone
    await moving.adjust("gone", -1, 60)
    assert len(moving) == 0


async def test_limits_moving_window_in_redis_matches_memory(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url, key_prefix="mw-test:")
    try:
        redis_window = RedisMovingWindow(store)
        assert isinstance(redis_window, Limiter)
        memory_window = MovingWindow()
        script: list[tuple[str, int, int]] = [
            *[("reserve", 1, 3)] * 4,
            ("adjust", -1, 0),
            ("reserve", 1, 3),
            ("reserve", 0, 3),
            ("reserve", 5, 3),
            ("adjust", 2, 0),
            ("reserve", 0, 5),
            ("adjust", -10, 0),
            ("reserve", 0, 5),
        ]
        for op, amount, limit in script:
            if op == "adjust":
                await redis_window.adjust("rpm:k", amount, 3600)
                await memory_window.adjust("rpm:k", amount, 3600)
                continue
            ours = await redis_window.reserve("rpm:k", amount, limit, 3600)
            theirs = await memory_window.reserve("rpm:k", amount, limit, 3600)
            assert (ours.allowed, ours.remaining) == (theirs.allowed, theirs.remaining)
            assert math.isinf(ours.retry_after) == math.isinf(theirs.retry_after)
            if math.isfinite(ours.retry_after):
                assert ours.retry_after == pytest.approx(theirs.retry_after, abs=1.0)
            assert ours.reset_after == pytest.approx(theirs.reset_after, abs=1.0)
        # Everything was given back: the set is empty and has expired.
        assert await store.client().zcard("mw-test:{mw:rpm:k}") == 0

        # Entries leave the window one by one, on Redis's clock.
        assert [(await redis_window.reserve("rpm:w", 1, 2, 0.5)).allowed
                for _ in range(3)] == [True, True, False]
        refused = await redis_window.reserve("rpm:w", 1, 2, 0.5)
        assert 0 < refused.retry_after <= 0.51
        await asyncio.sleep(refused.retry_after)
        assert (await redis_window.reserve("rpm:w", 1, 2, 0.5)).allowed
    finally:
        await store.aclose()


def own_app() -> Starlette:
    async def hello(request: Request) -> JSONResponse:
        return JSONResponse({"hello": request.headers.get("x-user", "anyone")})

    return Starlette(routes=[Route("/hello", hello), Route("/health", hello)])


def by_user(scope: dict[str, Any]) -> str | None:
    if scope["path"] == "/health":
        return None  # never limited
    headers = dict(scope["headers"])
    return headers.get(b"x-user", b"anonymous").decode()


@pytest.mark.parametrize("strategy", ["sliding-window-counter", "moving-window"])
def test_limits_rate_limit_wraps_an_app_of_ones_own(serve_asgi: Serve, strategy: Any) -> None:
    server = serve_asgi(RateLimit(own_app(), rpm=2, window=3600, key=by_user,
                                  strategy=strategy))
    with httpx.Client(base_url=server.url) as client:
        ann = [client.get("/hello", headers={"x-user": "ann"}) for _ in range(3)]
        assert [r.status_code for r in ann] == [200, 200, 429]
        assert ann[0].json() == {"hello": "ann"}
        assert ann[0].headers["x-ratelimit-limit-requests"] == "2"
        assert [r.headers["x-ratelimit-remaining-requests"] for r in ann] == ["1", "0", "0"]
        error = ann[2].json()["error"]
        assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limit_exceeded")
        assert 0 < int(ann[2].headers["retry-after"]) <= 120
        assert int(ann[2].headers["retry-after-ms"]) > 0
        # Another caller has its own allowance; unkeyed routes have none.
        assert client.get("/hello", headers={"x-user": "bob"}).status_code == 200
        assert all(client.get("/health").status_code == 200 for _ in range(5))
        assert "x-ratelimit-limit-requests" not in client.get("/health").headers


def test_limits_rate_limit_shares_redis_between_two_apps(
    serve_asgi: Serve, redis_server: RedisServer
) -> None:
    servers = [
        serve_asgi(RateLimit(own_app(), rpm=5, window=3600, strategy="moving-window",
                             storage=redis_server.url))
        for _ in range(2)
    ]

    async def burst() -> list[int]:
        async with httpx.AsyncClient() as client:
            responses = await asyncio.gather(*(
                client.get(server.url + "/hello") for _ in range(6) for server in servers
            ))
        return [r.status_code for r in responses]

    statuses = asyncio.run(burst())
    assert sorted(statuses) == [200] * 5 + [429] * 7
