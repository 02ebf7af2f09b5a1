"""``make bench``: run the scenarios and print each figure beside the direct one.

    python -m benchmarks [--quick] [--no-pin] [--only a1,a64,stream]

Scenarios (PERFORMANCE.md):
  A, c=1     upstream answers at once; added latency p50/p99, gateway vs direct
  A, c=64    throughput and p99, gateway vs direct (and vs a bare proxy)
  CPU        the gateway process's CPU time over the c=64 run, per request
  C, c=16    streaming, 20 chunks 10 ms apart: time to first byte added
The gateway is ``sluiceway serve`` with the ``openai`` provider pointed at the
mock upstream, pinned to one core; the load generator and upstream share the
other. Figures go to stdout as Markdown tables for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from typing import Any

from .load import LoadResult, http_load, run
from .processes import Proc, cpus, pin_self, started

BODY = json.dumps({
    "model": "gpt-bench",
    "messages": [{"role": "system", "content": "You are terse."},
                 {"role": "user", "content": "Say hello in five words."}],
    "max_tokens": 16,
}).encode()
STREAM_BODY = json.dumps({**json.loads(BODY), "stream": True}).encode()
PATH = "/v1/chat/completions"


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


def load(proc: Proc, *, concurrency: int, duration: float, stream: bool = False) -> LoadResult:
    result: LoadResult = run(http_load(
        proc.url + PATH, STREAM_BODY if stream else BODY, concurrency=concurrency,
        duration=duration, stream=stream,
    ))
    print(f"  {proc.name:<9} c={concurrency:<3} {result.summary()}", file=sys.stderr)
    return result


def measured(proc: Proc, **kwargs: Any) -> tuple[LoadResult, float]:
    """The load result and the process's CPU seconds per request over the run."""
    before = proc.cpu_seconds()
    result = load(proc, **kwargs)
    used = proc.cpu_seconds() - before
    return result, used / max(result.requests, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description="sluiceway load scenarios")
    parser.add_argument("--quick", action="store_true", help="shorter runs (about 1 min total)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    parser.add_argument("--only", default="a1,a64,stream",
                        help="comma-separated subset of: a1, a64, stream")
    parser.add_argument("--backend", default="aiohttp", choices=("aiohttp", "httpx2"))
    args = parser.parse_args()
    only = set(args.only.split(","))
    scale = 0.5 if args.quick else 1.0
    available = cpus()
    pin = not args.no_pin and len(available) >= 2
    gateway_cpu, other_cpu = (available[0], available[-1]) if pin else (None, None)
    pin_self(other_cpu)

    rows: list[tuple[str, str, str, str, str]] = []
    notes: list[str] = []
    with started(gateway_cpu=gateway_cpu, other_cpu=other_cpu, backend=args.backend) as procs:
        upstream, gateway, bare = procs["upstream"], procs["gateway"], procs["bare"]
        notes.append(upstream.log.read_text().strip().splitlines()[0])
        if "a1" in only:
            print("A, c=1", file=sys.stderr)
            d = load(upstream, concurrency=1, duration=5 * scale)
            b = load(bare, concurrency=1, duration=5 * scale)
            g, g_cpu1 = measured(gateway, concurrency=1, duration=5 * scale)
            rows += [
                ("A c=1 latency p50", ms(d.p(50)), ms(b.p(50)), ms(g.p(50)),
                 f"+{ms(g.p(50) - d.p(50))} added (bare +{ms(b.p(50) - d.p(50))})"),
                ("A c=1 latency p99", ms(d.p(99)), ms(b.p(99)), ms(g.p(99)),
                 f"+{ms(g.p(99) - d.p(99))} added"),
                ("A c=1 gateway CPU / request", "—", "", ms(g_cpu1), ""),
            ]
        if "a64" in only:
            print("A, c=64", file=sys.stderr)
            d = load(upstream, concurrency=64, duration=8 * scale)
            b, b_cpu = measured(bare, concurrency=64, duration=8 * scale)
            g, g_cpu = measured(gateway, concurrency=64, duration=8 * scale)
            rows += [
                ("A c=64 req/s", f"{d.rps:,.0f}", f"{b.rps:,.0f}", f"{g.rps:,.0f}",
                 f"{g.rps / d.rps:.3f}x direct, {g.rps / b.rps:.2f}x bare"),
                ("A c=64 latency p99", ms(d.p(99)), ms(b.p(99)), ms(g.p(99)),
                 f"{g.p(99) / d.p(99):.1f}x direct"),
                ("A c=64 CPU / request", "—", ms(b_cpu), ms(g_cpu),
                 f"{g_cpu / b_cpu:.2f}x bare"),
                ("A c=64 errors", str(d.errors), str(b.errors), str(g.errors), ""),
            ]
        if "stream" in only:
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
        rows.append(("gateway peak RSS", "—", f"{bare.peak_rss_mb():.0f} MB",
                     f"{gateway.peak_rss_mb():.0f} MB", ""))

    print(f"\n{datetime.date.today().isoformat()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, {platform.platform()}; pinned: "
          f"{f'gateway on CPU {gateway_cpu}, load+upstream on CPU {other_cpu}' if pin else 'no'}; "
          f"upstream client backend: {args.backend}; {'; '.join(notes)}\n")
    print("| figure | direct | bare proxy | sluiceway | gateway vs direct |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
