"""``make bench``: run the scenarios and print each figure beside the direct one.

    python -m benchmarks [--quick] [--no-pin] [--only a1,a64,stream,servers,start,w2,b]

Scenarios (PERFORMANCE.md):
  a1       A, c=1: upstream answers at once; added latency p50/p99, gateway vs direct
  a64      A, c=64: throughput, p99 and CPU per request, gateway vs direct and a bare proxy
  stream   C, c=16: streaming, 20 chunks 10 ms apart: time to first byte added
  servers  the bare proxy and the gateway on hypercorn + uvloop (``sluiceway serve``)
           and on uvicorn + uvloop + httptools: A c=1 p50, A c=64 req/s, p99, CPU
  start    launch of ``sluiceway serve`` to the first 200 from /v1/chat/completions
           (median of 3), and the first request's latency after a fresh start
  w2       ``--workers 2`` against one worker on A c=64, nothing pinned
  b        (opt-in, about 2 minutes) B: upstream takes 1.5 s, open loop 500 req/s for
           20 s; direct, gateway with the provider defaults (no pool keys) and
           with ``concurrency = 1000``
The gateway is ``sluiceway serve`` with the ``openai`` provider pointed at the
mock upstream, pinned to one core; the load generator and upstream share the
other. Figures go to stdout as Markdown tables for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

from .load import LoadResult, OpenLoopResult, http_load, open_loop, run
from .processes import (
    PYTHON,
    Lab,
    Proc,
    cpus,
    free_port,
    gateway_argv,
    gateway_config,
    lab,
    pin_self,
)

BODY = json.dumps({
    "model": "gpt-bench",
    "messages": [{"role": "system", "content": "You are terse."},
                 {"role": "user", "content": "Say hello in five words."}],
    "max_tokens": 16,
}).encode()
STREAM_BODY = json.dumps({**json.loads(BODY), "stream": True}).encode()
PATH = "/v1/chat/completions"
SCENARIOS = ("a1", "a64", "stream", "embed", "servers", "start", "w2", "b")
DEFAULT = "a1,a64,stream,embed,servers,start,w2"
RESPONSES_PATH = "/v1/responses"
RESPONSES_STREAM_BODY = json.dumps({"model": "gpt-bench", "input": "Say hello.",
                                    "stream": True}).encode()
EMBED_PATH = "/v1/embeddings"
EMBED_BODY = json.dumps({"model": "gpt-bench", "input": "The quick brown fox.",
                         "encoding_format": "base64"}).encode()

Row = tuple[str, ...]


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


def load(proc: Proc, *, concurrency: int, duration: float, stream: bool = False) -> LoadResult:
    result: LoadResult = run(http_load(
        proc.url + PATH, STREAM_BODY if stream else BODY, concurrency=concurrency,
        duration=duration, stream=stream,
    ))
    print(f"  {proc.name:<16} c={concurrency:<3} {result.summary()}", file=sys.stderr)
    return result


def measured(proc: Proc, **kwargs: Any) -> tuple[LoadResult, float]:
    """The load result and the process's CPU seconds per request over the run."""
    before = proc.cpu_seconds()
    result = load(proc, **kwargs)
    used = proc.cpu_seconds() - before
    return result, used / max(result.requests, 1)


class Cache:
    """A c=1 and A c=64 results per target, so that scenarios can share runs."""

    def __init__(self, scale: float) -> None:
        self.scale = scale
        self.results: dict[tuple[str, str], tuple[LoadResult, float]] = {}

    def get(self, proc: Proc, kind: str) -> tuple[LoadResult, float]:
        key = (proc.name, kind)
        if key not in self.results:
            if kind == "a1":
                self.results[key] = measured(proc, concurrency=1, duration=5 * self.scale)
            else:
                self.results[key] = measured(proc, concurrency=64, duration=8 * self.scale)
        return self.results[key]


