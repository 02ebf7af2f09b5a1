"""``sluiceway costs``: the prices in force, and keys' spend in Redis.

``costs prices`` shows how each model the configuration serves is priced (the
bundled table is a default an operator should check); ``costs spend`` reads the
current period's spend of keys from the Redis storage.
"""

from __future__ import annotations

import asyncio
import datetime
import json
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import click

from sluiceway.api import (
    CONFIG_ENV,
    DEFAULT_CONFIG,
    Config,
    ConfigError,
    ServiceUnavailable,
    load_config,
    redact_url,
    resolve_config_path,
)

from .dataset import DATASET_URL, refresh_dataset
from .policy import (
    PLUGIN,
    CostsOptions,
    build_price_table,
    format_dollars,
    format_duration,
    parse_options,
)
from .prices import Price, PriceTable
from .spend import RedisSpend

__all__ = ["costs"]

F = TypeVar("F", bound=Callable[..., Any])


def _config_option(command: F) -> F:
    return click.option(
        "--config", "config_path", metavar="FILE", default=None,
        help=f"plugins.toml to read (default: ${CONFIG_ENV} or ./{DEFAULT_CONFIG}).",
    )(command)


def _load(config_path: str | None) -> tuple[Config, CostsOptions]:
    try:
        config = load_config(resolve_config_path(config_path))
        return config, parse_options({"storage": config.shared_storage(),
                                      **config.plugin_options(PLUGIN)}, source=config.source)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _price_row(model: str, upstream: str | None, found: tuple[str, Price] | None
               ) -> dict[str, Any]:
    row: dict[str, Any] = {"model": model, "upstream": upstream,
                           "priced_as": found[0] if found else None}
    price = found[1] if found else None
    for field in ("input", "cached_input", "cache_write", "output", "reasoning"):
        row[field] = getattr(price, field) if price is not None else None
    return row


def _rows(config: Config, table: PriceTable, models: tuple[str, ...],
          everything: bool) -> list[dict[str, Any]]:
    if everything:
        return [_price_row(name, None, (name, price))
                for name, price in sorted(table.prices.items())]
    if models:
        return [_price_row(model, None, table.find(model)) for model in models]
    rows = []
    for provider in config.providers:
        for entry in provider.models:
            upstream = entry.upstream_id
            rows.append(_price_row(entry.name, f"{provider.name}/{upstream}",
                                   table.find(upstream, entry.name)))
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return format_dollars(value) if isinstance(value, float) else str(value)


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
                   .rstrip())


@click.group()
def costs() -> None:
    """Prices and spend of the costs plugin."""


@costs.command()
@click.argument("models", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="List the whole price table.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_config_option
def prices(models: tuple[str, ...], everything: bool, as_json: bool,
           config_path: str | None) -> None:
    """How the configured models are priced (US dollars per million tokens).

    With MODELS, the entry each name is priced by; with --all, the whole table
    (the pinned dataset and bundled corrections, prices_file, then
    [plugin.costs] prices)."""
    config, options = _load(config_path)
    try:
        table = build_price_table(options, config.base_dir)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    rows = _rows(config, table, models, everything)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    header = ["MODEL", "UPSTREAM", "PRICED AS", "INPUT", "CACHED", "CACHE WRITE", "OUTPUT",
              "REASONING"]
    _print_table(header, [
        [row["model"], _cell(row["upstream"]), row["priced_as"] or "(no price: cost unknown)",
         *(_cell(row[f]) for f in ("input", "cached_input", "cache_write", "output",
                                   "reasoning"))]
        for row in rows
    ])


@costs.command("refresh-prices")
@click.option("--from", "source", default=DATASET_URL, show_default=True,
              help="The price list to convert: a URL or a file in its JSON format.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the converted table (default: the installed package's "
                   "prices.json).")
def refresh_prices(source: str, output: Path | None) -> None:
    """Download the maintained price list and write the pinned dataset from it."""
    target = output or Path(str(resources.files("sluiceway_costs").joinpath("prices.json")))
    try:
        refreshed = refresh_dataset(source, target,
                                    retrieved=datetime.date.today().isoformat())
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot refresh the prices from {source}: {exc}") from None
    click.echo(f"{target}: {refreshed.models} model names ({refreshed.added} added, "
               f"{refreshed.removed} removed, {refreshed.changed} re-priced)")


@costs.command()
@click.argument("key_ids", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_config_option
def spend(key_ids: tuple[str, ...], as_json: bool, config_path: str | None) -> None:
    """The current period's spend of KEY_IDS, read from the Redis storage."""
    _, options = _load(config_path)
    if options.storage == "memory://":
        raise click.ClickException(
            'spend is kept in each gateway process\'s memory (storage = "memory://"); '
            "only a Redis storage can be read from the command line")
    period = float(options.budget_period)

    async def read() -> list[dict[str, Any]]:
        store = RedisSpend(options.storage, key_prefix=options.key_prefix,
                           on_storage_error="closed")
        try:
            rows = []
            for key in key_ids:
                found = await store.read(key, period)
                budget = options.budgets.get(key, options.default_budget)
                rows.append({"key_id": key, "spend": found.dollars, "budget": budget,
                             "resets_in": found.reset_after})
            return rows
        finally:
            await store.aclose()

    try:
        rows = asyncio.run(read())
    except ServiceUnavailable:  # the storage is down: say so, without a traceback
        raise click.ClickException(
            f"cannot read the spend: Redis at {redact_url(options.storage)} "
            "did not answer") from None
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    _print_table(["KEY", "SPEND", "BUDGET", "RESETS IN"], [
        [row["key_id"], format_dollars(row["spend"]), _cell(row["budget"]),
         format_duration(row["resets_in"])] for row in rows
    ])
    click.echo(f"(period {format_duration(period)}; budgets from [plugin.costs] only: a "
               "key's own budget attribute is not shown)")
