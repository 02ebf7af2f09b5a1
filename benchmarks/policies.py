"""The cost of the plugin stacks: the same gateway with auth, limits and the abuse
guard in front of the route (counters in memory and in Redis), and with the
observability plugins (metrics, request log, traces, costs), against bare routing.

    python -m benchmarks.policies [--quick] [--no-pin] [--stack policies|observability|all]

Every target is ``sluiceway serve`` with the ``openai`` provider pointed at the
mock upstream (scenario A: the upstream answers at once), pinned to one core;
the load generator, the upstream and redis-server share the other. The key's
limits are far above the load, so every request goes the whole way through
the policies and none is refused: the figures are the cost of checking.
Prints Markdown for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .__main__ import BODY, PATH, Row, ms
from .load import LoadResult, http_load, run
from .pinned import run_pinned
from .processes import Lab, Proc, free_port, gateway_config

# name, plugins after "openai", [plugin.limits] storage (None: no limits plugin)
Target = tuple[str, list[str], str | None]
POLICIES: list[Target] = [
    ("+ api-keys", ["api-keys"], None),
    ("+ api-keys, limits (memory://)", ["api-keys", "limits"], "memory://"),
    ("+ guard, api-keys, limits (memory://)", ["guard", "api-keys", "limits"], "memory://"),
    ("+ guard, api-keys, limits (redis://)", ["guard", "api-keys", "limits"], "redis"),
]
OBSERVABILITY: list[Target] = [
    ("+ prometheus", ["prometheus"], None),
    ("+ prometheus, request-log (file)", ["prometheus", "request-log"], None),
    ("+ prometheus, request-log, costs", ["prometheus", "request-log", "costs"], None),
    ("+ otel (every request sampled, no exporter)", ["otel"], None),
    ("default stack: api-keys, limits, prometheus, request-log, costs",
     ["api-keys", "limits", "prometheus", "request-log", "costs"], "memory://"),
]
BARE: Target = ("bare routing", [], None)


def start_redis(the_lab: Lab, cpu: int | None) -> tuple[subprocess.Popen[bytes], str]:
    executable = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    process = subprocess.Popen(
        [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(the_lab.workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=(lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None,
    )
    time.sleep(0.3)
    if process.poll() is not None:
        raise RuntimeError("redis-server did not start")
    return process, f"redis://127.0.0.1:{port}/0"


def policy_config(base: str, plugins: list[str], storage: str | None, keys_file: Path) -> str:
    """The benchmark's plugins.toml with the policy plugins and their tables added."""
    listed = ", ".join(f'"{name}"' for name in ["openai", *plugins])
    config = base.replace('plugins = ["openai"]', f"plugins = [{listed}]")
    if "api-keys" in plugins:
        config += f'\n[auth]\nchain = ["api-keys"]\n\n[auth.api-keys]\nkeys_file = "{keys_file}"\n'
    if storage is not None:
        config += f'\n[plugin.limits]\nstorage = "{storage}"\n'
    if "guard" in plugins:
        guard_storage = storage if storage is not None else "memory://"
        # The load is one key at thousands of requests per second: lift the burst cap.
        config += f'\n[plugin.guard]\nstorage = "{guard_storage}"\nburst_rps = 1000000\n'
    if "request-log" in plugins:
        config += f'\n[plugin.request-log]\nfile = "{keys_file.parent / "requests.jsonl"}"\n'
    if "costs" in plugins:  # the mock upstream's model, priced
        config += '\n[plugin.costs]\nprices = { "mock-model" = { input = 2.5, output = 10.0 } }\n'
    if "otel" in plugins:
        config += '\n[plugin.otel]\nexporter = "none"\nsample_ratio = 1.0\n'
    return config


def measure(proc: Proc, headers: dict[str, str], concurrency: int,
            duration: float) -> tuple[LoadResult, float]:
    before = proc.cpu_seconds()
    result: LoadResult = run(http_load(proc.url + PATH, BODY, concurrency=concurrency,
                                       duration=duration, headers=headers))
    used = proc.cpu_seconds() - before
    print(f"  {proc.name:<40} c={concurrency:<3} {result.summary()}", file=sys.stderr)
    return result, used / max(result.requests, 1)


def scenario_policies(the_lab: Lab, upstream: Proc, gateway_cpu: int | None,
                      other_cpu: int | None, scale: float,
                      targets: list[Target] | None = None) -> list[Row]:
    from sluiceway_api_keys import KeyStore

    keys_file = the_lab.workdir / "keys.toml"
    key = KeyStore(keys_file).create("bench", rpm=100_000_000, tpm=10**12,
                                     max_concurrent=100_000)
    headers = {"authorization": f"Bearer {key.secret}"}
    redis_process, redis_url = start_redis(the_lab, other_cpu)
    rows: list[Row] = []
    base_a1 = base_a64 = None
    try:
        for name, plugins, storage in [BARE, *(targets or POLICIES)]:
            port = free_port()
            config = the_lab.workdir / f"policies-{len(rows)}.toml"
            base = gateway_config(upstream.url, port)
            config.write_text(policy_config(
                base, plugins, redis_url if storage == "redis" else storage, keys_file))
            proc = the_lab.serve(f"policies-{len(rows)}", config, port, cpu=gateway_cpu)
            print(name, file=sys.stderr)
            a1, _ = measure(proc, headers, 1, 5 * scale)
            a64, cpu64 = measure(proc, headers, 64, 8 * scale)
            the_lab.stop(proc)
            if base_a1 is None or base_a64 is None:
                base_a1, base_a64 = a1, (a64, cpu64)
            rows.append((
                name, ms(a1.p(50)), f"+{ms(a1.p(50) - base_a1.p(50))}",
                f"{a64.rps:,.0f}", f"{a64.rps / base_a64[0].rps:.2f}x",
                ms(a64.p(99)), ms(cpu64), f"+{ms(cpu64 - base_a64[1])}",
                str(a1.errors + a64.errors),
            ))
    finally:
        redis_process.kill()
        redis_process.wait(10)
    return rows


HEADER: Row = ("gateway", "A c=1 p50", "vs bare routing", "A c=64 req/s", "vs bare routing",
               "A c=64 p99", "CPU / request", "vs bare routing", "errors")


def main() -> None:
    parser = argparse.ArgumentParser(description="the policy stack's cost per request")
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    parser.add_argument("--stack", choices=("policies", "observability", "all"),
                        default="policies")
    args = parser.parse_args()
    targets = {"policies": POLICIES, "observability": OBSERVABILITY,
               "all": POLICIES + OBSERVABILITY}[args.stack]
    scale = 0.5 if args.quick else 1.0
    run_pinned("benchmarks.policies", HEADER,
               lambda the_lab, upstream, gateway_cpu, other_cpu: scenario_policies(
                   the_lab, upstream, gateway_cpu, other_cpu, scale, targets),
               pin=not args.no_pin, others="load+upstream+redis")

if __name__ == "__main__":
    main()
