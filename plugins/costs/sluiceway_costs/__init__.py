"""sluiceway call policy ``costs``: the cost of each request from a price table,
and spend budgets per API key.

Enable it after the auth plugin (and before ``limits``, so that a key over its
budget is refused before it takes a rate-limit slot)::

    [gateway]
    plugins = ["openai", "api-keys", "costs", "limits"]

    [plugin.costs]
    prices = { "my-model" = { input = 1.0, output = 2.0, cached_input = 0.5 } }
    default_budget = 10.0      # US dollars per budget_period, for every key
    budgets = { key_3f9a0c41d2b7e865 = 50.0 }
    budget_period = "1d"
    storage = "redis://127.0.0.1:6379/0"   # shared between processes

Each answer's cost goes to ``call.cost`` (so to events, metrics and logs)
and, for whole answers, to an ``x-sluiceway-cost`` header. See README.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from sluiceway.api import CallPolicyType, hookimpl

from .policy import (
    CostsOptions,
    CostsPolicy,
    build_price_table,
    create_policy,
    format_dollars,
    format_duration,
    parse_options,
)
from .prices import (
    PER_TOKENS,
    Price,
    PricesFile,
    PriceTable,
    bundled_prices,
    load_prices_file,
    name_candidates,
)
from .spend import UNITS_PER_DOLLAR, MemorySpend, RedisSpend, Spend, SpendStore, to_units

__all__ = [
    "PER_TOKENS",
    "UNITS_PER_DOLLAR",
    "CostsOptions",
    "CostsPolicy",
    "MemorySpend",
    "Price",
    "PriceTable",
    "PricesFile",
    "RedisSpend",
    "Spend",
    "SpendStore",
    "build_price_table",
    "bundled_prices",
    "create_policy",
    "format_dollars",
    "format_duration",
    "load_prices_file",
    "name_candidates",
    "parse_options",
    "register_call_policies",
    "register_commands",
    "to_units",
]


if TYPE_CHECKING:
    import click


@hookimpl
def register_call_policies(register: Callable[[CallPolicyType], None]) -> None:
    register(CallPolicyType("costs", create_policy, description="prices and budgets"))


@hookimpl
def register_commands(cli: click.Group) -> None:
    from .cli import costs  # the CLI's imports are not needed to serve

    cli.add_command(costs)
