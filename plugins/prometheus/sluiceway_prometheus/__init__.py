"""sluiceway plugin ``prometheus``: metrics for Prometheus, and the JSON stats.

* An event sink keeps prometheus_client metrics from the gateway's lifecycle
  events: requests, errors, latency, upstream latency, time to first token,
  gateway overhead, tokens, cost, limit refusals, retries, fallbacks; and reads
  requests in flight, pools and breaker states when scraped.
* ``GET /metrics`` renders them in the Prometheus text format, or returns the
  gateway's JSON stats (``gateway.stats.snapshot``) on ``Accept: application/json``.

Enable it in plugins.toml::

    [gateway]
    plugins = ["openai", "api-keys", "limits", "prometheus"]

    [plugin.prometheus]
    public = false        # true: /metrics without credentials

With ``sluiceway serve --workers N``, set ``PROMETHEUS_MULTIPROC_DIR`` to an empty
directory in the environment that starts the gateway (see the README).
"""

from __future__ import annotations

from collections.abc import Callable

from sluiceway import EventSinkType, Middleware, Route, hookimpl

from .endpoint import PublicMetrics, create_public_metrics, metrics, sink_of, wants_json
from .multiprocess import ENV, multiprocess_dir, remove_stale_files
from .options import LATENCY_BUCKETS, OVERHEAD_BUCKETS, PrometheusOptions
from .sink import PLUGIN, PrometheusSink, breaker_state, create_sink

__all__ = [
    "ENV",
    "LATENCY_BUCKETS",
    "OVERHEAD_BUCKETS",
    "PLUGIN",
    "PrometheusOptions",
    "PrometheusSink",
    "PublicMetrics",
    "breaker_state",
    "create_public_metrics",
    "create_sink",
    "metrics",
    "multiprocess_dir",
    "register_event_sinks",
    "register_middleware",
    "register_routes",
    "remove_stale_files",
    "sink_of",
    "wants_json",
]


@hookimpl
def register_event_sinks(register: Callable[[EventSinkType], None]) -> None:
    register(EventSinkType(PLUGIN, create_sink))


@hookimpl
def register_routes(register: Callable[[Route], None]) -> None:
    register(Route("/metrics", metrics, ("GET",), name="metrics"))


@hookimpl
def register_middleware(register: Callable[[Middleware], None]) -> None:
    register(Middleware("prometheus:public", create_public_metrics, slot="before_auth"))
