"""SharedPool against a real redis-server: exact across two "instances" in one
process, a cancelled wait leaks no lease, and Redis going away falls back to a
local pool ("open") or refuses ("closed") with the slots still counted right."""

from __future__ import annotations

import asyncio

import pytest

from sluiceway import ServiceUnavailable
from sluiceway.config.settings import StateSettings
from sluiceway.state import SharedState
from sluiceway.testing import RedisServer


def _state(url: str, policy: str = "open") -> SharedState:
    return SharedState(StateSettings(backend="redis", url=url, lease_ttl=5.0,  # type: ignore[arg-type]
                                     on_storage_error=policy))  # type: ignore[arg-type]


async def test_two_instances_share_the_slots_and_a_cancelled_wait_leaks_none(
    redis_server: RedisServer,
) -> None:
    first, second = _state(redis_server.url), _state(redis_server.url)
    a = first.pool("p", "pool p", concurrency=2, buffer=10, queue_timeout=0.2)
    b = second.pool("p", "pool p", concurrency=2, buffer=10, queue_timeout=0.2)
    await a.acquire()
    await b.acquire()
    with pytest.raises(ServiceUnavailable):
        await b.acquire()  # full across both
    waiter = asyncio.ensure_future(a.acquire(5.0))
    await asyncio.sleep(0.1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    a.release()
    await asyncio.sleep(0.05)  # the lease goes in the background
    await b.acquire()  # the freed slot, and no leaked one
    assert (a.active, b.active) == (0, 2)
    for pool in (a, b):
        await pool.aclose()
    await first.connection.aclose()
    await second.connection.aclose()


async def test_redis_down_falls_back_open_or_refuses_closed(redis_server: RedisServer) -> None:
    opened, closed = _state(redis_server.url), _state(redis_server.url, "closed")
    pool = opened.pool("q", "pool q", concurrency=1, buffer=10, queue_timeout=0.2)
    strict = closed.pool("r", "pool r", concurrency=1, buffer=10, queue_timeout=0.2)
    await pool.acquire()
    redis_server.kill()
    # Open: a local pool of the same size takes over (per process until Redis is back).
    await pool.acquire()
    assert (pool.active, pool.fallback_held) == (2, 1)
    with pytest.raises(ServiceUnavailable):
        await pool.acquire()
    pool.release()
    pool.release()
    assert (pool.active, pool.fallback_held) == (0, 0)
    # Closed: refused with the storage's own 503.
    with pytest.raises(ServiceUnavailable) as refused:
        await strict.acquire()
    assert refused.value.code == "state_unavailable"
    await pool.aclose()
    await strict.aclose()
    pool.release()  # after close: ignored, never negative
    assert pool.active == 0
