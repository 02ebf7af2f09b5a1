"""Prices per model, and the cost of one answer's usage.

The table is the pinned dataset (``prices.json``, see :mod:`.dataset`) and the
bundled ``prices.toml`` corrections (defaults an operator should check), then a
``prices_file``, then ``[plugin.costs] prices``: a later source replaces
a model's whole entry. Lookup (:meth:`PriceTable.find`) tries the deployment's
upstream model id, then the name the client asked for, each as written, then
without a ``provider/`` prefix, then without Bedrock's decoration, then without
a date or ``-latest`` suffix.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import msgspec

from sluiceway.api import ConfigError, Usage, validate_options

__all__ = [
    "PER_TOKENS",
    "Price",
    "PriceTable",
    "PricesFile",
    "bundled_prices",
    "check_prices",
    "load_prices_file",
    "name_candidates",
]

# Prices are per this many tokens.
PER_TOKENS = 1_000_000

_Dollars = Annotated[float, msgspec.Meta(ge=0)]

# Suffixes a provider adds to pin a snapshot: OpenAI's -2024-08-06,
# Anthropic's -20250514, Vertex's @20241022, and the -latest aliases.
_SNAPSHOT = re.compile(r"(?:-\d{4}-\d{2}-\d{2}|-\d{8}|@\d{8}|-latest)$")
# Bedrock's model ids: us.anthropic.claude-sonnet-4-20250514-v1:0.
_BEDROCK = re.compile(r"^(?:(?:us|eu|apac|jp|au|ca|us-gov|global)\.)?(?:anthropic|amazon|meta"
                      r"|mistral|cohere|ai21|deepseek|openai|qwen|writer)\.|-v\d+:\d+(?::\w+)?$")


class Price(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """US dollars per million tokens of each kind."""

    input: _Dollars
    output: _Dollars
    # Prompt tokens read from the provider's cache; None: priced as input.
    cached_input: _Dollars | None = None
    # Prompt tokens written to the cache (Anthropic); None: priced as input.
    cache_write: _Dollars | None = None
    # Reasoning tokens (part of the completion); None: priced as output.
    reasoning: _Dollars | None = None

    def cost_of(self, usage: Usage) -> float:
        """US dollars for ``usage``: uncached prompt tokens at ``input``, cache
        reads at ``cached_input``, cache writes at ``cache_write``, completion
        tokens at ``output``, of which reasoning tokens at ``reasoning`` when set."""
        prompt = usage.prompt_tokens
        cached = min(usage.cached_tokens, prompt)
        written = min(usage.cache_write_tokens, prompt - cached)
        fresh = prompt - cached - written
        cached_price = self.input if self.cached_input is None else self.cached_input
        write_price = self.input if self.cache_write is None else self.cache_write
        completion = usage.completion_tokens
        reasoning = min(usage.reasoning_tokens, completion) if self.reasoning is not None else 0
        return (fresh * self.input + cached * cached_price + written * write_price
                + (completion - reasoning) * self.output
                + reasoning * (self.reasoning or 0.0)) / PER_TOKENS


class PricesFile(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A prices file: the bundled one, or a ``prices_file``."""

    prices: dict[str, Price] = msgspec.field(default_factory=dict)
    # When the prices were last checked (free text, for humans).
    checked: str | None = None


def name_candidates(name: str) -> Iterator[str]:
    """The names a model id is looked up under, in order: as written (lower
    case), without a ``provider/`` prefix, without Bedrock's decoration (a
    ``us.`` / ``eu.``... inference profile, the ``anthropic.`` vendor, the
    ``-v2:0`` version), then without a snapshot suffix (``-2024-08-06``,
    ``-20250514``, ``@20241022``, ``-latest``)."""
    lowered = name.strip().lower()
    yield lowered
    base = lowered.rpartition("/")[2]
    if base != lowered:
        yield base
    bare = _BEDROCK.sub("", base)
    if bare != base:
        base = bare
        yield base
    undated = _SNAPSHOT.sub("", base)
    if undated and undated != base:
        yield undated


class PriceTable:
    """Prices by lower-cased model name."""

    def __init__(self, prices: Mapping[str, Price] | None = None) -> None:
        self.prices: dict[str, Price] = {}
        if prices:
            self.update(prices)

    def update(self, prices: Mapping[str, Price]) -> None:
        """Add entries; each replaces any entry of the same name (case-insensitive)."""
        for name, price in prices.items():
            self.prices[name.strip().lower()] = price

    def find(self, *names: str | None) -> tuple[str, Price] | None:
        """The first entry found for ``names`` in order (each tried as written,
        unprefixed, then undated), with the name it was found under."""
        for name in names:
            if not name:
                continue
            for candidate in name_candidates(name):
                price = self.prices.get(candidate)
                if price is not None:
                    return candidate, price
        return None

    def __len__(self) -> int:
        return len(self.prices)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.strip().lower() in self.prices


def check_prices(data: object, *, source: str, key: str) -> None:
    """Validate each entry of a raw ``prices`` table on its own, so that an error
    names the model (``prices."gpt-4o".input``); msgspec's own path would not."""
    if not isinstance(data, Mapping):
        return  # the struct's validation reports it
    for name, entry in data.items():
        validate_options(entry, Price, source=source, key=f'{key}."{name}"')


def _parse(data: Any, source: str) -> PricesFile:
    if isinstance(data, Mapping):
        check_prices(data.get("prices"), source=source, key="prices")
    return validate_options(data, PricesFile, source=source, key="")


def bundled_prices() -> PricesFile:
    """The default table shipped with the plugin (``sluiceway_costs/prices.toml``)."""
    text = resources.files("sluiceway_costs").joinpath("prices.toml").read_text(encoding="utf-8")
    return _parse(tomllib.loads(text), "sluiceway_costs/prices.toml")


def load_prices_file(path: Path) -> PricesFile:
    """A ``prices_file``: TOML shaped like the bundled table (``[prices."<model>"]``
    tables). Any problem is a :class:`ConfigError` naming the file."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the prices file: {exc.strerror or exc}",
                          source=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", source=str(path)) from None
    return _parse(data, str(path))
