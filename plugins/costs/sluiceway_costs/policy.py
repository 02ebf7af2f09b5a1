"""The ``costs`` call policy: the price of each answer, and budgets per key.

Admitting a model call: if the key has a budget, read its spend in the current
period and refuse with 429 ``budget_exceeded`` once it has reached the budget.
Settling it (before a whole answer starts, before a stream's last frame):
price its usage, put the cost in ``call.cost`` (so in events, metrics and
logs) and in the ``x-sluiceway-cost`` header of a whole answer, and add it to
the key's spend.
"""

from __future__ import annotations

import logging
import math
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from sluiceway.api import (
    MAX_RETRY_AFTER_SECONDS,
    Duration,
    Gateway,
    LimitDecided,
    ModelCall,
    Principal,
    RateLimited,
    Settle,
    check_storage_url,
    format_duration,
    validate_options,
)

from .dataset import dataset_prices
from .prices import (
    Price,
    PriceTable,
    bundled_prices,
    check_prices,
    load_prices_file,
)
from .spend import MemorySpend, RedisSpend, Spend, SpendStore, to_units

__all__ = [
    "CostsOptions",
    "CostsPolicy",
    "build_price_table",
    "create_policy",
    "format_dollars",
    "format_duration",
    "parse_options",
]


PLUGIN = "costs"
ANONYMOUS = "anonymous"
log = logging.getLogger("sluiceway.costs")

_Dollars = Annotated[float, msgspec.Meta(ge=0)]


# Where a team's spend is kept, beside the keys' (key ids never start so).
TEAM_PREFIX = "team:"


class CostsOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[plugin.costs]``."""

    # Entries added to (or replacing those of) the bundled table and prices_file.
    prices: dict[str, Price] = msgspec.field(default_factory=dict)
    # A TOML file of [prices."<model>"] tables, relative to the config file.
    prices_file: str | None = None
    # False: only prices_file and prices are used.
    bundled_prices: bool = True
    # x-sluiceway-cost on whole answers.
    cost_header: bool = True
    # Budget per period, in US dollars, for keys without their own.
    default_budget: _Dollars | None = None
    # key id -> budget per period.
    budgets: dict[str, _Dollars] = msgspec.field(default_factory=dict)
    # team -> budget per period, shared by every key of the team (a key's `team`).
    team_budgets: dict[str, _Dollars] = msgspec.field(default_factory=dict)
    # The soft budget: from this share of a budget spent, answers carry a warning.
    warn_at: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.8
    budget_period: Duration = Duration(86400)
    # "budgeted": keep spend only for keys with a budget; "all": for every key.
    record_spend: Literal["budgeted", "all"] = "budgeted"
    storage: str = "memory://"
    key_prefix: str = "sluiceway:costs:"
    # Redis unreachable: "open" goes on with this process's view, "closed" answers 503.
    on_storage_error: Literal["open", "closed"] = "open"

    def __post_init__(self) -> None:
        if not self.budget_period >= 0.001:
            raise ValueError("budget_period must be at least 1ms")
        check_storage_url(self.storage)


def parse_options(raw: object, *, source: str, key: str = f"plugin.{PLUGIN}") -> CostsOptions:
    """Validate ``[plugin.costs]``; an error names the file and the key."""
    if isinstance(raw, dict):
        check_prices(raw.get("prices"), source=source, key=f"{key}.prices")
    return validate_options(raw, CostsOptions, source=source, key=key)


def build_price_table(options: CostsOptions, base_dir: str | Path = ".") -> PriceTable:
    """The pinned dataset and the bundled corrections (unless turned off), then
    ``prices_file``, then ``prices``."""
    table = PriceTable()
    if options.bundled_prices:
        table.update(dataset_prices())
        table.update(bundled_prices().prices)
    if options.prices_file is not None:
        path = Path(options.prices_file).expanduser()
        if not path.is_absolute():
            path = (Path(base_dir) / path).resolve()
        table.update(load_prices_file(path).prices)
    table.update(options.prices)
    return table


def format_dollars(dollars: float) -> str:
    """``0.000123``, ``2.5``, ``0``: plain decimal, at most ten places."""
    text = f"{dollars:.10f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"


def _budget_attribute(principal: Principal | None) -> float | None:
    if principal is None:
        return None
    value = principal.attributes.get("budget")
    if (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value) and value >= 0):
        return float(value)
    return None


class CostsPolicy:
    """Prices every model call and enforces budgets per key."""

    kinds = frozenset({"chat", "messages", "responses", "embeddings"})

    def __init__(
        self,
        options: CostsOptions,
        prices: PriceTable,
        *,
        store: SpendStore | None = None,
        name: str = PLUGIN,
    ) -> None:
        self.name = name
        self.options = options
        self.prices = prices
        self.period = float(options.budget_period)
        self.store: SpendStore = store if store is not None else MemorySpend()
        # (upstream id, requested name) -> (entry name, price) or None. Both
        # come from the configuration (the router refuses unknown models), so
        # this stays as small as the model list.
        self._found: dict[tuple[str | None, str | None], tuple[str, Price] | None] = {}
        # The models seen without a price (their cost is unknown).
        self.unpriced: set[str] = set()

    def lifespan(self) -> AbstractAsyncContextManager[None]:
        """Entered by the gateway at startup: closes the Redis client at shutdown."""
        return self.store.lifespan()

    def budget_for(self, principal: Principal | None, key: str) -> float | None:
        """The key's budget per period: the principal's ``budget`` attribute, else
        ``budgets[key]``, else ``default_budget``; ``None``: no budget."""
        own = _budget_attribute(principal)
        if own is not None:
            return own
        listed = self.options.budgets.get(key)
        return listed if listed is not None else self.options.default_budget

    def price_of(self, upstream: str | None, requested: str | None) -> tuple[str, Price] | None:
        """The entry for a deployment's upstream id, else for the requested name."""
        names = (upstream, requested)
        try:
            return self._found[names]
        except KeyError:
            pass
        found = self.prices.find(upstream, requested)
        self._found[names] = found
        if found is None:
            # Once per model and upstream id (this lookup is remembered): an unknown
            # cost is reported, never counted as 0.
            self.unpriced.add(requested or upstream or "")
            log.warning("costs: no price for model %r (upstream id %r): its cost is unknown; "
                        "add it to [plugin.costs] prices or a prices_file", requested, upstream)
        return found

    def cost(self, call: ModelCall) -> float | None:
        """The call's cost in US dollars from its usage, or ``None`` (no usage, or
        no price for the model); stored in ``call.cost`` when known."""
        usage = call.usage
        if usage is None:
            return None
        deployment = call.deployment
        found = self.price_of(deployment.upstream_model if deployment is not None else None,
                              call.group.name)
        if found is None:
            return None
        cost = call.cost = found[1].cost_of(usage)
        return cost

    def team_of(self, principal: Principal | None) -> tuple[str, float] | None:
        """The principal's team and its budget, when the team has one."""
        team = principal.attributes.get("team") if principal is not None else None
        if not isinstance(team, str):
            return None
        # The team's own budget (the keys store's), else the configuration's.
        own = principal.attributes.get("team_budget") if principal is not None else None
        if isinstance(own, int | float) and not isinstance(own, bool) and own >= 0:
            return team, float(own)
        budget = self.options.team_budgets.get(team)
        return (team, budget) if budget is not None else None

    async def admit(self, call: ModelCall) -> Settle:
        """Refuse a key whose spend, or whose team's, has reached its budget (429
        ``budget_exceeded`` / ``team_budget_exceeded``, naming the budget and when it
        resets); past ``warn_at`` of a budget, answers carry a warning. The
        settlement prices the call and adds it to the key's and the team's spend."""
        principal = call.principal
        key = principal.key_id if principal is not None else ANONYMOUS
        budget = self.budget_for(principal, key)
        team = self.team_of(principal)
        record = budget is not None or self.options.record_spend == "all"
        if budget is not None:
            spend = await self.store.read(key, self.period)
            self._spend_headers(call.headers, budget, spend)
            if spend.units >= to_units(budget):
                _decided(call, False, key)
                raise self._refusal(f"Budget exceeded for {key}", budget, spend, call.headers,
                                    "budget_exceeded")
            self._warn(call.headers, f"key {key}", budget, spend)
            _decided(call, True, key)
        if team is not None:
            name, team_budget = team
            spent = await self.store.read(TEAM_PREFIX + name, self.period)
            call.headers["x-sluiceway-team-budget"] = format_dollars(team_budget)
            call.headers["x-sluiceway-team-spend"] = format_dollars(spent.dollars)
            if spent.units >= to_units(team_budget):
                _decided(call, False, key)
                raise self._refusal(f"Budget exceeded for team {name}", team_budget, spent,
                                    call.headers, "team_budget_exceeded")
            self._warn(call.headers, f"team {name}", team_budget, spent)

        async def settle(call: ModelCall) -> None:
            cost = self.cost(call)
            if cost is None:
                return
            if not call.stream and self.options.cost_header:
                call.headers["x-sluiceway-cost"] = format_dollars(cost)
            if record:
                spend = await self.store.add(key, to_units(cost), self.period)
                self._spend_headers(call.headers, budget, spend)
            if team is not None:
                spent = await self.store.add(TEAM_PREFIX + team[0], to_units(cost), self.period)
                call.headers["x-sluiceway-team-spend"] = format_dollars(spent.dollars)

        return settle

    def _warn(self, headers: dict[str, str], whose: str, budget: float, spend: Spend) -> None:
        """The soft budget: say so once ``warn_at`` of the budget is spent."""
        if budget > 0 and spend.dollars >= budget * self.options.warn_at:
            headers["x-sluiceway-budget-warning"] = (
                f"{whose} has spent ${format_dollars(spend.dollars)} of its "
                f"${format_dollars(budget)} per {format_duration(self.period)}")

    def _spend_headers(self, headers: dict[str, str], budget: float | None, spend: Spend) -> None:
        headers["x-sluiceway-spend"] = format_dollars(spend.dollars)
        if budget is not None:
            headers["x-sluiceway-budget"] = format_dollars(budget)
            headers["x-sluiceway-budget-reset"] = format_duration(spend.reset_after)

    def _refusal(self, what: str, budget: float, spend: Spend,
                 headers: dict[str, str], code: str) -> RateLimited:
        reset = spend.reset_after
        extra = dict(headers)
        if reset > MAX_RETRY_AFTER_SECONDS:
            # The wait is longer than a client should sleep: tell SDKs not to retry.
            extra["x-should-retry"] = "false"
        return RateLimited(
            f"{what}: ${format_dollars(spend.dollars)} spent of "
            f"${format_dollars(budget)} per {format_duration(self.period)}; "
            f"it resets in {format_duration(reset)}.",
            code=code, retry_after=max(reset, 0.001), headers=extra,
        )


def _decided(call: ModelCall, allowed: bool, key: str) -> None:
    """Tell the event sinks (metrics, logs) what the budget decided."""
    if call.events_enabled:
        call.emit(LimitDecided(request_id=call.request_id, policy=PLUGIN, limit="budget",
                               allowed=allowed, key_id=key))


def create_policy(gateway: Gateway) -> CostsPolicy:
    """The ``factory(gateway)`` of the registered call policy."""
    config = gateway.config
    # Without a storage of its own, the spend lives where [state] keeps shared state.
    options = parse_options({"storage": config.shared_storage(), **config.plugin_options(PLUGIN)},
                            source=config.source)
    prices = build_price_table(options, config.base_dir)
    if options.storage == "memory://":
        return CostsPolicy(options, prices)
    store = RedisSpend(options.storage, key_prefix=options.key_prefix,
                       on_storage_error=options.on_storage_error)
    return CostsPolicy(options, prices, store=store)

