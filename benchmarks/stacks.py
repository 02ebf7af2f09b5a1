"""The default and the full production stack, measured the five ways our targets
name, optionally against another checkout of sluiceway in the same run.

    python -m benchmarks.stacks [--quick] [--no-pin] [--rounds N] [--stack NAME] [--before DIR]

For each stack, each build (this checkout, and with ``--before`` the checkout
at DIR, e.g. a ``git worktree`` of an earlier commit) starts its own
``sluiceway serve`` pinned to one core, and is measured against the same mock
upstream as a direct call:

* A c=1: added latency p50 (gateway p50 - direct p50);
* A c=64: requests per second (and the ratio to direct), and the gateway's CPU
  per request (steadier than req/s on a shared machine);
* C c=16: streaming time to first byte added, p50;
* B: a second gateway in front of an upstream that takes 1.5 s, 500 req/s
  offered in an open loop for 20 s: success, p99, and that gateway's peak RSS.

Stacks: ``default`` is the openai provider with auth off and no plugins;
``production`` adds api-keys, limits (memory), prometheus, request-log (file)
and costs, with one key whose limits are far above the load. Builds alternate
within each stack, so slow drift of the machine falls on both alike; with
``--rounds 2`` every row is measured twice. Prints Markdown for RESULTS.md.

A ``--before`` checkout runs with this checkout's virtualenv: its ``sluiceway``
and ``sluiceway_<plugin>`` packages are put first on ``PYTHONPATH`` (through a
directory of links), so the installed entry points load its code.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

from .__main__ import BODY, PATH, STREAM_BODY, Row, ms, table
from .load import LoadResult, OpenLoopResult, http_load, open_loop, run
from .policies import policy_config
from .processes import PYTHON, Lab, Proc, cpus, free_port, gateway_config, lab, pin_self

STACKS: dict[str, list[str]] = {
    "default": [],
    "production": ["api-keys", "limits", "prometheus", "request-log", "costs"],
}


@dataclass
class Build:
    """A sluiceway checkout to serve: this one (``source`` None) or another."""

    name: str
    source: Path | None = None
    env: dict[str, str] | None = None

    @classmethod
    def other(cls, name: str, source: Path, workdir: Path) -> Build:
        links = workdir / f"path-{name}"
        links.mkdir()
        (links / "sluiceway").symlink_to(source / "core")
        for package in sorted(source.glob("plugins/*/sluiceway_*")):
            if package.is_dir() and not package.name.endswith(".egg-info"):
                (links / package.name).symlink_to(package)
        return cls(name, source, {"PYTHONPATH": str(links)})


@dataclass
class Figures:
    a1: LoadResult
    a64: LoadResult
    cpu_per_request: float
    stream: LoadResult
    b: OpenLoopResult
    rss_mb: float


def _load(proc: Proc, headers: dict[str, str], *, concurrency: int, duration: float,
          stream: bool = False) -> LoadResult:
    result: LoadResult = run(http_load(
        proc.url + PATH, STREAM_BODY if stream else BODY, concurrency=concurrency,
        duration=duration, stream=stream, headers=headers,
    ))
    print(f"  {proc.name:<28} c={concurrency:<3} {'C ' if stream else ''}{result.summary()}",
          file=sys.stderr)
    return result


def _serve(the_lab: Lab, build: Build, name: str, upstream: Proc, plugins: list[str],
           keys_file: Path, cpu: int | None) -> Proc:
    port = free_port()
    config = the_lab.workdir / f"{name}.toml"
    config.write_text(policy_config(
        gateway_config(upstream.url, port), plugins,
        "memory://" if "limits" in plugins else None, keys_file,
    ))
    argv = [PYTHON, "-m", "sluiceway.cli", "serve", "--config", str(config)]
    return the_lab.serve(name, config, port, cpu=cpu, env=build.env, argv=argv)


def measure(the_lab: Lab, build: Build, stack: str, fast: Proc, slow: Proc,
            headers: dict[str, str], keys_file: Path, gateway_cpu: int | None,
            scale: float, round_: int) -> Figures:
    plugins = STACKS[stack]
    label = f"{stack}-{build.name}-{round_}"
    print(f"{stack} stack, {build.name} build", file=sys.stderr)
    gateway = _serve(the_lab, build, label, fast, plugins, keys_file, gateway_cpu)
    a1 = _load(gateway, headers, concurrency=1, duration=5 * scale)
    cpu_before = gateway.cpu_seconds()
    a64 = _load(gateway, headers, concurrency=64, duration=8 * scale)
    cpu = (gateway.cpu_seconds() - cpu_before) / max(a64.requests, 1)
    streamed = _load(gateway, headers, concurrency=16, duration=6 * scale, stream=True)
    the_lab.stop(gateway)
    slow_gateway = _serve(the_lab, build, label + "-b", slow, plugins, keys_file, gateway_cpu)
    b: OpenLoopResult = run(open_loop(slow_gateway.url + PATH, BODY, rate=500.0,
                                      duration=20 * scale, headers=headers))
    print(f"  {slow_gateway.name:<28} B {b.summary()}", file=sys.stderr)
    rss = slow_gateway.peak_rss_mb()
    the_lab.stop(slow_gateway, timeout=2)
    return Figures(a1, a64, cpu, streamed, b, rss)


HEADER: Row = ("stack", "build", "A c=1 p50 added", "A c=64 req/s", "vs direct", "CPU / request",
               "C c=16 TTFB p50 added", "B success", "B p99", "B peak RSS", "errors")


def row(stack: str, build: str, figures: Figures, direct: dict[str, LoadResult],
        direct_b: OpenLoopResult) -> Row:
    errors = figures.a1.errors + figures.a64.errors + figures.stream.errors
    b_errors = ", ".join(f"{k} {v}" for k, v in figures.b.error_kinds.items())
    return (
        stack, build,
        f"+{ms(figures.a1.p(50) - direct['a1'].p(50))}",
        f"{figures.a64.rps:,.0f}", f"{figures.a64.rps / direct['a64'].rps:.3f}x",
        ms(figures.cpu_per_request),
        f"+{ms(figures.stream.ttfb(50) - direct['stream'].ttfb(50))}",
        f"{figures.b.success:.1%}", f"{figures.b.p(99):.3f} s (direct {direct_b.p(99):.3f} s)",
        f"{figures.rss_mb:.0f} MB", str(errors) + (f"; B: {b_errors}" if b_errors else ""),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="the default and production stacks")
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    parser.add_argument("--rounds", type=int, default=1, help="measure every row N times")
    parser.add_argument("--stack", choices=(*STACKS, "all"), default="all")
    parser.add_argument("--before", type=Path, default=None,
                        help="another sluiceway checkout to measure beside this one")
    args = parser.parse_args()
    scale = 0.5 if args.quick else 1.0
    available = cpus()
    pin = not args.no_pin and len(available) >= 2
    gateway_cpu, other_cpu = (available[0], available[-1]) if pin else (None, None)
    pin_self(other_cpu)
    from sluiceway_api_keys import KeyStore

    with lab() as the_lab:
        builds = [Build("after")]
        if args.before is not None:
            builds.insert(0, Build.other("before", args.before.resolve(), the_lab.workdir))
        keys_file = the_lab.workdir / "keys.toml"
        key = KeyStore(keys_file).create("bench", rpm=100_000_000, tpm=10**12,
                                         max_concurrent=100_000)
        headers = {"authorization": f"Bearer {key.secret}"}
        fast = the_lab.upstream(cpu=other_cpu)
        slow = the_lab.upstream("upstream-1.5s", cpu=other_cpu, latency_ms=1500)
        print("direct", file=sys.stderr)
        direct = {
            "a1": _load(fast, {}, concurrency=1, duration=5 * scale),
            "a64": _load(fast, {}, concurrency=64, duration=8 * scale),
            "stream": _load(fast, {}, concurrency=16, duration=6 * scale, stream=True),
        }
        direct_b: OpenLoopResult = run(open_loop(slow.url + PATH, BODY, rate=500.0,
                                                 duration=20 * scale))
        print(f"  direct B {direct_b.summary()}", file=sys.stderr)
        rows: list[Row] = []
        for stack in STACKS if args.stack == "all" else [args.stack]:
            for round_ in range(args.rounds):
                for build in builds:
                    figures = measure(the_lab, build, stack, fast, slow, headers, keys_file,
                                      gateway_cpu, scale, round_)
                    rows.append(row(stack, build.name, figures, direct, direct_b))
    pinned = f"gateway on CPU {gateway_cpu}, load+upstream on CPU {other_cpu}" if pin else "no"
    print(f"\n{datetime.date.today().isoformat()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, {platform.platform()}; pinned: {pinned}; "
          f"command: python -m benchmarks.stacks {' '.join(sys.argv[1:])}\n")
    print(f"Direct: A c=1 p50 {ms(direct['a1'].p(50))}, A c=64 {direct['a64'].rps:,.0f} req/s, "
          f"C TTFB p50 {ms(direct['stream'].ttfb(50))}, B {direct_b.success:.1%} "
          f"p99 {direct_b.p(99):.3f} s\n")
    print(table(HEADER, rows))


if __name__ == "__main__":
    main()
