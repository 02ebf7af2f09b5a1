"""The keys file format: hand-written forms it accepts, and mistakes it refuses."""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sluiceway_api_keys import ApiKeysStrategy, KeyStore, hash_secret, new_secret, parse_keys

import sluiceway

HASH = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64


def key(id_: str = "key_1", hash_: str = HASH, extra: str = "") -> str:
    return f'[[keys]]\nid = "{id_}"\nname = "app"\nhash = "{hash_}"\n{extra}\n'


def test_api_keys_file_accepts_hand_written_dates() -> None:
    records = parse_keys(
        key("a", HASH, "expires_at = 2031-06-30")
        + key("b", OTHER, "expires_at = 2031-06-30T12:00:00\ncreated_at = '2030-01-01T00:00:00Z'"),
        source="keys.toml",
    )
    assert records[0].expires_at == datetime(2031, 6, 30, tzinfo=UTC)
    assert records[1].expires_ts() == datetime(2031, 6, 30, 12, tzinfo=UTC).timestamp()
    assert records[1].created_at == datetime(2030, 1, 1, tzinfo=UTC)
    assert parse_keys(key(), source="k").pop().expires_ts() == math.inf
    assert parse_keys("", source="k") == []


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (key("a") + key("a", OTHER), "keys[1].id: duplicate key id 'a' (also keys[0])"),
        (key("a") + key("b"), "keys[1].hash: same hash as keys[0]"),
        (key(extra="rpm = 0"), "keys[0].rpm: expected `int` >= 1"),
        (key(extra="models = 'gpt-*'"), "keys[0].models: expected `array | null`"),
        ("[[kyes]]\n", "kyes: unknown key"),
    ],
)
def test_api_keys_file_refuses_mistakes(text: str, problem: str) -> None:
    with pytest.raises(sluiceway.ConfigError) as error:
        parse_keys(text, source="keys.toml")
    assert str(error.value).startswith(f"keys.toml: {problem}")


def test_api_keys_secrets_are_random_and_hash_to_the_stored_form() -> None:
    secrets = {new_secret() for _ in range(100)}
    assert len(secrets) == 100
    assert all(s.startswith("sk-sw-") and len(s) == 49 for s in secrets)
    assert hash_secret("abc") == (
        "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_api_keys_warns_about_a_world_writable_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "keys.toml"
    path.write_text(key())
    path.chmod(0o666)
    with caplog.at_level(logging.WARNING, logger="sluiceway.api_keys"):
        strategy = ApiKeysStrategy(KeyStore(path), reload_interval=1.0)
    assert strategy.key_count == 1
    assert "world-writable" in caplog.text


def test_api_keys_teams_live_in_the_file_beside_the_keys(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.toml")
    made = store.create("svc", team="alpha")
    store.set_team("alpha", 12.5)
    text = (tmp_path / "keys.toml").read_text()
    assert "[[teams]]" in text and 'name = "alpha"' in text and "budget = 12.5" in text
    # Changing keys keeps the teams, and changing teams keeps the keys.
    store.rotate(made.record.id)
    assert [(t.name, t.budget) for t in store.read_teams()] == [("alpha", 12.5)]
    store.delete_team("alpha")
    assert [r.id for r in store.read()] == [made.record.id] and store.read_teams() == []
    strategy = ApiKeysStrategy(KeyStore(tmp_path / "keys.toml"), reload_interval=1.0)
    assert strategy.key_count == 1
