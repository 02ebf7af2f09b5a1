"""sluiceway call policy ``limits``: requests and tokens per minute, and requests in
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
create --rpm ...``) take precedence over the defaults. Every model call is
limited (chat completions, messages); counting tokens is not. Limits live in this process's memory,
or with ``storage = "redis://host:port/db"`` in Redis, shared between processes.
"""

from __future__ import annotations

from collections.abc import Callable

from sluiceway.api import CallPolicyType, hookimpl

from .ledger import Admission, Ledger, LimiterLedger
from .limiter import (
    ConcurrencyLimiter,
    Decision,
    InMemoryConcurrency,
    Limiter,
    SlidingWindowCounter,
)
from .moving_window import MovingWindow, RedisMovingWindow
from .own_app import RateLimit, client_address
from .policy import LimitsOptions, LimitsPolicy, create_policy, format_duration
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
    "LimitsOptions",
    "LimitsPolicy",
    "MovingWindow",
    "RateLimit",
    "RedisConcurrency",
    "RedisLedger",
    "RedisLimiter",
    "RedisMovingWindow",
    "RedisStore",
    "SlidingWindowCounter",
    "client_address",
    "create_policy",
    "format_duration",
    "register_call_policies",
]


@hookimpl
def register_call_policies(register: Callable[[CallPolicyType], None]) -> None:
    register(CallPolicyType("limits", create_policy,
                            description="requests and tokens per window, requests in flight"))
