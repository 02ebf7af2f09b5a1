"""The response cache: what a hit costs against a call that goes upstream.

    python -m benchmarks.cache [--quick] [--no-pin] [--redis] [--semantic]

Three targets, each ``sluiceway serve`` with the ``openai`` provider pointed at
the mock upstream, pinned to one core (load generator and upstream on the
other): the gateway without the cache, the gateway with the cache where every
request misses (``Cache-Control: no-cache``: looked up never, recorded and
kept every time), and where every request hits (one entry, warmed first).
Measured whole (A c=1 p50, A c=64 req/s and CPU per request) and streamed
(C c=16 TTFB). ``--redis`` keeps the entries in a private redis-server as well;
``--semantic`` adds semantic hits: warmed with one prompt, asked in other words
(an exact miss found by meaning), with the prompt's embedding itself cached or
made upstream on every request.
The direct call to the upstream is the baseline for each ratio.
"""

from __future__ import annotations

import argparse
import json
import sys

from .__main__ import BODY, PATH, STREAM_BODY, Row, ms
from .load import LoadResult, http_load, run
from .pinned import run_pinned
from .policies import start_redis
from .processes import Lab, Proc, free_port, gateway_config

# name, storage ("none": no cache), request headers, semantic mode (None: off;
# "cached": the prompt's embedding is itself cached; "uncached": embedded upstream
# on every request).
Target = tuple[str, str | None, dict[str, str], str | None]
# Another wording of BODY's prompt: an exact miss, found by meaning.
PARAPHRASE = json.dumps({**json.loads(BODY), "messages": [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello, in five words."}]}).encode()


def cache_config(base: str, storage: str | None, semantic: str | None = None) -> str:
    config = base.replace('plugins = ["openai"]', 'plugins = ["openai", "cache"]')
    config += f'\n[plugin.cache]\nstorage = "{storage or "memory://"}"\n'
    if semantic is None:
        return config
    config = config.replace('upstream = "mock-model" }]',
                            'upstream = "mock-model" }, "embed-bench"]')
    if semantic == "uncached":
        config += 'kinds = ["chat"]\n'
    # The bench upstream gives every text the same vector: any threshold finds it.
    return config + '\n[plugin.cache.semantic]\nmodel = "embed-bench"\nthreshold = 0.9\n'


def measure(proc: Proc, headers: dict[str, str], concurrency: int, duration: float,
            *, stream: bool = False, body: bytes | None = None) -> tuple[LoadResult, float]:
    """The load's result and the target's CPU seconds per request; ``body`` is
    the whole request's (the stream's is the same with ``"stream": true``)."""
    if body is not None:
        body = json.dumps({**json.loads(body), "stream": True}).encode() if stream else body
    before = proc.cpu_seconds()
    result: LoadResult = run(http_load(proc.url + PATH,
                                       body or (STREAM_BODY if stream else BODY),
                                       concurrency=concurrency, duration=duration,
                                       headers=headers, stream=stream))
    used = proc.cpu_seconds() - before
    print(f"  {proc.name:<28} c={concurrency:<3} {result.summary()}", file=sys.stderr)
    return result, used / max(result.requests, 1)


def scenario_cache(the_lab: Lab, upstream: Proc, gateway_cpu: int | None, other_cpu: int | None,
                   scale: float, redis: bool, semantic: bool = False) -> list[Row]:
    redis_process = None
    storages: list[tuple[str, str | None]] = [("memory", None)]
    if redis:
        redis_process, url = start_redis(the_lab, other_cpu)
        storages.append(("redis", url))
    rows: list[Row] = []
    try:
        direct1, _ = measure(upstream, {}, 1, 5 * scale)
        direct64, _ = measure(upstream, {}, 64, 8 * scale)
        direct_stream, _ = measure(upstream, {}, 16, 5 * scale, stream=True)
        rows.append(("direct", ms(direct1.p(50)), "", f"{direct64.rps:,.0f}", "", "—",
                     ms(direct_stream.ttfb(50)), str(direct1.errors + direct64.errors)))
        targets: list[Target] = [("no cache", "none", {}, None)]
        for label, storage in storages:
            targets += [(f"cache ({label}), every request a miss", storage,
                         {"cache-control": "no-cache"}, None),
                        (f"cache ({label}), every request a hit", storage, {}, None)]
        if semantic:
            targets += [("semantic hit, embedding cached", None, {}, "cached"),
                        ("semantic hit, embedded upstream", None, {}, "uncached")]
        for index, (name, storage, headers, mode) in enumerate(targets):
            port = free_port()
            config = the_lab.workdir / f"cache-{index}.toml"
            base = gateway_config(upstream.url, port)
            config.write_text(base if storage == "none" else cache_config(base, storage, mode))
            proc = the_lab.serve(f"cache-{index}", config, port, cpu=gateway_cpu)
            print(name, file=sys.stderr)
            if storage != "none" and not headers:
                measure(proc, {}, 1, 0.2)  # warm the one entry of each shape
                measure(proc, {}, 1, 0.2, stream=True)
            # A semantic target is asked in other words than it was warmed with.
            body = PARAPHRASE if mode is not None else None
            a1, _ = measure(proc, headers, 1, 5 * scale, body=body)
            a64, cpu64 = measure(proc, headers, 64, 8 * scale, body=body)
            streamed, _ = measure(proc, headers, 16, 5 * scale, stream=True, body=body)
            the_lab.stop(proc)
            rows.append((
                name, ms(a1.p(50)), f"+{ms(a1.p(50) - direct1.p(50))}",
                f"{a64.rps:,.0f}", f"{a64.rps / direct64.rps:.2f}x", ms(cpu64),
                ms(streamed.ttfb(50)), str(a1.errors + a64.errors + streamed.errors),
            ))
    finally:
        if redis_process is not None:
            redis_process.kill()
            redis_process.wait(10)
    return rows


HEADER: Row = ("target", "A c=1 p50", "vs direct", "A c=64 req/s", "vs direct",
               "CPU / request", "C c=16 TTFB p50", "errors")


def main() -> None:
    parser = argparse.ArgumentParser(description="the response cache's hit against a miss")
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    parser.add_argument("--redis", action="store_true", help="also with entries in Redis")
    parser.add_argument("--semantic", action="store_true",
                        help="also semantic hits (a paraphrase of the kept prompt)")
    args = parser.parse_args()
    scale = 0.5 if args.quick else 1.0
    run_pinned("benchmarks.cache", HEADER, lambda the_lab, upstream, gateway_cpu, other_cpu:
               scenario_cache(the_lab, upstream, gateway_cpu, other_cpu, scale, args.redis,
                              args.semantic),
               pin=not args.no_pin, others="load+upstream(+redis)")

if __name__ == "__main__":
    main()
