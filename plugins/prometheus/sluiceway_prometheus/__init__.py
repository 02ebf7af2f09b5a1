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

from sluiceway.api import Config, EventSinkType, Route, hookimpl

from .endpoint import metrics, sink_of, wants_json
from .multiprocess import ENV, multiprocess_dir, remove_stale_files
from .options import LATENCY_BUCKETS, OVERHEAD_BUCKETS, PrometheusOptions
from .sink import PLUGIN, PrometheusSink, breaker_state, create_sink, load_options

__all__ = [
    "ENV",
    "LATENCY_BUCKETS",
    "OVERHEAD_BUCKETS",
    "PLUGIN",
    "PrometheusOptions",
    "PrometheusSink",
    "breaker_state",
    "create_sink",
    "load_options",
    "metrics",
    "multiprocess_dir",
    "register_event_sinks",
    "register_routes",
    "remove_stale_files",
    "sink_of",
    "wants_json",
]


@hookimpl
def register_event_sinks(register: Callable[[EventSinkType], None]) -> None:
    register(EventSinkType(PLUGIN, create_sink))


@hookimpl
def register_routes(register: Callable[[Route], None], config: Config) -> None:
    public = load_options(config).public  # scrapers without credentials
    register(Route("/metrics", metrics, ("GET",), name="metrics", public=public))
