"""A closed-loop load generator on aiohttp, for loopback targets only.

``concurrency`` workers each send a request, wait for the whole answer, and send
the next, until ``duration`` seconds or ``max_requests`` requests have passed.
Latency is measured per request; for streams, time to first byte (the first
body bytes) is measured too.
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

__all__ = ["LoadResult", "closed_loop", "http_load", "percentile"]


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
                if b"[DONE]" not in (first + tail)[-64:]:
                    raise RuntimeError("stream ended without [DONE]")
                return ttfb

        if warmup:
            await closed_loop(call, concurrency=min(concurrency, 16), duration=10,
                              max_requests=warmup)
        return await closed_loop(call, concurrency=concurrency, duration=duration,
                                 max_requests=max_requests)


def run(coro: Awaitable[Any]) -> Any:
    """Run on uvloop when available (as the gateway does)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)  # type: ignore[arg-type]
    return uvloop.run(coro)  # type: ignore[arg-type]
