"""The price table: the bundled defaults, lookup rules, the cost formula, and
how configuration extends and overrides the table."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from sluiceway_costs import (
    CostsOptions,
    Price,
    PriceTable,
    build_price_table,
    bundled_prices,
    format_dollars,
    name_candidates,
    parse_options,
)

from sluiceway import ConfigError
from sluiceway.api import Usage


def options(**raw: Any) -> CostsOptions:
    return parse_options(raw, source="test.toml")


# --------------------------------------------------------------------------
# The bundled table
# --------------------------------------------------------------------------


def test_costs_default_table_covers_the_well_known_families() -> None:
    table = build_price_table(CostsOptions())
    for family in ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano",
                   "o3", "o4-mini", "claude-sonnet-4", "claude-3-5-haiku", "claude-opus-4",
                   "claude-haiku-4-5", "claude-3-7-sonnet", "gemini-2.5-pro", "gemini-2.5-flash",
                   "text-embedding-3-small", "gemini-embedding-001", "claude-sonnet-4-0"):
        found = table.find(family)
        assert found is not None and found[0] == family, family
        price = found[1]
        if "embedding" in family:  # an embedding produces no tokens
            assert 0 < price.input <= 1 and price.output == 0, family
            continue
        assert 0 < price.input <= 100 and 0 < price.output <= 200, family
        assert price.output >= price.input, family  # output never costs less than input
        if price.cached_input is not None:
            assert price.cached_input < price.input, family
        if family.startswith("claude"):
            assert price.cache_write is not None and price.cache_write > price.input, family
    # A couple of well-known list prices, per million tokens.
    found = table.find("gpt-4o-mini")
    assert found is not None and found[1] == Price(input=0.15, cached_input=0.075, output=0.6)


def test_costs_bundled_corrections_are_checked_and_win_over_the_dataset() -> None:
    bundled = bundled_prices()
    assert bundled.checked  # says when it was last checked
    assert bundled.prices and all(name == name.lower() for name in bundled.prices)
    table = build_price_table(CostsOptions())
    for name, price in bundled.prices.items():
        assert table.find(name) == (name, price)
    # Anthropic's own price for claude-3-haiku, not the dataset's Bedrock one.
    assert bundled.prices["claude-3-haiku"].input == 0.25


def test_costs_bundled_file_is_marked_as_defaults_to_check() -> None:
    import sluiceway_costs

    path = Path(sluiceway_costs.__file__).parent / "prices.toml"
    text = path.read_text(encoding="utf-8")
    assert "DEFAULTS" in text and "[plugin.costs]" in text
    assert tomllib.loads(text)["checked"] == bundled_prices().checked


# --------------------------------------------------------------------------
# Lookup
# --------------------------------------------------------------------------


def test_costs_name_candidates_strip_prefix_then_snapshot() -> None:
    assert list(name_candidates("gpt-4o")) == ["gpt-4o"]
    assert list(name_candidates("GPT-4o-2024-08-06")) == ["gpt-4o-2024-08-06", "gpt-4o"]
    assert list(name_candidates("claude-sonnet-4-20250514")) == [
        "claude-sonnet-4-20250514", "claude-sonnet-4"]
    assert list(name_candidates("openai/gpt-4.1-mini-2025-04-14")) == [
        "openai/gpt-4.1-mini-2025-04-14", "gpt-4.1-mini-2025-04-14", "gpt-4.1-mini"]
    assert list(name_candidates("claude-3-5-sonnet-v2@20241022")) == [
        "claude-3-5-sonnet-v2@20241022", "claude-3-5-sonnet-v2"]
    assert list(name_candidates("claude-3-7-sonnet-latest")) == [
        "claude-3-7-sonnet-latest", "claude-3-7-sonnet"]
    # Bedrock's ids: an inference profile, the vendor and the version go first.
    assert list(name_candidates("us.anthropic.claude-sonnet-4-20250514-v1:0")) == [
        "us.anthropic.claude-sonnet-4-20250514-v1:0", "claude-sonnet-4-20250514",
        "claude-sonnet-4"]
    assert list(name_candidates("amazon.nova-pro-v1:0")) == ["amazon.nova-pro-v1:0", "nova-pro"]
    assert list(name_candidates("deepseek-v3")) == ["deepseek-v3"]
    assert list(name_candidates("jp.anthropic.claude-haiku-4-5-20251001-v1:0:200k"))[-1] == \
        "claude-haiku-4-5"
    # Only a whole date is a snapshot: a version number is part of the name.
    assert list(name_candidates("gpt-4o-mini")) == ["gpt-4o-mini"]
    assert list(name_candidates("model-2024")) == ["model-2024"]


def test_costs_lookup_prefers_upstream_then_exact_then_undated() -> None:
    table = build_price_table(options())
    # A dated id without an entry of its own falls back to its family.
    assert table.find("gpt-4o-2099-01-01") == ("gpt-4o", table.prices["gpt-4o"])
    assert table.find("claude-opus-4-1-20991231") == (
        "claude-opus-4-1", table.prices["claude-opus-4-1"])
    # ...unless the snapshot has its own price.
    found = table.find("gpt-4o-2024-05-13")
    assert found is not None and found[0] == "gpt-4o-2024-05-13"
    assert found[1].input == 5.0
    # The upstream id wins over the requested (alias) name; the alias is the fallback.
    assert table.find("gpt-4o-mini", "gpt-4o") == ("gpt-4o-mini", table.prices["gpt-4o-mini"])
    assert table.find("my-deployment", "o4-mini") == ("o4-mini", table.prices["o4-mini"])
    assert table.find(None, "Claude-Sonnet-4") is not None  # case-insensitive
    # No prefix matching: an unknown variant of a known model is unknown.
    assert table.find("gpt-4o-mini-unreleased-variant") is None
    assert table.find("mock-gpt", "mock-gpt") is None
    assert table.find(None, None) is None


# --------------------------------------------------------------------------
# The cost of a usage
# --------------------------------------------------------------------------


def test_costs_formula_prices_each_kind_of_token() -> None:
    price = Price(input=2.0, output=8.0, cached_input=0.5, cache_write=2.5)
    plain = Usage(prompt_tokens=1000, completion_tokens=500)
    assert price.cost_of(plain) == pytest.approx((1000 * 2.0 + 500 * 8.0) / 1e6)
    # Cached tokens are part of the prompt: priced at cached_input instead of input.
    cached = Usage(prompt_tokens=1000, completion_tokens=500, cached_tokens=600)
    assert price.cost_of(cached) == pytest.approx((400 * 2.0 + 600 * 0.5 + 500 * 8.0) / 1e6)
    # Cache writes (Anthropic) likewise, at cache_write.
    written = Usage(prompt_tokens=1000, cached_tokens=100, cache_write_tokens=300)
    assert price.cost_of(written) == pytest.approx((600 * 2.0 + 100 * 0.5 + 300 * 2.5) / 1e6)
    # Without those prices, cached and written tokens cost as input.
    bare = Price(input=2.0, output=8.0)
    assert bare.cost_of(written) == pytest.approx(1000 * 2.0 / 1e6)
    # Counts that do not add up never make a negative share.
    odd = Usage(prompt_tokens=10, cached_tokens=50, cache_write_tokens=50)
    assert price.cost_of(odd) == pytest.approx(10 * 0.5 / 1e6)


def test_costs_usage_from_the_openai_shape_prices_reasoning_as_output() -> None:
    usage = Usage.from_openai({
        "prompt_tokens": 120, "completion_tokens": 80, "total_tokens": 200,
        "prompt_tokens_details": {"cached_tokens": 100, "cache_creation_tokens": 20},
        # Reasoning tokens are part of completion_tokens: not counted again.
        "completion_tokens_details": {"reasoning_tokens": 60},
    })
    assert usage is not None
    price = Price(input=1.0, output=4.0, cached_input=0.25)
    # 20 cache writes at the input price (no cache_write price), 100 reads at cached_input.
    assert price.cost_of(usage) == pytest.approx((20 * 1.0 + 100 * 0.25 + 80 * 4.0) / 1e6)


def test_costs_format_dollars_is_plain_decimal() -> None:
    assert format_dollars(0.0) == "0"
    assert format_dollars(2.5) == "2.5"
    assert format_dollars(10.0) == "10"
    assert format_dollars(0.000123) == "0.000123"
    assert format_dollars(5e-8) == "0.00000005"
    assert float(format_dollars(1 / 3)) == pytest.approx(1 / 3, abs=1e-10)


# --------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------


def test_costs_config_extends_and_overrides_the_bundled_table(tmp_path: Path) -> None:
    prices_file = tmp_path / "prices" / "ours.toml"
    prices_file.parent.mkdir()
    prices_file.write_text(
        'checked = "today"\n'
        '[prices."house-model"]\ninput = 0.5\noutput = 1.5\n'
        '[prices."gpt-4o"]\ninput = 2.0\noutput = 9.0\n'  # a negotiated price
        '[prices."o3"]\ninput = 1.0\noutput = 4.0\n',
        encoding="utf-8",
    )
    table = build_price_table(options(
        prices_file="prices/ours.toml",  # relative to the configuration's directory
        prices={"My-Model": {"input": 1.0, "output": 2.0, "cached_input": 0.5},
                "o3": {"input": 3.0, "output": 6.0}},
    ), base_dir=tmp_path)
    # Extended: by the file and by the table (names compared in lower case).
    assert table.find("house-model") == ("house-model", Price(input=0.5, output=1.5))
    assert table.find("my-model-2025-01-01") == (
        "my-model", Price(input=1.0, output=2.0, cached_input=0.5))
    # Overridden: a later source replaces the whole entry (no cached_input left).
    assert table.find("gpt-4o") == ("gpt-4o", Price(input=2.0, output=9.0))
    # prices beats prices_file.
    assert table.find("o3") == ("o3", Price(input=3.0, output=6.0))
    # Untouched entries stay.
    assert table.find("gpt-4o-mini") is not None
    # Without the bundled table only the operator's entries are known.
    own = build_price_table(options(bundled_prices=False, prices={"x": {"input": 1,
                                                                       "output": 1}}))
    assert len(own) == 1 and "x" in own and own.find("gpt-4o") is None


def test_costs_config_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r'test\.toml: plugin\.costs\.prices\."m"\.input: '
                       r"expected `float` >= 0\.0 \(found -1\.0\)"):
        options(prices={"m": {"input": -1.0, "output": 1.0}})
    with pytest.raises(ConfigError, match=r'prices\."m"\.cache_read: unknown key'):
        options(prices={"m": {"input": 1.0, "output": 1.0, "cache_read": 0.1}})
    with pytest.raises(ConfigError, match=r'prices\."m"\.output: required key is missing'):
        options(prices={"m": {"input": 1.0}})
    with pytest.raises(ConfigError, match=r"plugin\.costs\.default_budgt: unknown key"):
        options(default_budgt=5)
    with pytest.raises(ConfigError, match=r"budgets"):
        options(budgets={"k": -1})
    with pytest.raises(ConfigError, match=r"storage"):
        options(storage="mysql://db")
    with pytest.raises(ConfigError, match=r"budget_period"):
        options(budget_period="0s")
    with pytest.raises(ConfigError, match=r"on_storage_error"):
        options(on_storage_error="maybe")
    # A prices file that is missing or wrong names the file.
    with pytest.raises(ConfigError, match=r"missing\.toml.*cannot read"):
        build_price_table(options(prices_file=str(tmp_path / "missing.toml")))
    broken = tmp_path / "broken.toml"
    broken.write_text("[prices.x\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"broken\.toml.*TOML"):
        build_price_table(options(prices_file=str(broken)))
    wrong = tmp_path / "wrong.toml"
    wrong.write_text('[prices."m"]\ninput = "cheap"\noutput = 1\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r'wrong\.toml: prices\."m"\.input: expected'):
        build_price_table(options(prices_file=str(wrong)))
    defaults = options()
    assert (defaults.storage, float(defaults.budget_period), defaults.default_budget) == (
        "memory://", 86400.0, None)


def test_costs_table_update_replaces_case_insensitively() -> None:
    table = PriceTable({"Model": Price(input=1, output=1)})
    table.update({"MODEL": Price(input=2, output=2)})
    assert len(table) == 1 and table.find("model") == ("model", Price(input=2, output=2))
