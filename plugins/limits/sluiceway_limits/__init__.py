"""sluiceway middleware ``limits``: requests and tokens per minute, and requests in
flight, per API key.

Enable it after the auth plugin in plugins.toml::

    [gateway]
    plugins = ["openai", "api-keys", "limits"]

    [plugin.limits]
    default_rpm = 600        # keys without their own rpm (None: no limit)
    default_tpm = 200000
    default_max_tokens = 1024
    window = "60s"

Each key's ``rpm``, ``tpm`` and ``max_concurrent`` (set with ``sluiceway keys
create --rpm ...``) take precedence over the defaults. Only
``POST /v1/chat/completions`` is limited. Limits live in this process's memory,
or with ``storage = "redis://host:port/db"`` in Redis, shared between processes.
"""

from __future__ import annotations

from collections.abc import Callable

from sluiceway import Middleware, hookimpl

from .ledger import Admission, Ledger, LimiterLedger
from .limiter import (
    ConcurrencyLimiter,
    Decision,
    InMemoryConcurrency,
    Limiter,
    SlidingWindowCounter,
)
from .middleware import (
    LimitsMiddleware,
    LimitsOptions,
    create_middleware,
    estimate_tokens,
    format_duration,
)
from .moving_window import MovingWindow, RedisMovingWindow
from .own_app import RateLimit, client_address
from .redis_ledger import RedisLedger
from .redis_store import RedisConcurrency, RedisLimiter, RedisStore

__all__ = [
    "Admission",
    "ConcurrencyLimiter",
    "Decision",
    "InMemoryConcurrency",
    "Ledger",
    "Limiter",
    "LimiterLedger",
    "LimitsMiddleware",
    "LimitsOptions",
    "MovingWindow",
    "RateLimit",
    "RedisConcurrency",
    "RedisLedger",
    "RedisLimiter",
    "RedisMovingWindow",
    "RedisStore",
    "SlidingWindowCounter",
    "client_address",
    "create_middleware",
    "estimate_tokens",
    "format_duration",
    "register_middleware",
]


@hookimpl
def register_middleware(register: Callable[[Middleware], None]) -> None:
    register(Middleware("limits", create_middleware, slot="after_auth"))