def table(header: Row, rows: list[Row]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def post(port: int, body: bytes = BODY, timeout: float = 5.0) -> int:
    """One POST on a new connection; the status, or 0 when the port does not answer."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", PATH, body=body, headers={"content-type": "application/json"})
        response = conn.getresponse()
        response.read()
        return response.status
    except OSError:
        return 0
    finally:
        conn.close()


def timed_post(port: int) -> float:
    start = time.perf_counter()
    status = post(port)
    if status != 200:
        raise RuntimeError(f"HTTP {status}")
    return time.perf_counter() - start


def scenario_start(the_lab: Lab, upstream: Proc, cpu: int | None) -> list[Row]:
    """Launch to first 200 (median of 3), and the first requests after a fresh start."""
    first_good: list[float] = []
    first: list[float] = []
    second: list[float] = []
    steady: list[float] = []
    for attempt in range(6):
        port = free_port()
        config = the_lab.workdir / f"start{attempt}.toml"
        config.write_text(gateway_config(upstream.url, port))
        log = (the_lab.workdir / f"start{attempt}.log").open("wb")
        launched = time.perf_counter()
        popen = subprocess.Popen(
            gateway_argv(config), stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=(lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None)
        try:
            deadline = launched + 20
            if attempt < 3:  # poll the chat route itself until it answers 200
                while post(port, timeout=2) != 200:
                    if time.perf_counter() > deadline or popen.poll() is not None:
                        raise RuntimeError(f"gateway did not answer; see {log.name}")
                    time.sleep(0.005)
                first_good.append(time.perf_counter() - launched)
            else:  # wait for /healthz, then time the first chat requests
                while True:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                    try:
                        conn.request("GET", "/healthz")
                        if conn.getresponse().status == 200:
                            break
                    except OSError:
                        pass
                    finally:
                        conn.close()
                    if time.perf_counter() > deadline or popen.poll() is not None:
                        raise RuntimeError(f"gateway did not become ready; see {log.name}")
                    time.sleep(0.01)
                time.sleep(0.2)
                first.append(timed_post(port))
                second.append(timed_post(port))
                steady.append(statistics.median(timed_post(port) for _ in range(20)))
        finally:
            popen.terminate()
            try:
                popen.wait(10)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()
            log.close()
    print(f"  start: first good {[f'{t:.2f}s' for t in first_good]}, first request "
          f"{[ms(t) for t in first]}, second {[ms(t) for t in second]}", file=sys.stderr)
    med = statistics.median
    return [
        ("launch of `sluiceway serve` to first 200 from /v1/chat/completions (median of 3)",
         f"{med(first_good):.2f} s", f"runs: {', '.join(f'{t:.2f}' for t in first_good)} s"),
        ("first chat request after /healthz is ready (median of 3 fresh starts)",
         ms(med(first)), f"runs: {', '.join(ms(t) for t in first)}"),
        ("second request", ms(med(second)), f"runs: {', '.join(ms(t) for t in second)}"),
        ("requests 3-22, median (new connection each)", ms(med(steady)), ""),
    ]


def scenario_workers(the_lab: Lab, upstream: Proc, scale: float, backend: str,
                     cache: Cache) -> list[Row]:
    """One worker against two on A c=64; gateway and load generator unpinned."""
    everything = set(cpus())
    pin_self(None)
    os.sched_setaffinity(0, everything)
    rows: list[Row] = []
    try:
        for workers in (1, 2):
            proc = the_lab.gateway(f"gateway-w{workers}", upstream, cpu=everything,
                                   workers=workers, backend=backend)
            time.sleep(0.5)
            before_self = resource.getrusage(resource.RUSAGE_SELF)
            before_up = upstream.cpu_seconds()
            result, cpu = measured(proc, concurrency=64, duration=8 * scale)
            after_self = resource.getrusage(resource.RUSAGE_SELF)
            gen = (after_self.ru_utime + after_self.ru_stime
                   - before_self.ru_utime - before_self.ru_stime)
            up = upstream.cpu_seconds() - before_up
            rows.append((f"--workers {workers}", f"{result.rps:,.0f}", ms(result.p(99)),
                         ms(cpu), f"{cpu * result.rps:.2f}",
                         f"{gen / result.elapsed:.2f} + {up / result.elapsed:.2f}",
                         str(result.errors), f"{proc.peak_rss_mb():.0f} MB"))
            the_lab.stop(proc)
    finally:
        if len(everything) >= 2:
            pin_self(sorted(everything)[-1])
    base = float(rows[0][1].replace(",", ""))
    rows.append(("w2 / w1 unpinned", f"{float(rows[1][1].replace(',', '')) / base:.2f}x", "",
                 "", "", "", "", ""))
    if ("gateway", "a64") in cache.results:
        pinned, cpu = cache.results[("gateway", "a64")]
        rows.append(("--workers 1 pinned to one core (A c=64 above)", f"{pinned.rps:,.0f}",
                     ms(pinned.p(99)), ms(cpu), f"{cpu * pinned.rps:.2f}", "other core", "",
                     ""))
    return rows


def scenario_b(the_lab: Lab, gateway_cpu: int | None, other_cpu: int | None,
               scale: float, backend: str) -> list[Row]:
    rate, duration = 500.0, 20.0 * scale
    slow = the_lab.upstream("upstream-1.5s", cpu=other_cpu, latency_ms=1500)

    def b(proc: Proc) -> OpenLoopResult:
        result: OpenLoopResult = run(open_loop(proc.url + PATH, BODY, rate=rate,
                                               duration=duration))
        print(f"  {proc.name:<16} B {result.summary()}", file=sys.stderr)
        return result

    def row(name: str, result: OpenLoopResult, rss: str) -> Row:
        errors = ", ".join(f"{k} {v}" for k, v in result.error_kinds.items()) or "0"
        return (name, f"{result.success:.1%}", f"{result.throughput:,.0f}/s",
                f"{result.p(50):.2f} s", f"{result.p(99):.2f} s", str(result.max_inflight),
                rss, errors)

    print(f"B, upstream 1.5 s, open loop {rate:.0f} req/s for {duration:.0f} s", file=sys.stderr)
    rows = [row("direct", b(slow), "—")]
    # Provider defaults (no pool keys: concurrency 256, max_connections = concurrency),
    # then room for the whole offered load (500/s x 1.5 s = 750 in flight).
    for concurrency in (None, 1000):
        proc = the_lab.gateway(f"gateway-b{concurrency or 'default'}", slow, cpu=gateway_cpu,
                               concurrency=concurrency, backend=backend)
        result = b(proc)
        label = ("sluiceway, provider defaults" if concurrency is None
                 else f"sluiceway, concurrency = {concurrency}")
        rows.append(row(label, result, f"{proc.peak_rss_mb():.0f} MB"))
        # Requests still queued in the gateway's pool: no need to drain them.
        the_lab.stop(proc, timeout=2)
    the_lab.stop(slow)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description="sluiceway load scenarios")
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    parser.add_argument("--only", default=DEFAULT,
                        help=f"comma-separated subset of: {', '.join(SCENARIOS)} "
                             f"(default {DEFAULT}; b is opt-in)")
    parser.add_argument("--backend", default="aiohttp", choices=("aiohttp", "httpx2"))
    args = parser.parse_args()
    only = set(args.only.split(","))
    if unknown := only - set(SCENARIOS):
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    scale = 0.5 if args.quick else 1.0
    available = cpus()
    pin = not args.no_pin and len(available) >= 2
    gateway_cpu, other_cpu = (available[0], available[-1]) if pin else (None, None)
    pin_self(other_cpu)
    cache = Cache(scale)

    rows: list[Row] = []
    tables: list[tuple[str, Row, list[Row]]] = []
    notes: list[str] = []
    with lab() as the_lab:
        upstream = the_lab.upstream(cpu=other_cpu)
        notes.append(upstream.log.read_text().strip().splitlines()[0])
        gateway = bare = None
        if only & {"a1", "a64", "stream", "embed", "servers"}:
            gateway = the_lab.gateway("gateway", upstream, cpu=gateway_cpu, backend=args.backend)
            bare = the_lab.bare("bare", upstream, cpu=gateway_cpu)
        if "a1" in only and gateway and bare:
            print("A, c=1", file=sys.stderr)
            d, _ = cache.get(upstream, "a1")
            b, _ = cache.get(bare, "a1")
            g, g_cpu1 = cache.get(gateway, "a1")
            rows += [
                ("A c=1 latency p50", ms(d.p(50)), ms(b.p(50)), ms(g.p(50)),
                 f"+{ms(g.p(50) - d.p(50))} added (bare +{ms(b.p(50) - d.p(50))})"),
                ("A c=1 latency p99", ms(d.p(99)), ms(b.p(99)), ms(g.p(99)),
                 f"+{ms(g.p(99) - d.p(99))} added"),
                ("A c=1 gateway CPU / request", "—", "", ms(g_cpu1), ""),
            ]
        if "a64" in only and gateway and bare:
            print("A, c=64", file=sys.stderr)
            d, _ = cache.get(upstream, "a64")
            b, b_cpu = cache.get(bare, "a64")
            g, g_cpu = cache.get(gateway, "a64")
            rows += [
                ("A c=64 req/s", f"{d.rps:,.0f}", f"{b.rps:,.0f}", f"{g.rps:,.0f}",
                 f"{g.rps / d.rps:.3f}x direct, {g.rps / b.rps:.2f}x bare"),
                ("A c=64 latency p99", ms(d.p(99)), ms(b.p(99)), ms(g.p(99)),
                 f"{g.p(99) / d.p(99):.1f}x direct"),
                ("A c=64 CPU / request", "—", ms(b_cpu), ms(g_cpu),
                 f"{g_cpu / b_cpu:.2f}x bare"),
                ("A c=64 errors", str(d.errors), str(b.errors), str(g.errors), ""),
            ]
        if "stream" in only and gateway and bare:
            print("C, streaming c=16, 20 chunks 10 ms apart", file=sys.stderr)
            d = load(upstream, concurrency=16, duration=6 * scale, stream=True)
            b, b_cpu = measured(bare, concurrency=16, duration=6 * scale, stream=True)
            g, g_cpu = measured(gateway, concurrency=16, duration=6 * scale, stream=True)
            rows += [
                ("C c=16 TTFB p50", ms(d.ttfb(50)), ms(b.ttfb(50)), ms(g.ttfb(50)),
                 f"+{ms(g.ttfb(50) - d.ttfb(50))} added"),
                ("C c=16 TTFB p99", ms(d.ttfb(99)), ms(b.ttfb(99)), ms(g.ttfb(99)),
                 f"+{ms(g.ttfb(99) - d.ttfb(99))} added"),
                ("C c=16 whole stream p50", ms(d.p(50)), ms(b.p(50)), ms(g.p(50)),
                 f"+{ms(g.p(50) - d.p(50))} added"),
                ("C c=16 streams/s", f"{d.rps:,.0f}", f"{b.rps:,.0f}", f"{g.rps:,.0f}",
                 f"{g.rps / d.rps:.3f}x direct"),
                ("C c=16 CPU / stream (22 events)", "—", ms(b_cpu), ms(g_cpu),
                 f"{g_cpu / b_cpu:.2f}x bare"),
                ("C errors", str(d.errors), str(b.errors), str(g.errors), ""),
            ]
            # The Responses API over the same upstream chat stream: its own events.
            before = gateway.cpu_seconds()
            r: LoadResult = run(http_load(gateway.url + RESPONSES_PATH, RESPONSES_STREAM_BODY,
                                          concurrency=16, duration=6 * scale, stream=True,
                                          stream_end=b"response.completed"))
            r_cpu = (gateway.cpu_seconds() - before) / max(r.requests, 1)
            print(f"  {gateway.name:<16} R c=16 {r.summary()}", file=sys.stderr)
            rows += [
                ("R c=16 /v1/responses TTFB p50", ms(d.ttfb(50)), "—", ms(r.ttfb(50)),
                 f"+{ms(r.ttfb(50) - d.ttfb(50))} added (chat +{ms(g.ttfb(50) - d.ttfb(50))})"),
                ("R c=16 TTFB p99", ms(d.ttfb(99)), "—", ms(r.ttfb(99)),
                 f"+{ms(r.ttfb(99) - d.ttfb(99))} added"),
                ("R c=16 CPU / stream", "—", "—", ms(r_cpu), f"{r_cpu / g_cpu:.2f}x chat"),
                ("R errors", "—", "—", str(r.errors), ""),
            ]
        if "embed" in only and gateway and bare:
            print("E, embeddings c=64 (one 1536-float vector, base64)", file=sys.stderr)
            embedded = []
            for proc in (upstream, bare, gateway):
                before = proc.cpu_seconds()
                result: LoadResult = run(http_load(proc.url + EMBED_PATH, EMBED_BODY,
                                                   concurrency=64, duration=6 * scale))
                print(f"  {proc.name:<16} E {result.summary()}", file=sys.stderr)
                embedded.append((result, (proc.cpu_seconds() - before) / max(result.requests, 1)))
            (d, _), (b, b_cpu), (g, g_cpu) = embedded
            rows += [
                ("E c=64 embeddings req/s", f"{d.rps:,.0f}", f"{b.rps:,.0f}", f"{g.rps:,.0f}",
                 f"{g.rps / d.rps:.3f}x direct, {g.rps / b.rps:.2f}x bare"),
                ("E c=64 CPU / request", "—", ms(b_cpu), ms(g_cpu), f"{g_cpu / b_cpu:.2f}x bare"),
                ("E errors", str(d.errors), str(b.errors), str(g.errors), ""),
            ]
        if rows and gateway and bare:
            rows.append(("gateway peak RSS", "—", f"{bare.peak_rss_mb():.0f} MB",
                         f"{gateway.peak_rss_mb():.0f} MB", ""))
            tables.append(("Scenarios A and C",
                           ("figure", "direct", "bare proxy", "sluiceway", "gateway vs direct"),
                           rows))
        if "servers" in only and gateway and bare:
            print("Servers: hypercorn vs uvicorn, A c=1 and c=64", file=sys.stderr)
            bare_uv = the_lab.bare("bare-uvicorn", upstream, cpu=gateway_cpu, server="uvicorn")
            gw_uv = the_lab.gateway("gateway-uvicorn", upstream, cpu=gateway_cpu,
                                    server="uvicorn", backend=args.backend)
            targets = [bare, bare_uv, gateway, gw_uv]
            d1, _ = cache.get(upstream, "a1")
            d64, _ = cache.get(upstream, "a64")
            a1 = [cache.get(t, "a1")[0] for t in targets]
            a64 = [cache.get(t, "a64") for t in targets]
            server_rows: list[Row] = [
                ("A c=1 latency p50", ms(d1.p(50)), *(ms(r.p(50)) for r in a1)),
                ("A c=1 added at p50", "0", *(f"+{ms(r.p(50) - d1.p(50))}" for r in a1)),
                ("A c=64 req/s", f"{d64.rps:,.0f}", *(f"{r.rps:,.0f}" for r, _ in a64)),
                ("A c=64 latency p99", ms(d64.p(99)), *(ms(r.p(99)) for r, _ in a64)),
                ("A c=64 CPU / request", "—", *(ms(c) for _, c in a64)),
                ("A c=64 errors", str(d64.errors), *(str(r.errors) for r, _ in a64)),
                ("peak RSS", "—", *(f"{t.peak_rss_mb():.0f} MB" for t in targets)),
            ]
            tables.append(("Servers",
                           ("figure", "direct", "bare, hypercorn", "bare, uvicorn",
                            "sluiceway, hypercorn", "sluiceway, uvicorn"), server_rows))
            the_lab.stop(bare_uv)
            the_lab.stop(gw_uv)
        if gateway:
            the_lab.stop(gateway)
        if bare:
            the_lab.stop(bare)
        if "start" in only:
            print("Start to first good response", file=sys.stderr)
            tables.append(("Start", ("figure", "value", "note"),
                           scenario_start(the_lab, upstream, gateway_cpu)))
        if "w2" in only:
            print("--workers 2 on A c=64, unpinned", file=sys.stderr)
            tables.append(("Workers, A c=64, nothing pinned",
                           ("gateway", "req/s", "p99", "gateway CPU / request",
                            "gateway cores busy", "load gen + upstream cores busy", "errors",
                            "peak RSS (sum)"),
                           scenario_workers(the_lab, upstream, scale, args.backend, cache)))
        if "b" in only:
            tables.append(("B: upstream 1.5 s, open loop 500 req/s",
                           ("target", "success", "throughput", "p50", "p99", "max in flight",
                            "gateway peak RSS", "errors"),
                           scenario_b(the_lab, gateway_cpu, other_cpu, scale, args.backend)))

    print(f"\n{datetime.date.today().isoformat()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, {platform.platform()}; pinned: "
          f"{f'gateway on CPU {gateway_cpu}, load+upstream on CPU {other_cpu}' if pin else 'no'}; "
          f"upstream client backend: {args.backend}; {'; '.join(notes)}; "
          f"command: {' '.join([os.path.basename(PYTHON), '-m', 'benchmarks', *sys.argv[1:]])}")
    for title, header, body in tables:
        print(f"\n{title}:\n")
        print(table(header, body))



if __name__ == "__main__":
    main()
