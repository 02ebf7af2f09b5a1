"""The ``sluiceway`` command's own options: ``--config`` before the command reaches
the command (the core's and a plugin's alike)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from sluiceway.cli import build_cli, resolve_config_path

CONFIG = """
[gateway]
plugins = ["mock"]

[[providers]]
name = "{name}"
type = "mock"
models = ["mock-gpt"]
"""


@pytest.fixture(autouse=True)
def _logging_kept() -> Iterator[None]:
    """``check`` quiets the ``sluiceway`` logger and sets up the root's handlers, as a
    command process should; run in-process here, the next tests get them back."""
    root, ours = logging.getLogger(), logging.getLogger("sluiceway")
    handlers, root_level, our_level = list(root.handlers), root.level, ours.level
    yield
    root.handlers[:] = handlers
    root.setLevel(root_level)
    ours.setLevel(our_level)


def _config(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(CONFIG.format(name=name))
    return path


def test_config_before_the_command_is_the_one_check_reads(tmp_path: Path) -> None:
    first, second = _config(tmp_path, "first"), _config(tmp_path, "second")
    runner = CliRunner()
    result = runner.invoke(build_cli(str(first)), ["--config", str(first), "check", "--json"])
    assert result.exit_code == 0, result.output
    assert [p["name"] for p in json.loads(result.output)["providers"]] == ["first"]
    # The command's own --config wins over the one before it.
    result = runner.invoke(
        build_cli(str(first)), ["--config", str(first), "check", "--json", "--config", str(second)]
    )
    assert result.exit_code == 0, result.output
    assert [p["name"] for p in json.loads(result.output)["providers"]] == ["second"]


def test_a_plugin_command_resolves_the_config_given_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SLUICEWAY_CONFIG", raising=False)
    config = _config(tmp_path, "first")
    seen: list[str] = []

    cli = build_cli(str(config))

    @cli.command("where")
    @click.option("--config", "config_path", default=None)
    def where(config_path: str | None) -> None:
        seen.append(resolve_config_path(config_path))

    result = CliRunner().invoke(cli, ["--config", str(config), "where"])
    assert result.exit_code == 0, result.output
    assert seen == [str(config)]
    # Without one, the default still applies.
    CliRunner().invoke(cli, ["where"])
    assert seen[-1] == "plugins.toml"


ENDPOINTS = """
[gateway]
plugins = ["mock", "openai", "anthropic"]

[[providers]]
name = "sim"
type = "mock"
models = ["mock-gpt"]

[[providers]]
name = "oai"
type = "openai"
base_url = "https://api.openai.com/v1"
api_key = "sk-literal"
models = ["gpt-4o"]

[[providers]]
name = "local"
type = "openai"
base_url = "http://127.0.0.1:9/v1"
models = ["llama"]

[[providers]]
name = "claude"
type = "anthropic"
base_url = "http://127.0.0.1:9"
api_key = "sk-literal"
models = ["claude-x"]
"""


def test_check_says_which_endpoints_each_provider_serves_and_how(tmp_path: Path) -> None:
    path = tmp_path / "stack.toml"
    path.write_text(ENDPOINTS)
    runner = CliRunner()
    result = runner.invoke(build_cli(str(path)), ["check", "--json", "--config", str(path)])
    assert result.exit_code == 0, result.output
    served = {p["name"]: p["endpoints"] for p in json.loads(result.output)["providers"]}
    assert served["sim"] == ["/v1/chat/completions", "/v1/responses (translated)",
                             "/v1/messages (translated)", "/v1/embeddings"]
    assert served["oai"][1] == "/v1/responses (native)"
    assert served["local"][1] == "/v1/responses (translated)"
    assert served["claude"] == ["/v1/chat/completions", "/v1/responses (translated)",
                                "/v1/messages (native)"]
    text = runner.invoke(build_cli(str(path)), ["check", "--config", str(path)])
    assert text.exit_code == 0, text.output
    assert "serves: /v1/chat/completions, /v1/responses (native)" in text.output
    assert "sk-literal" not in text.output and "sk-literal" not in result.output


def test_check_lists_the_call_policies_in_the_order_they_admit(tmp_path: Path) -> None:
    path = tmp_path / "stack.toml"
    path.write_text('[gateway]\nplugins = ["mock", "limits", "guardrails", "cache"]\n\n'
                    '[plugin.guardrails.profiles.pii]\ndetect = ["email"]\n'
                    'kinds = ["chat"]\n')
    runner = CliRunner()
    result = runner.invoke(build_cli(str(path)), ["check", "--json", "--config", str(path)])
    assert result.exit_code == 0, result.output
    policies = json.loads(result.output)["call_policies"]
    assert [(p["name"], p["plugin"]) for p in policies] == [
        ("limits", "limits"), ("guardrails", "guardrails"), ("cache", "cache")]
    assert policies[1]["kinds"] == ["chat"]
    text = runner.invoke(build_cli(str(path)), ["check", "--config", str(path)])
    assert "call policies (in the order they admit a call):" in text.output
    assert "  guardrails       chat (guardrails)" in text.output
