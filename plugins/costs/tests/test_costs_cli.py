"""``sluiceway costs``: the prices in force for the configured models, and the
spend of keys read from Redis."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from click.testing import CliRunner
from sluiceway_costs import RedisSpend, to_units

from sluiceway.cli import build_cli
from sluiceway.testing import RedisServer


def write_config(path: Path, costs: str) -> Path:
    path.write_text(
        f"""
[gateway]
plugins = ["mock", "costs"]

[[providers]]
name = "mock"
type = "mock"
models = ["mock-gpt", {{ name = "smart", upstream = "gpt-4o-2099-01-01" }},
          {{ name = "house", upstream = "house-v1" }}]

[plugin.costs]
{costs}
""",
        encoding="utf-8",
    )
    return path


def invoke(config: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(build_cli(str(config)), [*args, "--config", str(config)])
    return result.exit_code, result.output


def test_costs_cli_prices_shows_how_each_served_model_is_priced(tmp_path: Path) -> None:
    config = write_config(tmp_path / "plugins.toml",
                          'prices = { "house" = { input = 1.0, output = 2.0 } }')
    code, output = invoke(config, "costs", "prices")
    assert code == 0, output
    lines = output.splitlines()
    assert lines[0].split() == ["MODEL", "UPSTREAM", "PRICED", "AS", "INPUT", "CACHED",
                                "CACHE", "WRITE", "OUTPUT", "REASONING"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert "(no price: cost unknown)" in rows["mock-gpt"]
    # The upstream id, without its date, is found first.
    assert rows["smart"].split()[1:4] == ["mock/gpt-4o-2099-01-01", "gpt-4o", "2.5"]
    # An unpriced upstream id falls back to the public name's entry.
    assert rows["house"].split()[1:4] == ["mock/house-v1", "house", "1"]

    code, output = invoke(config, "costs", "prices", "--json", "claude-sonnet-4-20991231",
                          "nothing")
    assert code == 0, output
    found, missing = json.loads(output)
    assert (found["priced_as"], found["input"], found["output"]) == ("claude-sonnet-4", 3.0, 15.0)
    assert missing["priced_as"] is None and missing["input"] is None

    code, output = invoke(config, "costs", "prices", "--all")
    assert code == 0 and "gpt-4o-mini" in output and "house" in output


def test_costs_cli_reports_bad_configuration(tmp_path: Path) -> None:
    config = write_config(tmp_path / "plugins.toml",
                          'prices = { "house" = { input = -1.0, output = 2.0 } }')
    code, output = invoke(config, "costs", "prices")
    assert code != 0 and 'plugin.costs.prices."house".input' in output
    assert "Traceback" not in output
    code, output = invoke(write_config(tmp_path / "memory.toml", ""), "costs", "spend", "k")
    assert code != 0 and "memory" in output


def test_costs_cli_spend_reads_redis(redis_server: RedisServer, tmp_path: Path) -> None:
    async def charge() -> None:
        store = RedisSpend(redis_server.url)
        try:
            await store.add("key_a", to_units(1.25), 30 * 86400)
        finally:
            await store.aclose()

    asyncio.run(charge())
    config = write_config(tmp_path / "plugins.toml", f"""
storage = "{redis_server.url}"
budget_period = "30d"
default_budget = 5.0
budgets = {{ key_a = 2.0 }}
""")
    code, output = invoke(config, "costs", "spend", "key_a", "key_b", "--json")
    assert code == 0, output
    rows = json.loads(output)
    assert [(r["key_id"], r["spend"], r["budget"]) for r in rows] == [
        ("key_a", 1.25, 2.0), ("key_b", 0.0, 5.0)]
    assert all(0 < r["resets_in"] <= 30 * 86400 for r in rows)
    code, output = invoke(config, "costs", "spend", "key_a")
    assert code == 0 and output.splitlines()[0].split() == ["KEY", "SPEND", "BUDGET", "RESETS",
                                                            "IN"]
    assert output.splitlines()[1].split()[:3] == ["key_a", "1.25", "2"]
    redis_server.kill()
    code, output = invoke(config, "costs", "spend", "key_a")
    assert code != 0 and "did not answer" in output and "Traceback" not in output
