"""The ``limits`` call policy: requests and tokens per window, and requests in flight.

Each model call, when admitted: takes a slot of ``max_concurrent``; reserves
one request against ``rpm``; reserves its estimated tokens against ``tpm``
(the core's prompt estimate plus the output it may produce). When settled: the
token reservation is trued up with the call's usage and the slot is freed. A
refusal at any step gives back what earlier steps took and raises
:class:`sluiceway.RateLimited`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import Annotated, Any, Literal

import msgspec

from sluiceway.api import (
    Duration,
    Gateway,
    LimitDecided,
    ModelCall,
    RateLimited,
    Settle,
    check_storage_url,
    format_duration,
    validate_options,
)

from .ledger import Admission, Ledger, LimiterLedger
from .limiter import (
    ConcurrencyLimiter,
    Decision,
    InMemoryConcurrency,
    Limiter,
    SlidingWindowCounter,
)
from .moving_window import MovingWindow, RedisMovingWindow
from .redis_ledger import RedisLedger
from .redis_store import RedisConcurrency, RedisLimiter, RedisStore

__all__ = [
    "LimitsOptions",
    "LimitsPolicy",
    "create_policy",
    "format_duration",
    "rate_limit_headers",
    "refusal",
]


PLUGIN = "limits"
ANONYMOUS = "anonymous"


_Limit = Annotated[int, msgspec.Meta(ge=0)]


class LimitsOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[plugin.limits]``."""

    # For principals without their own rpm / tpm attribute; None: no limit.
    default_rpm: _Limit | None = None
    default_tpm: _Limit | None = None
    # The output a request is assumed to produce when it sets no max_tokens.
    default_max_tokens: Annotated[int, msgspec.Meta(ge=1)] = 1024
    window: Duration = Duration(60)
    # How requests per window are counted; tokens always use the sliding-window counter.
    rpm_strategy: Literal["sliding-window-counter", "moving-window"] = "sliding-window-counter"
    # "memory://" (this process) or "redis://host:port/db" (shared between processes).
    storage: str = "memory://"
    key_prefix: str = "sluiceway:limits:"
    # How long a Redis concurrency slot outlives a process that died holding it.
    lease_ttl: Duration = Duration(300)
    # Redis unreachable: "open" falls back to in-memory limits, "closed" answers 503.
    on_storage_error: Literal["open", "closed"] = "open"

    def __post_init__(self) -> None:
        if not self.window > 0:
            raise ValueError("window must be longer than 0s")
        if not self.lease_ttl > 0:
            raise ValueError("lease_ttl must be longer than 0s")
        check_storage_url(self.storage)


def _limit(attributes: Mapping[str, Any], name: str, default: int | None) -> int | None:
    value = attributes.get(name)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return default


