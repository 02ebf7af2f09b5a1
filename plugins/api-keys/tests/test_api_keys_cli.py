"""``sluiceway keys``: the commands, the file they write, and concurrent writers."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import textwrap
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from sluiceway_api_keys import KeyStore, hash_secret, read_keys
from sluiceway_api_keys.cli import parse_expiry

from sluiceway.cli import build_cli

Cli = Callable[..., subprocess.CompletedProcess[str]]


def invoke(config_file: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(build_cli(str(config_file)), [*args, "--config", str(config_file)])
    return result.exit_code, result.output


def test_api_keys_cli_create_list_revoke_rotate_delete(
    config_file: Path, keys_path: Path
) -> None:
    code, output = invoke(
        config_file, "keys", "create", "--name", "crm", "--rpm", "100", "--tpm", "50000",
        "--max-concurrent", "5", "--models", "gpt-*", "--models", "mock-*,o1", "--expires", "30d",
    )
    assert code == 0, output
    secret = next(line.strip() for line in output.splitlines() if "sk-sw-" in line)
    record = next(r for r in read_keys(keys_path) if r.name == "crm")
    assert record.id in output and "only time" in output
    assert (record.rpm, record.tpm, record.max_concurrent) == (100, 50000, 5)
    assert record.models == ["gpt-*", "mock-*", "o1"]
    assert record.prefix == secret[:8] and record.hash == hash_secret(secret)
    assert record.expires_at is not None and record.created_at is not None
    # --expires 30d: thirty days after the key was made, exactly.
    assert record.expires_at == record.created_at + timedelta(days=30)

    code, output = invoke(config_file, "keys", "list")
    assert code == 0, output
    assert output.splitlines()[0].split() == [
        "ID", "NAME", "PREFIX", "LIMITS", "MODELS", "EXPIRES", "STATUS"
    ]
    row = next(line for line in output.splitlines() if record.id in line)
    assert "rpm=100 tpm=50000 conc=5" in row and "gpt-*,mock-*,o1" in row
    assert row.endswith("enabled") and secret not in output and "sha256" not in output

    assert invoke(config_file, "keys", "revoke", record.id)[0] == 0
    listed = json.loads(invoke(config_file, "keys", "list", "--json")[1])
    assert next(k for k in listed if k["id"] == record.id)["status"] == "revoked"

    code, output = invoke(config_file, "keys", "rotate", record.id, "--json")
    rotated = json.loads(output)
    assert (code, rotated["id"]) == (0, record.id)
    after = next(r for r in read_keys(keys_path) if r.id == record.id)
    assert after.hash == hash_secret(rotated["secret"]) != record.hash
    assert (after.name, after.rpm, after.models) == ("crm", 100, record.models)
    assert not after.enabled  # rotating a revoked key does not enable it
    assert after.rotated_at is not None

    code, output = invoke(config_file, "keys", "delete", record.id, "--yes")
    assert code == 0, output
    assert record.id not in {r.id for r in read_keys(keys_path)}
    code, output = invoke(config_file, "keys", "revoke", record.id)
    assert code == 1 and f"no key with id {record.id!r}" in output


def test_api_keys_cli_subprocess_writes_a_private_hash_only_file(
    config_file: Path, keys_path: Path, cli: Cli
) -> None:
    keys_path.unlink()  # the first create makes the file
    result = cli("keys", "create", "--name", "crm", "--config", str(config_file))
    assert result.returncode == 0, result.stderr
    secret = next(word for word in result.stdout.split() if word.startswith("sk-sw-"))
    assert len(secret) == len("sk-sw-") + 43  # 32 bytes, URL-safe base64 without padding
    assert stat.S_IMODE(keys_path.stat().st_mode) == 0o600
    assert secret not in keys_path.read_text()
    assert secret not in result.stderr
    assert [r.hash for r in read_keys(keys_path)] == [hash_secret(secret)]


def test_api_keys_cli_finds_the_config_from_the_environment(
    config_file: Path, keys_path: Path, cli: Cli, tmp_path: Path
) -> None:
    result = cli("keys", "list", env={"SLUICEWAY_CONFIG": str(config_file)})
    assert result.returncode == 0, result.stderr
    assert "bootstrap" in result.stdout
    no_table = tmp_path / "other.toml"
    no_table.write_text('[gateway]\nplugins = ["api-keys"]\n')
    result = cli("keys", "list", "--config", str(no_table))
    assert result.returncode == 1
    assert f"{no_table}: no [auth.api-keys] table" in result.stderr


WRITER = """
import sys
from sluiceway.cli import build_cli

