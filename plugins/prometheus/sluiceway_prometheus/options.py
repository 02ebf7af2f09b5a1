"""``[plugin.prometheus]``: the exporter's options, validated like every sluiceway table."""

from __future__ import annotations

import itertools
import math

import msgspec

from sluiceway.api import Duration

__all__ = ["LATENCY_BUCKETS", "OVERHEAD_BUCKETS", "PrometheusOptions"]

# Seconds. LLM calls take from tens of milliseconds (a cached answer, a refusal)
# to minutes (a long stream), so the buckets span four orders of magnitude.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
# The gateway's own share of a request: tens of microseconds when all is well.
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                    0.25, 1.0)


class PrometheusOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[plugin.prometheus]``."""

    # GET /metrics without credentials (for scrapers that have none). Off: the
    # route goes through the [auth] chain like any other.
    public: bool = False
    # Label requests, tokens, cost and limit refusals with the caller's key id.
    # Turn it off when there are many keys: every key multiplies those series.
    key_label: bool = True
    # Upper bounds of the request, upstream and time-to-first-token histograms.
    latency_buckets: list[float] = msgspec.field(default_factory=lambda: list(LATENCY_BUCKETS))
    # Upper bounds of the gateway overhead histogram.
    overhead_buckets: list[float] = msgspec.field(default_factory=lambda: list(OVERHEAD_BUCKETS))
    # With several worker processes: how often each one publishes its gauges
    # (in flight, pools, breakers) for the others to report.
    refresh_interval: Duration = Duration(1)

    def __post_init__(self) -> None:
        for name in ("latency_buckets", "overhead_buckets"):
            bounds: list[float] = getattr(self, name)
            if not bounds:
                raise ValueError(f"{name} must list at least one bound")
            if not all(math.isfinite(b) and b > 0 for b in bounds):
                raise ValueError(f"{name} must be finite numbers of seconds above 0")
            if any(a >= b for a, b in itertools.pairwise(bounds)):
                raise ValueError(f"{name} must be in increasing order")
        if not self.refresh_interval > 0:
            raise ValueError("refresh_interval must be longer than 0s")
