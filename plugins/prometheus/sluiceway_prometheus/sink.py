"""The event sink: prometheus_client metrics kept from the gateway's lifecycle events.

One :class:`PrometheusSink` per gateway, with its own ``CollectorRegistry``, so
two gateways in one process never share a series. Counters and histograms are
updated from events as they happen; gauges (in flight, pools, breakers) are
read from the gateway's live state when scraped, so requests pay nothing for
them. With several worker processes each worker also publishes its gauges every
``refresh_interval``, since the worker that answers a scrape cannot read the
others' memory.

``handle`` runs on the event loop for every event: it looks the labelled child
up in a dict of its own (``labels()`` validates its arguments on every call)
and increments it in memory, or, in multiprocess mode, in a memory-mapped file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from sluiceway.api import (
    AttemptEnded,
    AuthDecided,
    Config,
    Event,
    FirstToken,
    Gateway,
    LimitDecided,
    PolicyDecided,
    RequestEnded,
    SessionLogin,
    validate_options,
)

from .multiprocess import multiprocess_dir, remove_stale_files
from .options import PrometheusOptions

__all__ = ["PLUGIN", "PrometheusSink", "create_sink"]

PLUGIN = "prometheus"
PREFIX = "sluiceway_"

log = logging.getLogger("sluiceway.prometheus")

# RequestEnded.usage keys, and the ``kind`` label of each.
_TOKEN_KINDS = (
    ("prompt_tokens", "prompt"),
    ("completion_tokens", "completion"),
    ("cached_tokens", "cached"),
    ("reasoning_tokens", "reasoning"),
)
# Breaker states, one series each (the current one is 1).
STATES = ("closed", "open", "half_open")


class _Family:
    """A labelled metric and its children, looked up by label values in a dict.

    With ``key_label`` off, a family that would carry ``key_id`` does not: callers
    still pass the key id last, and it is dropped."""

    __slots__ = ("children", "drop_key", "metric")

    def __init__(self, metric: Any, *, drop_key: bool = False) -> None:
        self.metric = metric
        self.drop_key = drop_key
        self.children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self.children.get(values)
        if child is None:
            labels = values[:-1] if self.drop_key else values
            child = self.children[values] = self.metric.labels(*labels)
        return child


class _Ended:
    """The children a finished request with one set of labels updates."""

    __slots__ = ("duration", "overhead", "requests", "tokens")

    def __init__(self, requests: Any, duration: Any, overhead: Any) -> None:
        self.requests = requests
        self.duration = duration
        self.overhead = overhead
        self.tokens: dict[str, Any] = {}


class PrometheusSink:
    """Receives every event of one gateway and keeps its metrics.

    ``registry`` holds the metrics themselves; ``exposed`` is what ``/metrics``
    renders: the same registry, or, with workers, a registry that sums every
    worker's files."""

    def __init__(self, gateway: Gateway, options: PrometheusOptions,
                 directory: str | None = None) -> None:
        self.gateway = gateway
        self.options = options
        self.directory = directory
        self.registry = CollectorRegistry(auto_describe=True)
        if directory is None:
            self.exposed = self.registry
        else:
            self.exposed = CollectorRegistry(auto_describe=True)
            MultiProcessCollector(self.exposed, path=directory)  # type: ignore[no-untyped-call]
        self._build_metrics(options)
        self._ended: dict[tuple[str, str, str, int, str], _Ended] = {}
        self._handlers: dict[type[Event], Callable[[Any], None]] = {
            RequestEnded: self._request_ended,
            AttemptEnded: self._attempt_ended,
            FirstToken: self._first_token,
            LimitDecided: self._limit_decided,
            PolicyDecided: self._policy_decided,
            AuthDecided: self._auth_decided,
            SessionLogin: self._session_login,
        }
        # Gauges: every route name (and "" for paths that match none) always has a series.
        self._routes = sorted({r.item.name for r in gateway.registry.routes} | {""})

    # -- metrics -----------------------------------------------------------

    def _build_metrics(self, options: PrometheusOptions) -> None:
        registry = self.registry
        drop = not options.key_label
        key: tuple[str, ...] = () if drop else ("key_id",)
        latency = tuple(options.latency_buckets)

        def counter(name: str, doc: str, labels: Sequence[str], keyed: bool = False) -> _Family:
            metric = Counter(PREFIX + name, doc, [*labels, *(key if keyed else ())],
                             registry=registry)
            return _Family(metric, drop_key=keyed and drop)

        def histogram(name: str, doc: str, labels: Sequence[str],
                      buckets: Sequence[float]) -> _Family:
            return _Family(Histogram(PREFIX + name, doc, list(labels), registry=registry,
                                     buckets=buckets))

        def gauge(name: str, doc: str, labels: Sequence[str]) -> _Family:
            # "livesum": with workers, the sum over the workers that are running.
            return _Family(Gauge(PREFIX + name, doc, list(labels), registry=registry,
                                 multiprocess_mode="livesum"))

        self.requests = counter(
            "requests", "Requests answered, by route, model, provider and HTTP status.",
            ("route", "model", "provider", "status"), keyed=True)
        self.errors = counter(
            "request_errors", "Requests that ended in an error response, by its type and code"
            " (refusals, drops, upstream failures).", ("route", "status", "type", "code"))
        self.disconnects = counter(
            "client_disconnects", "Requests whose client went away before the end.", ("route",))
        self.duration = histogram(
            "request_duration_seconds", "Arrival to last byte.",
            ("route", "model", "provider"), latency)
        self.overhead = histogram(
            "gateway_overhead_seconds", "The gateway's own share of a request that reached an"
            " upstream: its duration less the time spent on upstreams.", ("route",),
            tuple(options.overhead_buckets))
        self.upstream = histogram(
            "upstream_latency_seconds", "One upstream call, to its answer (for a stream, to"
            " its first chunk); outcome is ok or error.",
            ("provider", "deployment", "outcome"), latency)
        self.upstream_errors = counter(
            "upstream_errors", "Failed upstream calls, by failure kind and the status of"
            " the failure (502, 504, 429...).", ("provider", "deployment", "kind", "status"))
        self.retries = counter(
            "upstream_retries", "Calls sent again to the same provider, by the failure that"
            " caused them.", ("provider", "reason"))
        self.fallbacks = counter(
            "upstream_fallbacks", "Requests moved from this provider to another target, by the"
            " failure that caused it.", ("provider", "reason"))
        self.ttft = histogram(
            "time_to_first_token_seconds", "Arrival to the first streamed chunk sent to the"
            " client.", ("model", "provider"), latency)
        self.tokens = counter(
            "tokens", "Tokens by kind: prompt, completion, cached (part of prompt), reasoning"
            " (part of completion).", ("kind", "model", "provider"), keyed=True)
        self.cost = counter(
            "cost_usd", "Cost of requests in US dollars, where a price is known.",
            ("model", "provider"), keyed=True)
        self.limit_refusals = counter(
            "limit_refusals", "Requests a policy refused, by policy and limit.",
            ("policy", "limit"), keyed=True)
        self.policy_decisions = counter(
            "policy_decisions", "What call policies did, by policy, rule, action and stage:"
            " the cache's hit, miss, bypass and stored; a guardrail's block, redact and flag"
            " (counted per match).", ("policy", "rule", "action", "stage"))
        self.auth_failures = counter(
            "auth_failures", "Requests the auth chain refused, by error code.", ("code",))
        self.session_logins = counter(
            "session_logins", "Logins of web-login providers for their session, by reason"
            " (absent, expired, refresh, rejected, warm, forced) and outcome (ok, failed).",
            ("provider", "reason", "outcome"))
        self.session_login_duration = histogram(
            "session_login_duration_seconds", "How long a provider's login took.",
            ("provider", "outcome"), (0.5, 1, 2.5, 5, 10, 30, 60, 120))
        self.in_flight = gauge(
            "requests_in_flight", "Requests in flight (the scrape itself included).", ("route",))
        self.pool_active = gauge(
            "pool_active", "Upstream calls holding a slot of the provider's pool.", ("provider",))
        self.pool_queued = gauge(
            "pool_queued", "Requests waiting for a slot of the provider's pool.", ("provider",))
        self.pool_slots = gauge(
            "pool_slots", "The provider's concurrency: slots of its pool.", ("provider",))
        self.breaker = gauge(
            "deployment_state", "Circuit breaker state of each deployment (provider/upstream"
            " model): 1 for the current state. open: cooling down after failures;"
            " half_open: the next request is a probe. With workers, the number of workers"
            " in that state.", ("provider", "deployment", "state"))

    # -- events ------------------------------------------------------------

    def handle(self, event: Event) -> None:
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)

    def _request_ended(self, event: RequestEnded) -> None:
        route = event.route or ""
        model = event.model or ""
        provider = event.provider or ""
        key = event.key_id or ""
        # One lookup for the children every answered request touches.
        labels = (route, model, provider, event.status, key)
        children = self._ended.get(labels)
        if children is None:
            children = self._ended[labels] = self._children(labels)
        children.requests.inc()
        children.duration.observe(event.duration)
        if event.overhead is not None:
            children.overhead.observe(event.overhead)
        usage = event.usage
        if usage:
            tokens = children.tokens
            for field, kind in _TOKEN_KINDS:
                count = usage.get(field)
                if count:
                    child = tokens.get(kind)
                    if child is None:
                        child = tokens[kind] = self.tokens(kind, model, provider, key)
                    child.inc(count)
        if event.cost is not None:
            self.cost(model, provider, key).inc(event.cost)
        if event.error_type is not None:
            self.errors(route, str(event.status), event.error_type, event.error_code or "").inc()
        if event.disconnected:
            self.disconnects(route).inc()

    def _children(self, labels: tuple[str, str, str, int, str]) -> _Ended:
        route, model, provider, status, key = labels
        return _Ended(
            self.requests(route, model, provider, str(status), key),
            self.duration(route, model, provider),
            self.overhead(route),
        )

    def _attempt_ended(self, event: AttemptEnded) -> None:
        provider = event.provider
        error = event.error
        if error is None:
            self.upstream(provider, event.deployment, "ok").observe(event.latency)
            return
        self.upstream(provider, event.deployment, "error").observe(event.latency)
        self.upstream_errors(provider, event.deployment, error, str(event.status)).inc()
        step = event.next
        if step == "retry":
            self.retries(provider, error).inc()
        elif step == "fallback":
            self.fallbacks(provider, error).inc()

    def _first_token(self, event: FirstToken) -> None:
        self.ttft(event.model, event.provider).observe(event.ttft)

    def _limit_decided(self, event: LimitDecided) -> None:
        if not event.allowed:
            self.limit_refusals(event.policy, event.limit, event.key_id or "").inc()

    def _policy_decided(self, event: PolicyDecided) -> None:
        self.policy_decisions(event.policy, event.rule, event.action, event.stage).inc(
            event.count)

    def _session_login(self, event: SessionLogin) -> None:
        self.session_logins(event.provider, event.reason, event.outcome).inc()
        self.session_login_duration(event.provider, event.outcome).observe(event.duration)

    def _auth_decided(self, event: AuthDecided) -> None:
        if not event.allowed:
            self.auth_failures(event.code or "").inc()

    # -- gauges ------------------------------------------------------------

    def refresh(self) -> None:
        """Set the gauges from the gateway's live state: requests in flight by route,
        each provider's pool, each deployment's breaker."""
        gateway = self.gateway
        counts = dict.fromkeys(self._routes, 0)
        for ctx in tuple(gateway.inflight):
            name = ctx.route.name if ctx.route is not None else ""
            counts[name] = counts.get(name, 0) + 1
        for name, count in counts.items():
            self.in_flight(name).set(count)
        now = time.monotonic()
        pools: dict[str, Any] = {}
        seen: set[tuple[str, str]] = set()
        for group in gateway.router.groups():
            for deployment in group.deployments:
                provider = deployment.provider_name
                pools.setdefault(provider, deployment.pool)
                name = f"{provider}/{deployment.upstream_model}"
                if (provider, name) in seen:
                    continue  # one health per provider and upstream model
                seen.add((provider, name))
                state = breaker_state(deployment.health, now)
                for candidate in STATES:
                    self.breaker(provider, name, candidate).set(1 if candidate == state else 0)
        for provider, pool in pools.items():
            self.pool_active(provider).set(pool.active)
            self.pool_queued(provider).set(pool.waiting)
            self.pool_slots(provider).set(pool.concurrency)

    # -- lifespan ----------------------------------------------------------

    def lifespan(self) -> AbstractAsyncContextManager[None]:
        """Entered at startup: with workers, publishes this worker's gauges every
        ``refresh_interval`` until shutdown, then withdraws them."""
        return self._lifespan()

    @contextlib.asynccontextmanager
    async def _lifespan(self) -> AsyncIterator[None]:
        if self.directory is None:
            yield
            return
        self.refresh()  # published before this worker serves its first request
        task = asyncio.create_task(self._publish(), name="sluiceway-prometheus-gauges")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            # This worker's gauges leave the sums; its counters stay in them.
            mark_process_dead(os.getpid(), self.directory)  # type: ignore[no-untyped-call]

    async def _publish(self) -> None:
        interval = float(self.options.refresh_interval)
        while True:
            try:
                self.refresh()
            except Exception:
                log.exception("prometheus: could not publish this worker's gauges")
            await asyncio.sleep(interval)


def breaker_state(health: Any, now: float) -> str:
    """``open`` while cooling down; an open breaker whose cooldown is over lets the
    next request through as a probe, so it is reported ``half_open``."""
    state: str = health.state
    if state == "open" and now >= health.open_until:
        return "half_open"
    return state


def load_options(config: Config) -> PrometheusOptions:
    """``[plugin.prometheus]``, validated; a ``ConfigError`` names a bad key."""
    return validate_options(config.plugin_options(PLUGIN), PrometheusOptions,
                            source=config.source, key=f"plugin.{PLUGIN}")


def create_sink(gateway: Gateway) -> PrometheusSink:
    """The ``factory(gateway)`` of the registered event sink: validates
    ``[plugin.prometheus]`` and checks multiprocess mode (a ``StartupError`` when
    several workers would each count alone)."""
    config = gateway.config
    options = load_options(config)
    directory = multiprocess_dir(config.server.workers)
    if directory is not None:
        removed = remove_stale_files(directory)
        if removed:
            log.info("prometheus: removed %d file(s) of processes that no longer run from %s",
                     len(removed), directory)
    return PrometheusSink(gateway, options, directory)
