"""sluiceway call policy ``cache``: answers replayed from earlier identical requests.

Enable it after auth and the policies that must see every request (limits,
budgets, guardrails), so that they still count and check a request the cache
answers::

    [gateway]
    plugins = ["openai", "api-keys", "limits", "costs", "cache"]

    [plugin.cache]
    ttl = "1h"
    scope = "key"            # or "team", "shared"
    storage = "redis://127.0.0.1:6379/0"   # shared by every instance

Answers carry ``x-sluiceway-cache: hit | miss | bypass``; a request's
``Cache-Control: no-cache`` skips the lookup, ``no-store`` the cache altogether,
``max-age=N`` takes only an entry at most N seconds old. See README.md.
"""

from __future__ import annotations

from collections.abc import Callable

from sluiceway.api import CallPolicyType, hookimpl

from .keys import CacheKeys, Directives, cache_directives
from .options import DEFAULT_IGNORED, PLUGIN, CacheOptions, parse_options
from .policy import CachePolicy, create_policy
from .store import AnswerStore, MemoryAnswers, RedisAnswers

__all__ = [
    "DEFAULT_IGNORED",
    "PLUGIN",
    "AnswerStore",
    "CacheKeys",
    "CacheOptions",
    "CachePolicy",
    "Directives",
    "MemoryAnswers",
    "RedisAnswers",
    "cache_directives",
    "create_policy",
    "parse_options",
    "register_call_policies",
]


@hookimpl
def register_call_policies(register: Callable[[CallPolicyType], None]) -> None:
    register(CallPolicyType(PLUGIN, create_policy, description="response cache"))
