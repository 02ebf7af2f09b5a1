"""Hot reload of the keys file while the gateway runs, and errors at startup."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sluiceway_api_keys import KeyStore

import sluiceway
from sluiceway.testing import RunningServer

Start = Callable[..., RunningServer]
WaitFor = Callable[..., int]
Cli = Callable[..., subprocess.CompletedProcess[str]]
StartGateway = Callable[..., RunningServer]


def test_api_keys_cli_changes_reach_a_running_gateway(
    gateway_factory: StartGateway, config_file: Path, wait_for: WaitFor, cli: Cli
) -> None:
    server = gateway_factory(str(config_file))  # keys_file = "keys.toml", beside it
    created = cli("keys", "create", "--name", "crm", "--config", str(config_file), "--json")
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)
    assert key["secret"].startswith("sk-sw-")
    assert wait_for(server, key["secret"], 200) == 200

    rotated = cli("keys", "rotate", key["id"], "--config", str(config_file), "--json")
    assert rotated.returncode == 0, rotated.stderr
    new = json.loads(rotated.stdout)
    assert new["id"] == key["id"] and new["secret"] != key["secret"]
    assert wait_for(server, new["secret"], 200) == 200
    assert wait_for(server, key["secret"], 401) == 401

    revoked = cli("keys", "revoke", key["id"], "--config", str(config_file))
    assert revoked.returncode == 0, revoked.stderr
    assert wait_for(server, new["secret"], 401) == 401


def test_api_keys_store_changes_reach_a_running_gateway(
    start: Start, store: KeyStore, wait_for: WaitFor
) -> None:
    server = start()
    created = store.create("crm")
    assert wait_for(server, created.secret, 200) == 200
    store.set_enabled(created.record.id, False)
    assert wait_for(server, created.secret, 401) == 401
    store.set_enabled(created.record.id, True)
    assert wait_for(server, created.secret, 200) == 200
    store.delete(created.record.id)
    assert wait_for(server, created.secret, 401) == 401


def test_api_keys_broken_file_on_reload_keeps_the_old_keys(
    start: Start, store: KeyStore, keys_path: Path, wait_for: WaitFor,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="sluiceway.api_keys")
    created = store.create("crm")
    server = start()
    good = keys_path.read_text()
    keys_path.write_text(good + "\n[[keys]]\nid = 'broken'\n")  # no name, no hash
    for _ in range(200):  # each request lets the gateway look at the file again
        assert wait_for(server, created.secret, 200, attempts=0) == 200
        if "keeping the" in caplog.text:
            break
        time.sleep(0.025)
    assert f"keeping the 2 keys already loaded: {keys_path}: keys[2].name" in caplog.text
    assert wait_for(server, created.secret, 200, attempts=0) == 200

    keys_path.unlink()
    for _ in range(200):
        assert wait_for(server, created.secret, 200, attempts=0) == 200
        if "cannot stat the keys file" in caplog.text:
            break
        time.sleep(0.025)
    assert "cannot stat the keys file" in caplog.text

    keys_path.write_text(good)  # fixed: reloaded, and new keys work again
    newer = store.create("newer")
    assert wait_for(server, newer.secret, 200) == 200


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "keys file not found"),
        ("[[keys]\n", "not valid TOML"),
        (
            "[[keys]]\nid = 'a'\nname = 'x'\nhash = 'md5:abc'\n",
            "keys[0].hash: expected `str` matching regex",
        ),
        (
            "[[keys]]\nid = 'a'\nname = 'x'\nhash = 'sha256:" + "0" * 64 + "'\nenabeld = false\n",
            "keys[0].enabeld: unknown key",
        ),
    ],
)
def test_api_keys_broken_file_at_startup_is_a_config_error(
    keys_path: Path, content: str | None, problem: str
) -> None:
    if content is not None:
        keys_path.write_text(content)
    config = {
        "gateway": {"plugins": ["api-keys"]},
        "auth": {"chain": ["api-keys"], "api-keys": {"keys_file": str(keys_path)}},
    }
    with pytest.raises(sluiceway.ConfigError) as error:
        sluiceway.create_app(config)
    message = str(error.value)
    assert message.startswith(f"<config>: auth.api-keys.keys_file: {keys_path}: ")
    assert problem in message


def test_api_keys_relative_keys_file_resolves_against_the_config(
    config_file: Path, store: KeyStore, wait_for: WaitFor,
    gateway_factory: StartGateway, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(os.path.dirname(config_file) + "/..")  # not the config's directory
    server = gateway_factory(str(config_file))
    created = store.create("crm")
    assert wait_for(server, created.secret, 200) == 200