config, tag = sys.argv[1], sys.argv[2]
cli = build_cli(config)
for i in range(10):
    cli.main(["keys", "create", "--name", f"{tag}-{i}", "--config", config, "--json"],
             standalone_mode=False)
"""


def test_api_keys_concurrent_cli_writers_lose_nothing(
    config_file: Path, keys_path: Path
) -> None:
    script = textwrap.dedent(WRITER)
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(config_file), tag],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for tag in ("a", "b")
    ]
    secrets = []
    for writer in writers:
        out, err = writer.communicate(timeout=60)
        assert writer.returncode == 0, err
        secrets += [json.loads(line)["secret"] for line in out.splitlines()]
    records = read_keys(keys_path)  # parses: never a torn file
    names = {r.name for r in records} - {"bootstrap"}
    assert names == {f"{tag}-{i}" for tag in "ab" for i in range(10)}
    assert len(records) == 21 and len({r.id for r in records}) == 21
    assert {hash_secret(s) for s in secrets} <= {r.hash for r in records}
    assert not list(keys_path.parent.glob(".keys.toml.*.tmp"))


def test_api_keys_store_round_trips_awkward_names(keys_path: Path) -> None:
    store = KeyStore(keys_path)
    names = ['quote " backslash \\ tab \t', "newline\nand\x7f\x00", "émoji 🙂 ünïcode"]
    for name in names:
        store.create(name, models=["a*", 'b"'])
    assert [r.name for r in read_keys(keys_path)] == names


def test_api_keys_parse_expiry() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert parse_expiry("30d", now) == now + timedelta(days=30)
    assert parse_expiry("12h", now) == now + timedelta(hours=12)
    assert parse_expiry("2031-06-30", now) == datetime(2031, 6, 30, tzinfo=UTC)
    assert parse_expiry("2031-06-30T12:00:00+02:00", now) == datetime(2031, 6, 30, 10, tzinfo=UTC)
    for bad in ("30", "soon", "2029-12-31"):
        with pytest.raises(click.BadParameter):
            parse_expiry(bad, now)


def test_api_keys_cli_takes_the_config_before_the_command(
    config_file: Path, keys_path: Path, cli: Cli
) -> None:
    result = cli("--config", str(config_file), "keys", "create", "--name", "early", "--json")
    assert result.returncode == 0, result.stderr
    assert [r.name for r in read_keys(keys_path)] == ["bootstrap", "early"]
    listed = cli("--config", str(config_file), "keys", "list")
    assert listed.returncode == 0, listed.stderr
    assert "early" in listed.stdout and "bootstrap" in listed.stdout


def test_keys_without_the_plugin_says_how_to_enable_it(cli: Cli, tmp_path: Path) -> None:
    plain = tmp_path / "plain.toml"
    plain.write_text(
        '[gateway]\nplugins = ["mock"]\n\n'
        '[[providers]]\nname = "mock"\ntype = "mock"\nmodels = ["mock-gpt"]\n'
    )
    before = ("--config", str(plain), "keys", "list")
    after = ("keys", "list", "--config", str(plain))
    for args in (before, after):
        result = cli(*args)
        assert result.returncode == 2
        assert "'keys' is a command of the 'api-keys' plugin" in result.stderr
        assert f'{plain} does not enable' in result.stderr
        assert 'plugins = ["mock", "api-keys"]' in result.stderr
        assert "Traceback" not in result.stderr
    # A command no installed plugin has is still just unknown.
    result = cli("--config", str(plain), "nosuchcommand")
    assert result.returncode == 2
    assert "No such command 'nosuchcommand'" in result.stderr


def test_plugin_commands_follow_the_last_config_and_say_why_when_it_fails(
    config_file: Path, cli: Cli, tmp_path: Path,
) -> None:
    plain = tmp_path / "plain.toml"
    plain.write_text('[gateway]\nplugins = ["mock"]\n')
    # The command's own --config comes last and wins, for finding its plugin too.
    result = cli("--config", str(plain), "keys", "list", "--config", str(config_file))
    assert result.returncode == 0, result.stderr
    assert "bootstrap" in result.stdout
    # A configuration that does not load: its error, not a hint to enable a plugin.
    broken = tmp_path / "broken.toml"
    broken.write_text('[gateway]\nplugins = ["mock", "api-keys"]\nbogus = 1\n')
    result = cli("--config", str(broken), "keys", "list")
    assert result.returncode == 2
    assert "did not load" in result.stderr and "gateway.bogus: unknown key" in result.stderr
    assert "does not enable" not in result.stderr and "Traceback" not in result.stderr
