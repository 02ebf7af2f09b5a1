"""Which upstream client: throughput, tail latency and the cancellation storm.

    python -m benchmarks.clients [--duration 5]

Against the fast mock upstream (its own process, own core), with one shared
client per backend at concurrency 64:
  * sluiceway's ``aiohttp`` backend (the default),
  * sluiceway's ``httpx2`` backend,
  * stock ``httpx`` 0.28.1 ``AsyncClient`` (what sluiceway does not ship).
Then the cancellation storm of DEPENDENCIES.md section 4.5 against ``/slow``
(100 ms): 10 rounds of 150 requests each cancelled at 50 ms, after connect and
before headers; then one normal request with an 8 s bound (pool timeout 5 s). Stock httpx is
expected to jam (encode/httpcore#961): its pool is left full of dead
connections and the request fails with PoolTimeout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

from .load import LoadResult, closed_loop, run
from .processes import PYTHON, cpus, free_port, pin_self, start

BODY = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'
HEADERS = {"content-type": "application/json"}


class Backend:
    """A uniform ``post``/``get`` over each client, with ``aclose``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._client: Any = None
        if name in ("aiohttp", "httpx2"):
            from sluiceway.upstream.client import UpstreamLimits, create_upstream_client

            self._client = create_upstream_client(
                UpstreamLimits(max_connections=100, backend=name)  # type: ignore[arg-type]
            )
        else:
            import httpx

            self._client = httpx.AsyncClient(timeout=httpx.Timeout(60.0, pool=5.0),
                                             limits=httpx.Limits(max_connections=100))

    async def request(self, method: str, url: str) -> bytes:
        if self.name == "httpx":
            response = await self._client.request(method, url, content=BODY, headers=HEADERS)
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}")
            data: bytes = response.content
            return data
        upstream_response = await self._client.send(method, url, headers=HEADERS, body=BODY)
        if upstream_response.status != 200:
            raise RuntimeError(f"HTTP {upstream_response.status}")
        body: bytes = await upstream_response.read()
        return body

    async def aclose(self) -> None:
        await self._client.aclose()


async def throughput(backend: Backend, url: str, duration: float) -> LoadResult:
    async def call() -> None:
        await backend.request("POST", url)

    await closed_loop(call, concurrency=16, duration=5, max_requests=200)
    return await closed_loop(call, concurrency=64, duration=duration)


async def storm(backend: Backend, url: str, rounds: int = 10, size: int = 150) -> str:
    for _ in range(rounds):
        tasks = [asyncio.create_task(backend.request("GET", url)) for _ in range(size)]
        await asyncio.sleep(0.05)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    started = time.perf_counter()
    try:
        await asyncio.wait_for(backend.request("GET", url), 8.0)
    except Exception as exc:
        return f"JAMMED: next request failed after {time.perf_counter() - started:.1f}s " \
               f"({type(exc).__name__})"
    return f"OK: next request answered in {(time.perf_counter() - started) * 1e3:.0f} ms"


async def measure(names: list[str], url: str, duration: float) -> list[tuple[str, Any, str]]:
    rows = []
    for name in names:
        backend = Backend(name)
        try:
            result = await throughput(backend, url + "/v1/chat/completions", duration)
            print(f"  {name:<8} {result.summary()}", file=sys.stderr)
            outcome = await storm(backend, url + "/slow")
            print(f"  {name:<8} storm: {outcome}", file=sys.stderr)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(backend.aclose(), 5)
        rows.append((name, result, outcome))
    return rows


def _label(name: str) -> str:
    if name == "httpx":
        return f"stock httpx {version('httpx')} (httpcore {version('httpcore')})"
    if name == "httpx2":
        return f"sluiceway httpx2 backend (httpx2 {version('httpx2')})"
    return f"sluiceway aiohttp backend (aiohttp {version('aiohttp')}), the default"


def main() -> None:
    parser = argparse.ArgumentParser(description="upstream client comparison")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--backends", default="aiohttp,httpx2,httpx")
    args = parser.parse_args()
    available = cpus()
    client_cpu, upstream_cpu = (available[0], available[-1]) if len(available) > 1 else (None, None)
    pin_self(client_cpu)
    workdir = Path(tempfile.mkdtemp(prefix="sluiceway-clients-"))
    port = free_port()
    upstream = start("upstream", [PYTHON, "-m", "benchmarks.upstream", "--port", str(port)],
                     port, cpu=upstream_cpu, probe="/health", workdir=workdir)
    try:
        runner: Callable[[], Awaitable[list[tuple[str, Any, str]]]] = lambda: measure(  # noqa: E731
            args.backends.split(","), upstream.url, args.duration)
        rows = run(runner())
    finally:
        upstream.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nc=64 against the mock upstream on loopback, client on CPU {client_cpu}, "
          f"upstream on CPU {upstream_cpu}, {args.duration:.0f} s per client, uvloop\n")
    print("| client | req/s | p50 | p99 | errors | after the cancellation storm |")
    print("|---|---|---|---|---|---|")
    for name, result, outcome in rows:
        print(f"| {_label(name)} | {result.rps:,.0f} | {result.p(50) * 1e3:.2f} ms | "
              f"{result.p(99) * 1e3:.2f} ms | {result.errors} | {outcome} |")


if __name__ == "__main__":
    main()
