"""The pinned price dataset: what it covers, how a source's list is converted,
and ``sluiceway costs refresh-prices`` against a local server and a file."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sluiceway_costs.dataset import convert_dataset, load_dataset, refresh_dataset
from sluiceway_costs.policy import CostsOptions, build_price_table

from sluiceway.cli import build_cli
from sluiceway.testing import RunningServer

# A source list in the maintained dataset's own shape (dollars per token).
SOURCE: dict[str, Any] = {
    # The source's own documentation entry: its mode is a description.
    "sample_spec": {"mode": "one of: chat, embedding, completion, image_generation",
                    "input_cost_per_token": 0, "output_cost_per_token": 0},
    "acme-large": {"mode": "chat", "litellm_provider": "acme",
                   "input_cost_per_token": 2e-06, "output_cost_per_token": 8e-06,
                   "cache_read_input_token_cost": 5e-07,
                   "output_cost_per_reasoning_token": 1.2e-05},
    # A reseller's entry of the same bare name loses to the provider's own.
    "reseller/acme-large": {"mode": "chat", "litellm_provider": "reseller",
                            "input_cost_per_token": 9e-06, "output_cost_per_token": 9e-06},
    "reseller/acme-small": {"mode": "chat", "litellm_provider": "reseller",
                            "input_cost_per_token": 1e-07, "output_cost_per_token": 4e-07},
    "acme-embed": {"mode": "embedding", "litellm_provider": "acme",
                   "input_cost_per_token": 2e-08},
    "acme-image": {"mode": "image_generation", "input_cost_per_token": 1e-06,
                   "output_cost_per_token": 1e-06},
    "acme-free-text": {"mode": "chat", "input_cost_per_token": 1e-06},  # no output price
    "acme-bad": {"mode": "chat", "input_cost_per_token": "cheap", "output_cost_per_token": 1},
}


def test_costs_dataset_covers_hundreds_of_models_with_their_special_prices() -> None:
    dataset = load_dataset()
    assert dataset.license == "MIT" and dataset.source and dataset.retrieved
    table = build_price_table(CostsOptions(), Path("."))
    assert len(table) > 1000
    checks = {
        # name: (input, output, cached_input, cache_write, reasoning)
        "gpt-4o": (2.5, 10.0, 1.25, None, None),
        "claude-sonnet-4-5": (3.0, 15.0, 0.3, 3.75, None),
        "text-embedding-3-small": (0.02, 0.0, None, None, None),
        "gemini-2.5-flash": (0.3, 2.5, 0.03, None, 2.5),
    }
    for name, (inp, out, cached, write, reasoning) in checks.items():
        found = table.find(name)
        assert found is not None, name
        price = found[1]
        assert (price.input, price.output, price.cached_input, price.cache_write,
                price.reasoning) == (inp, out, cached, write, reasoning), name
    # Dated ids and provider prefixes reach the same entries.
    found = table.find("gpt-4o-2099-01-01")
    assert found is not None and found[0] == "gpt-4o"
    found = table.find("anthropic/claude-sonnet-4-5")
    assert found is not None and found[1].cache_write == 3.75


def test_costs_dataset_conversion_keeps_text_and_embedding_models_with_prices() -> None:
    dataset = convert_dataset(SOURCE, source="test", retrieved="2099-01-01")
    models = dataset.models
    assert models["acme-large"] == [2.0, 8.0, 0.5, None, 12.0]
    assert models["reseller/acme-large"] == [9.0, 9.0, None, None, None]
    # The bare name of a reseller-only model is an alias of its entry.
    assert models["acme-small"] == models["reseller/acme-small"] == [0.1, 0.4, None, None, None]
    assert models["acme-embed"] == [0.02, 0.0, None, None, None]  # embeddings: no output
    for left_out in ("acme-image", "acme-free-text", "acme-bad"):
        assert left_out not in models
    with pytest.raises(ValueError):
        convert_dataset([], source="test", retrieved="x")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        convert_dataset({"acme-image": SOURCE["acme-image"]}, source="test", retrieved="x")


@pytest.fixture()
def source_server(serve_asgi: Callable[..., RunningServer]) -> str:
    """A local server of the source list at ``/prices.json`` (404 elsewhere)."""
    body = json.dumps(SOURCE).encode()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        found = scope["path"] == "/prices.json"
        content = body if found else b"not found"
        await send({"type": "http.response.start", "status": 200 if found else 404,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(content)).encode())]})
        await send({"type": "http.response.body", "body": content})

    return serve_asgi(app).url


def test_costs_refresh_prices_downloads_converts_and_reports_changes(
    source_server: str, tmp_path: Path,
) -> None:
    output = tmp_path / "prices.json"
    config = tmp_path / "plugins.toml"
    config.write_text('[gateway]\nplugins = ["mock", "costs"]\n', encoding="utf-8")
    cli = build_cli(str(config))

    result = CliRunner().invoke(cli, ["costs", "refresh-prices", "--from",
                                      f"{source_server}/prices.json", "--output", str(output)])
    assert result.exit_code == 0, result.output
    assert "5 model names (5 added, 0 removed, 0 re-priced)" in result.output
    written = load_dataset(output)
    assert written.source == f"{source_server}/prices.json"
    assert written.models["acme-large"][4] == 12.0
    assert stat.S_IMODE(output.stat().st_mode) == 0o644
    assert list(tmp_path.glob("*.tmp")) == []

    # A second source, as a file: one re-priced, one gone, one new.
    changed = dict(SOURCE)
    changed["acme-large"] = {**SOURCE["acme-large"], "input_cost_per_token": 3e-06}
    del changed["acme-embed"]
    changed["acme-mini"] = {"mode": "chat", "input_cost_per_token": 1e-07,
                            "output_cost_per_token": 2e-07}
    local = tmp_path / "source.json"
    local.write_text(json.dumps(changed), encoding="utf-8")
    refreshed = refresh_dataset(str(local), output, retrieved="2099-01-02")
    assert (refreshed.models, refreshed.added, refreshed.removed, refreshed.changed) == (5, 1, 1, 1)
    assert load_dataset(output).models["acme-large"][0] == 3.0


def test_costs_refresh_prices_failure_is_a_clear_error_and_keeps_the_old_file(
    source_server: str, tmp_path: Path,
) -> None:
    output = tmp_path / "prices.json"
    refresh_dataset(f"{source_server}/prices.json", output, retrieved="2099-01-01")
    before = output.read_bytes()
    config = tmp_path / "plugins.toml"
    config.write_text('[gateway]\nplugins = ["mock", "costs"]\n', encoding="utf-8")
    garbage = tmp_path / "garbage.json"
    garbage.write_text('"not a price list"', encoding="utf-8")
    for source in (f"{source_server}/missing.json", str(garbage), str(tmp_path / "absent.json")):
        result = CliRunner().invoke(build_cli(str(config)), [
            "costs", "refresh-prices", "--from", source, "--output", str(output)])
        assert result.exit_code == 1, result.output
        assert f"cannot refresh the prices from {source}" in result.output
        assert "Traceback" not in result.output
        assert output.read_bytes() == before
