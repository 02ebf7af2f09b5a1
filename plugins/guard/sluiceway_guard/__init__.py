"""sluiceway plugin ``guard``: the abuse guard.

* An address that fails authentication ``max_failed_auth`` times within
  ``failed_auth_window`` is banned for ``ban_for``: every request from it gets
  403 ``ip_banned`` before auth runs (health routes excepted).
* A key that sends more than ``burst_rps`` model calls per second is blocked
  for ``block_for``: 429 ``burst_limit_exceeded`` (a call policy).

Enable it after the auth plugin (and before ``limits``) in plugins.toml::

    [gateway]
    plugins = ["openai", "api-keys", "guard", "limits"]

    [plugin.guard]
    max_failed_auth = 10
    failed_auth_window = "5m"
    ban_for = "15m"
    burst_rps = 50
    block_for = "5m"
    trusted_proxies = ["10.0.0.0/8"]     # whose X-Forwarded-For is believed
    storage = "redis://127.0.0.1:6379/0" # shared between processes; default "memory://"

:class:`AbuseGuard` also wraps any ASGI app of your own, counting its 401
responses as failed authentications.
"""

from __future__ import annotations

from collections.abc import Callable

from sluiceway.api import CallPolicyType, Middleware, hookimpl

from .burst import BurstPolicy, create_burst_policy
from .client_ip import ClientAddress, parse_address
from .middleware import (
    AbuseGuard,
    create_ip_guard,
    create_store,
    load_options,
)
from .options import GuardOptions
from .redis_store import RedisGuardStore
from .store import Burst, GuardStore, MemoryGuardStore

__all__ = [
    "AbuseGuard",
    "Burst",
    "BurstPolicy",
    "ClientAddress",
    "GuardOptions",
    "GuardStore",
    "MemoryGuardStore",
    "RedisGuardStore",
    "create_burst_policy",
    "create_ip_guard",
    "create_store",
    "load_options",
    "parse_address",
    "register_call_policies",
    "register_middleware",
]


@hookimpl
def register_middleware(register: Callable[[Middleware], None]) -> None:
    register(Middleware("guard:ip", create_ip_guard, slot="before_auth"))


@hookimpl
def register_call_policies(register: Callable[[CallPolicyType], None]) -> None:
    register(CallPolicyType("guard:burst", create_burst_policy,
                            description="blocks a key that sends bursts of calls"))