class _Headers:
    """The ``x-ratelimit-*`` headers of one request, for the limits that apply."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def set(self, kind: str, limit: int, decision: Decision) -> None:
        self.values[f"x-ratelimit-limit-{kind}"] = str(limit)
        self.values[f"x-ratelimit-remaining-{kind}"] = str(decision.remaining)
        self.values[f"x-ratelimit-reset-{kind}"] = format_duration(decision.reset_after)

    def raw(self) -> list[tuple[bytes, bytes]]:
        return [(name.encode(), value.encode()) for name, value in self.values.items()]


class LimitsPolicy:
    """Enforces rpm, tpm and max_concurrent per principal on every model call
    (chat completions, messages, responses, embeddings). Each call is one
    ``admit`` and one ``finish`` on the ledger."""

    kinds = frozenset({"chat", "messages", "responses", "embeddings"})

    def __init__(
        self,
        options: LimitsOptions,
        *,
        ledger: Ledger | None = None,
        limiter: Limiter | None = None,
        concurrency: ConcurrencyLimiter | None = None,
        request_limiter: Limiter | None = None,
        store: RedisStore | None = None,
        name: str = PLUGIN,
    ) -> None:
        self.name = name
        self.store = store
        self.options = options
        self.window = float(options.window)
        if ledger is None:
            # Tokens (and requests, unless request_limiter is given).
            tokens = limiter if limiter is not None else SlidingWindowCounter()
            if request_limiter is None and options.rpm_strategy == "moving-window":
                request_limiter = MovingWindow()
            ledger = LimiterLedger(
                request_limiter if request_limiter is not None else tokens, tokens,
                concurrency if concurrency is not None else InMemoryConcurrency(),
            )
        self.ledger: Ledger = ledger

    def lifespan(self) -> AbstractAsyncContextManager[None]:
        """Entered by the gateway at startup: closes the Redis client (opened on
        first use, in the serving loop) at shutdown."""
        if self.store is not None:
            return self.store.lifespan()
        return contextlib.nullcontext()

    async def admit(self, call: ModelCall) -> Settle | None:
        """Take a concurrency slot, one request and the estimated tokens, or
        refuse with 429; the settlement trues the tokens up with the usage."""
        principal = call.principal
        key = principal.key_id if principal is not None else ANONYMOUS
        attributes: Mapping[str, Any] = principal.attributes if principal is not None else {}
        options = self.options
        rpm = _limit(attributes, "rpm", options.default_rpm)
        tpm = _limit(attributes, "tpm", options.default_tpm)
        max_concurrent = _limit(attributes, "max_concurrent", None)
        if rpm is None and tpm is None and max_concurrent is None:
            return None
        window = self.window
        estimate = 0
        if tpm is not None:
            output = call.max_output_tokens
            estimate = call.estimated_input_tokens + (
                options.default_max_tokens if output is None else output)
        admission = await self.ledger.admit(key, rpm=rpm, tpm=tpm,
                                            max_concurrent=max_concurrent,
                                            estimate=estimate, window=window)
        headers = call.headers
        if rpm is not None and admission.requests is not None:
            rate_limit_headers(headers, "requests", rpm, admission.requests)
        if tpm is not None and admission.tokens is not None:
            rate_limit_headers(headers, "tokens", tpm, admission.tokens)
        if admission.refused is not None:
            raise self._refused(call, key, admission, rpm, tpm, max_concurrent, estimate)
        _decided(call, "all", True, key)
        ledger = self.ledger

        async def settle(call: ModelCall) -> None:
            usage = call.usage
            if usage is not None:
                delta = usage.total_tokens - estimate
            elif call.error is not None and call.error.kind == "client":
                # Refused before any upstream spent tokens on it (an upstream 400...).
                delta = -estimate
            else:
                delta = 0  # no usage came: the estimate stays charged
            if tpm is None:
                delta = 0
            tokens = await ledger.finish(key, admission, tokens_delta=delta, tpm=tpm,
                                         window=window, release=True)
            if tokens is not None and tpm is not None:
                rate_limit_headers(call.headers, "tokens", tpm, tokens)

        return settle

    def _refused(
        self, call: ModelCall, key: str, admission: Admission,
        rpm: int | None, tpm: int | None, max_concurrent: int | None, estimate: int,
    ) -> RateLimited:
        window = self.window
        refused = admission.refused
        headers = call.headers
        _decided(call, "tokens" if refused == "tokens_exceed" else str(refused), False, key)
        if refused == "concurrency":
            return RateLimited(
                f"Too many requests in flight for {key}: at most {max_concurrent} at once.",
                code="concurrency_limit_exceeded", retry_after=1, headers=dict(headers),
            )
        if refused == "tokens_exceed":  # waiting cannot help: say so, so SDKs do not retry
            return RateLimited(
                f"This request needs about {estimate} tokens, more than the limit of "
                f"{tpm} tokens per {format_duration(window)} for {key}: "
                "lower max_tokens or shorten the messages.",
                code="tokens_exceed_limit",
                headers={**headers, "x-should-retry": "false"},
            )
        if refused == "requests":
            assert admission.requests is not None
            return refusal(
                f"Rate limit reached for {key}: {rpm} requests per "
                f"{format_duration(window)}.", admission.requests, headers,
            )
        assert admission.tokens is not None
        return refusal(
            f"Rate limit reached for {key}: {tpm} tokens per {format_duration(window)}"
            f" (this request reserves about {estimate}).", admission.tokens, headers,
        )


def rate_limit_headers(headers: dict[str, str], kind: str, limit: int, decision: Decision) -> None:
    """The ``x-ratelimit-*`` headers of one limit."""
    headers[f"x-ratelimit-limit-{kind}"] = str(limit)
    headers[f"x-ratelimit-remaining-{kind}"] = str(decision.remaining)
    headers[f"x-ratelimit-reset-{kind}"] = format_duration(decision.reset_after)


def _decided(call: ModelCall, limit: str, allowed: bool, key: str) -> None:
    """Tell the event sinks (metrics, logs) what the limits decided."""
    if call.events_enabled:
        call.emit(LimitDecided(request_id=call.request_id, policy=PLUGIN, limit=limit,
                               allowed=allowed, key_id=key))


def refusal(message: str, decision: Decision, headers: dict[str, str]) -> RateLimited:
    return RateLimited(
        message, code="rate_limit_exceeded",
        retry_after=max(decision.retry_after, 0.001), headers=dict(headers),
    )


def create_policy(gateway: Gateway) -> LimitsPolicy:
    """The ``factory(gateway)`` of the registered call policy."""
    config = gateway.config
    # Without a storage of its own, the limits live where [state] keeps shared state.
    options = validate_options(
        {"storage": config.shared_storage(), **config.plugin_options(PLUGIN)}, LimitsOptions,
        source=config.source, key=f"plugin.{PLUGIN}",
    )
    if options.storage == "memory://":
        return LimitsPolicy(options)
    store = RedisStore(
        options.storage, key_prefix=options.key_prefix, lease_ttl=float(options.lease_ttl),
        on_storage_error=options.on_storage_error,
    )
    if options.rpm_strategy == "moving-window":
        # The window's entries need their own script: one call per limit.
        ledger: Ledger = LimiterLedger(RedisMovingWindow(store), RedisLimiter(store),
                                       RedisConcurrency(store))
    else:
        ledger = RedisLedger(store)  # two round trips per request
    return LimitsPolicy(options, ledger=ledger, store=store)
