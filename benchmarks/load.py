"""A closed-loop load generator on aiohttp, for loopback targets only.

``concurrency`` workers each send a request, wait for the whole answer, and send
the next, until ``duration`` seconds or ``max_requests`` requests have passed.
Latency is measured per request; for streams, time to first byte (the first
body bytes) is measured too.

``open_loop`` is the other shape (scenario B): requests are sent at a fixed rate
whatever the answers do, each on its own task and connection if need be, and
latency is taken from the moment a request was due (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

__all__ = ["LoadResult", "OpenLoopResult", "closed_loop", "http_load", "open_loop",
           "percentile"]


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[index]


@dataclass
class LoadResult:
    requests: int = 0
    errors: int = 0
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)
    ttfbs: list[float] = field(default_factory=list)
    error_kinds: dict[str, int] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.elapsed if self.elapsed else 0.0

    def p(self, q: float) -> float:
        return percentile(self.latencies, q)

    def ttfb(self, q: float) -> float:
        return percentile(self.ttfbs, q)

    def summary(self) -> str:
        text = (f"{self.requests} ok, {self.errors} errors in {self.elapsed:.1f}s: "
                f"{self.rps:,.0f} req/s, p50 {self.p(50) * 1e3:.2f} ms, "
                f"p99 {self.p(99) * 1e3:.2f} ms")
        if self.ttfbs:
            text += f", ttfb p50 {self.ttfb(50) * 1e3:.2f} ms"
        if self.error_kinds:
            text += f" {self.error_kinds}"
        return text

    def mean(self) -> float:
        return statistics.fmean(self.latencies) if self.latencies else float("nan")


async def closed_loop(
    call: Callable[[], Awaitable[float | None]],
    *,
    concurrency: int,
    duration: float,
    max_requests: int | None = None,
) -> LoadResult:
    """Run ``call`` in a closed loop; it returns a TTFB (or ``None``) and raises on failure."""
    result = LoadResult()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + duration
    budget = [max_requests if max_requests is not None else 1 << 62]

    async def worker() -> None:
        clock = time.perf_counter
        while budget[0] > 0 and loop.time() < deadline:
            budget[0] -= 1
            start = clock()
            try:
                ttfb = await call()
            except Exception as exc:
                result.errors += 1
                kind = type(exc).__name__
                result.error_kinds[kind] = result.error_kinds.get(kind, 0) + 1
                continue
            result.latencies.append(clock() - start)
            if ttfb is not None:
                result.ttfbs.append(ttfb - start)
            result.requests += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.elapsed = time.perf_counter() - started
    return result


async def http_load(
    url: str,
    body: bytes,
    *,
    concurrency: int,
    duration: float,
    max_requests: int | None = None,
    stream: bool = False,
    warmup: int = 200,
    headers: dict[str, str] | None = None,
    stream_end: bytes = b"[DONE]",
) -> LoadResult:
    """POST ``body`` to ``url`` (loopback only) in a closed loop."""
    import aiohttp

    host = urlsplit(url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"the load generator only targets loopback, not {host!r}")
    request_headers = {"content-type": "application/json", **(headers or {})}
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=0)
    async with aiohttp.ClientSession(connector=connector, skip_auto_headers=("User-Agent",)) as s:

        async def call() -> float | None:
            async with s.post(url, data=body, headers=request_headers) as response:
                if response.status != 200:
                    await response.read()
                    raise RuntimeError(f"HTTP {response.status}")
                if not stream:
                    await response.read()
                    return None
                first = await response.content.readany()
                ttfb = time.perf_counter()
                tail = b""
                async for piece in response.content.iter_any():
                    tail = piece
                if stream_end not in (first + tail)[-4096:]:
                    raise RuntimeError(f"stream ended without {stream_end!r}")
                return ttfb

        if warmup:
            await closed_loop(call, concurrency=min(concurrency, 16), duration=10,
                              max_requests=warmup)
        return await closed_loop(call, concurrency=concurrency, duration=duration,
                                 max_requests=max_requests)


@dataclass
class OpenLoopResult:
    sent: int = 0
    ok: int = 0
    span: float = 0.0  # first request due -> last good answer
    latencies: list[float] = field(default_factory=list)
    error_kinds: dict[str, int] = field(default_factory=dict)
    max_inflight: int = 0

    @property
    def success(self) -> float:
        return self.ok / self.sent if self.sent else 0.0

    @property
    def throughput(self) -> float:
        """Good answers per second, from the first send to the last good answer."""
        return self.ok / self.span if self.span else 0.0

    def p(self, q: float) -> float:
        return percentile(self.latencies, q)

    def summary(self) -> str:
        return (f"{self.ok}/{self.sent} ok ({self.success:.0%}), {self.throughput:,.0f}/s over "
                f"{self.span:.1f}s, p50 {self.p(50):.2f}s, p99 {self.p(99):.2f}s, "
                f"max in flight {self.max_inflight} {self.error_kinds or ''}")


async def open_loop(
    url: str,
    body: bytes,
    *,
    rate: float,
    duration: float,
    request_timeout: float = 30.0,
    headers: dict[str, str] | None = None,
) -> OpenLoopResult:
    """POST ``body`` to ``url`` (loopback only) at ``rate`` per second for ``duration``
    seconds: ``rate * duration`` requests in all, each bounded by ``request_timeout``."""
    import aiohttp

    host = urlsplit(url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"the load generator only targets loopback, not {host!r}")
    result = OpenLoopResult()
    total = int(rate * duration)
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    client_timeout = aiohttp.ClientTimeout(total=request_timeout)
    headers = {"content-type": "application/json", **(headers or {})}
    inflight = [0]
    last_ok = [0.0]
    clock = time.perf_counter
    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout,
                                     skip_auto_headers=("User-Agent",)) as session:

        async def one(due: float) -> None:
            inflight[0] += 1
            result.max_inflight = max(result.max_inflight, inflight[0])
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"HTTP {response.status}")
            except Exception as exc:
                kind = type(exc).__name__ if not isinstance(exc, RuntimeError) else str(exc)
                result.error_kinds[kind] = result.error_kinds.get(kind, 0) + 1
            else:
                now = clock()
                result.ok += 1
                result.latencies.append(now - due)
                last_ok[0] = max(last_ok[0], now)
            finally:
                inflight[0] -= 1

        tasks = []
        start = clock()
        for i in range(total):
            due = start + i / rate
            wait = due - clock()
            if wait > 0:
                await asyncio.sleep(wait)
            tasks.append(asyncio.create_task(one(due)))
            result.sent += 1
        await asyncio.gather(*tasks)
        result.span = (last_ok[0] - start) if result.ok else 0.0
    return result


def run(coro: Awaitable[Any]) -> Any:
    """Run on uvloop when available (as the gateway does)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)  # type: ignore[arg-type]
    return uvloop.run(coro)  # type: ignore[arg-type]
