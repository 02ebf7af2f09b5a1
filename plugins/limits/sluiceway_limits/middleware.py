"""The ``limits`` middleware: requests and tokens per window, and requests in flight.

Each chat request, in this order: takes a slot of ``max_concurrent``; reserves
one request against ``rpm``; reserves its estimated tokens against ``tpm``
(prompt estimate plus the output it may produce); runs the endpoint; settles
the token reservation with the usage the core recorded. A refusal at any step
gives back what earlier steps took and raises :class:`sluiceway.RateLimited`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import Annotated, Any, Literal

import msgspec

from sluiceway import (
    CONTEXT_KEY,
    Duration,
    Gateway,
    GatewayError,
    RateLimited,
    RequestContext,
    ServiceUnavailable,
)
from sluiceway.components import ASGIApp, Message, Receive, Scope, Send
from sluiceway.config import validate_options
from sluiceway.events import LimitDecided
from sluiceway.redis_store import check_storage_url
from sluiceway.values import format_duration

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
    "LimitsMiddleware",
    "LimitsOptions",
    "create_middleware",
    "estimate_tokens",
    "format_duration",
]


PLUGIN = "limits"
ANONYMOUS = "anonymous"
# Per message: the role and the separators the chat template adds.
TOKENS_PER_MESSAGE = 4
CHARS_PER_TOKEN = 4


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


def estimate_tokens(body: object, default_max_tokens: int) -> int:
    """A cheap upper-bound guess of a chat request's tokens: the text of its
    messages (and of an Anthropic ``system``) at 4 characters a token (rounded
    up), 4 tokens per message, plus
    ``max_completion_tokens`` / ``max_tokens`` (else ``default_max_tokens``)."""
    if not isinstance(body, Mapping):
        return default_max_tokens
    messages = body.get("messages")
    # Anthropic's Messages API keeps the system prompt outside the messages.
    chars, count = _text_length(body.get("system")), 0
    if isinstance(messages, list):
        for message in messages:
            count += 1
            if isinstance(message, Mapping):
                chars += _text_length(message.get("content"))
    output = default_max_tokens
    for field in ("max_completion_tokens", "max_tokens"):
        value = body.get(field)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            output = value
            break
    return math.ceil(chars / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * count + output


def _text_length(content: object) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        return sum(
            len(part["text"]) for part in content
            if isinstance(part, Mapping) and isinstance(part.get("text"), str)
        )
    return 0


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


class LimitsMiddleware:
    """Enforces rpm, tpm and max_concurrent per principal on the routes that call a
    model. Each request is one ``admit`` and one ``finish`` on the ledger."""

    def __init__(
        self,
        app: ASGIApp,
        options: LimitsOptions,
        *,
        ledger: Ledger | None = None,
        limiter: Limiter | None = None,
        concurrency: ConcurrencyLimiter | None = None,
        request_limiter: Limiter | None = None,
        store: RedisStore | None = None,
    ) -> None:
        self.app = app
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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ctx: RequestContext = scope[CONTEXT_KEY]
        if ctx.route is None or not ctx.route.calls_model:
            await self.app(scope, receive, send)
            return
        principal = ctx.principal
        key = principal.key_id if principal is not None else ANONYMOUS
        attributes: Mapping[str, Any] = principal.attributes if principal is not None else {}
        rpm = _limit(attributes, "rpm", self.options.default_rpm)
        tpm = _limit(attributes, "tpm", self.options.default_tpm)
        max_concurrent = _limit(attributes, "max_concurrent", None)
        if rpm is None and tpm is None and max_concurrent is None:
            await self.app(scope, receive, send)
            return
        window = self.window
        estimate = 0
        if tpm is not None:
            estimate = estimate_tokens(await ctx.json(), self.options.default_max_tokens)
        admission = await self.ledger.admit(key, rpm=rpm, tpm=tpm,
                                            max_concurrent=max_concurrent,
                                            estimate=estimate, window=window)
        headers = _Headers()
        if rpm is not None and admission.requests is not None:
            headers.set("requests", rpm, admission.requests)
        if tpm is not None and admission.tokens is not None:
            headers.set("tokens", tpm, admission.tokens)
        if admission.refused is not None:
            raise self._refused(ctx, key, admission, headers, rpm, tpm, max_concurrent,
                                estimate)
        _decided(ctx, "all", True, key)
        ctx.state[PLUGIN] = {"key": key, "estimate": estimate}
        await self._admitted(scope, receive, send, ctx, key, admission, headers, tpm,
                             estimate)

    def _refused(
        self, ctx: RequestContext, key: str, admission: Admission, headers: _Headers,
        rpm: int | None, tpm: int | None, max_concurrent: int | None, estimate: int,
    ) -> RateLimited:
        window = self.window
        refused = admission.refused
        _decided(ctx, "tokens" if refused == "tokens_exceed" else str(refused), False, key)
        if refused == "concurrency":
            return RateLimited(
                f"Too many requests in flight for {key}: at most {max_concurrent} at once.",
                code="concurrency_limit_exceeded", retry_after=1, headers=headers.values,
            )
        if refused == "tokens_exceed":  # waiting cannot help: say so, so SDKs do not retry
            return RateLimited(
                f"This request needs about {estimate} tokens, more than the limit of "
                f"{tpm} tokens per {format_duration(window)} for {key}: "
                "lower max_tokens or shorten the messages.",
                code="tokens_exceed_limit",
                headers={**headers.values, "x-should-retry": "false"},
            )
        if refused == "requests":
            assert admission.requests is not None
            return _refusal(
                f"Rate limit reached for {key}: {rpm} requests per "
                f"{format_duration(window)}.", admission.requests, headers,
            )
        assert admission.tokens is not None
        return _refusal(
            f"Rate limit reached for {key}: {tpm} tokens per {format_duration(window)}"
            f" (this request reserves about {estimate}).", admission.tokens, headers,
        )

    async def _admitted(
        self, scope: Scope, receive: Receive, send: Send, ctx: RequestContext, key: str,
        admission: Admission, headers: _Headers, tpm: int | None, estimate: int,
    ) -> None:
        ledger, window = self.ledger, self.window
        finished = False

        async def finish(delta: int) -> None:
            nonlocal finished
            finished = True
            tokens = await ledger.finish(key, admission, tokens_delta=delta, tpm=tpm,
                                         window=window, release=True)
            if tokens is not None and tpm is not None:
                headers.set("tokens", tpm, tokens)

        def used() -> int | None:
            usage = ctx.state.get("usage")
            total = usage.get("total_tokens") if isinstance(usage, Mapping) else None
            if isinstance(total, int) and not isinstance(total, bool):
                return total
            return None

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                total = used()
                if total is not None:  # a whole answer: its usage is known already
                    # Only a settlement: never turns the answer into an error
                    # (storage down with on_storage_error = "closed").
                    with contextlib.suppress(ServiceUnavailable):
                        await finish(total - estimate if tpm is not None else 0)
                message["headers"] = [*message.get("headers", ()), *headers.raw()]
            elif not finished and not message.get("more_body", False):
                # A stream's last frame: settle before the client can see the end
                # (and send its next request).
                total = used()
                if total is not None:
                    with contextlib.suppress(ServiceUnavailable):
                        await finish(total - estimate if tpm is not None else 0)
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except GatewayError as exc:
            if not finished and ctx.state.get("usage") is None and exc.kind == "client":
                # Refused before any upstream spent tokens on it (unknown model...).
                with contextlib.suppress(ServiceUnavailable):
                    await finish(-estimate)
            for name, value in headers.values.items():
                exc.headers.setdefault(name, value)
            raise
        finally:
            if not finished:  # no usage came: the estimate stays charged; free the slot
                total = used()
                with contextlib.suppress(ServiceUnavailable):
                    await finish(total - estimate if total is not None and tpm is not None
                                 else 0)


def _decided(ctx: RequestContext, limit: str, allowed: bool, key: str) -> None:
    """Tell the event sinks (metrics, logs) what the limits decided."""
    events = ctx.gateway.events
    if events.enabled:
        events.emit(LimitDecided(request_id=ctx.request_id, policy=PLUGIN, limit=limit,
                                 allowed=allowed, key_id=key))


def _refusal(message: str, decision: Decision, headers: _Headers) -> RateLimited:
    return RateLimited(
        message, code="rate_limit_exceeded",
        retry_after=max(decision.retry_after, 0.001), headers=headers.values,
    )


def create_middleware(app: ASGIApp, gateway: Gateway) -> LimitsMiddleware:
    """The ``factory(app, gateway)`` of the registered middleware."""
    config = gateway.config
    options = validate_options(
        config.plugin_options(PLUGIN), LimitsOptions, source=config.source, key=f"plugin.{PLUGIN}"
    )
    if options.storage == "memory://":
        return LimitsMiddleware(app, options)
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
    return LimitsMiddleware(app, options, ledger=ledger, store=store)
