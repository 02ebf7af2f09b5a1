"""plugins.toml: parsing, conveniences and the shape of every error."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

import sluiceway
from sluiceway.config import ByteSize, Duration, Secret, load_config, parse_config, validate_options


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("5s", 5.0),
        ("2m", 120.0),
        ("12h", 43200.0),
        ("1d", 86400.0),
        ("1.5s", 1.5),
        (3, 3.0),
        (0.5, 0.5),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert Duration.parse(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["5 parsecs", "-1s", -2, True, "", None])
def test_bad_durations(bad: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        Duration.parse(bad)


@pytest.mark.parametrize(
    ("text", "size"),
    [("10MB", 10_000_000), ("512KiB", 524_288), ("1gib", 1024**3), (100, 100), ("7", 7)],
)
def test_sizes(text: object, size: int) -> None:
    assert ByteSize.parse(text) == size


def test_env_secrets_are_resolved_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICEWAY_TEST_KEY", "sk-very-secret")
    secret = Secret.parse("env:SLUICEWAY_TEST_KEY")
    assert secret.reveal() == "sk-very-secret"
    assert "sk-very-secret" not in repr(secret)
    assert "sk-very-secret" not in str(secret)
    assert "SLUICEWAY_TEST_KEY" in repr(secret)


class _Options(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    api_key: Secret
    timeout: Duration = Duration(5)
    retries: int = 2


def test_missing_env_secret_names_the_variable_and_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLUICEWAY_NOT_SET", raising=False)
    with pytest.raises(sluiceway.ConfigError) as info:
        validate_options(
            {"api_key": "env:SLUICEWAY_NOT_SET"}, _Options, source="p.toml", key="providers[0]"
        )
    assert str(info.value).startswith("p.toml: providers[0].api_key: ")
    assert "SLUICEWAY_NOT_SET is not set" in str(info.value)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"api_key": "x", "retries": "two"},
            "p.toml: providers[0].retries: expected `int`, got `str` (found 'two')",
        ),
        (
            {"api_key": "x", "timeout": "soon"},
            "p.toml: providers[0].timeout: expected a duration such as '250ms', '5s' or '12h', "
            "got 'soon'",
        ),
        (
            {"api_key": "x", "retrys": 3},
            "p.toml: providers[0].retrys: unknown key (expected one of: api_key, timeout, retries)",
        ),
        ({}, "p.toml: providers[0].api_key: required key is missing"),
    ],
)
def test_option_errors_name_file_key_found_and_expected(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(sluiceway.ConfigError) as info:
        validate_options(options, _Options, source="p.toml", key="providers[0]")
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"gatway": {}}, "<config>: gatway: unknown table"),
        (
            {"server": {"port": "eighty"}},
            "<config>: server.port: expected `int`, got `str` (found 'eighty')",
        ),
        ({"gateway": {"plugins": "mock"}}, "<config>: gateway.plugins: expected `array`"),
        (
            {"providers": [{"type": "mock"}]},
            "<config>: providers[0].name: expected a non-empty string, found nothing",
        ),
        (
            {"providers": [{"name": "a", "type": "mock"}, {"name": "a", "type": "mock"}]},
            "<config>: providers[1].name: duplicate provider name 'a' (also providers[0])",
        ),
        (
            {"providers": [{"name": "a", "type": "mock", "models": [{"nam": "x"}]}]},
            "<config>: providers[0].models[0].nam: unknown key",
        ),
        (
            {"plugin": {"ghost": {}}},
            "<config>: plugin.ghost: configures plugin 'ghost', which is not in gateway.plugins",
        ),
        (
            {"server": {"graceful_timeout": "forever"}},
            "<config>: server.graceful_timeout: expected a duration",
        ),
        ({"gateway": {"max_body_size": "big"}}, "<config>: gateway.max_body_size: expected a size"),
    ],
)
def test_config_errors(data: dict[str, object], message: str) -> None:
    with pytest.raises(sluiceway.ConfigError) as info:
        parse_config(data)
    assert str(info.value).startswith(message)


def test_unknown_provider_type_and_auth_strategy_are_named() -> None:
    with pytest.raises(sluiceway.ConfigError) as info:
        sluiceway.create_app({"providers": [{"name": "x", "type": "nope"}]})
    assert str(info.value).startswith("<config>: providers[0].type: unknown provider type 'nope'")
    with pytest.raises(sluiceway.ConfigError) as info:
        sluiceway.create_app({"auth": {"chain": ["api-keys"]}})
    assert str(info.value).startswith("<config>: auth.chain[0]: unknown auth strategy 'api-keys'")


def test_load_config_reads_toml_and_reports_its_errors(tmp_path: Path) -> None:
    good = tmp_path / "plugins.toml"
    good.write_text(
        '[gateway]\nplugins = []\nmax_body_size = "1MiB"\n\n'
        '[server]\nport = 9000\ngraceful_timeout = "250ms"\n\n'
        '[[providers]]\nname = "p"\ntype = "mock"\n'
        'models = ["a", {name = "b", upstream = "real-b"}]\nttft = "5ms"\n'
    )
    config = load_config(good)
    assert config.server.port == 9000
    assert config.server.graceful_timeout == pytest.approx(0.25)
    assert config.gateway.max_body_size == 1024 * 1024
    provider = config.providers[0]
    assert [(m.name, m.upstream_id) for m in provider.models] == [("a", "a"), ("b", "real-b")]
    assert provider.options == {"ttft": "5ms"}

    broken = tmp_path / "broken.toml"
    broken.write_text("[gateway\n")
    with pytest.raises(sluiceway.ConfigError) as info:
        load_config(broken)
    assert str(info.value).startswith(f"{broken}: not valid TOML")
    with pytest.raises(sluiceway.ConfigError) as info:
        load_config(tmp_path / "absent.toml")
    assert str(info.value) == f"{tmp_path / 'absent.toml'}: file not found"
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b'[gateway]\nplugins = ["caf\xe9"]\n')
    with pytest.raises(sluiceway.ConfigError) as info:
        load_config(latin)
    assert str(info.value) == f"{latin}: not UTF-8 text (byte 25)"


def test_the_repository_default_stack_is_valid() -> None:
    config = load_config(Path(__file__).parent.parent / "plugins.toml")
    assert config.gateway.plugins == ["mock"]
    assert config.auth.chain == []
    assert config.server.port == 8080
    gateway = sluiceway.create_app(config)
    assert "mock" in gateway.registry.provider_types


def test_a_model_served_twice_is_caught_before_startup() -> None:
    with pytest.raises(sluiceway.ConfigError) as info:
        sluiceway.create_app(
            {
                "gateway": {"plugins": ["mock"]},
                "providers": [
                    {"name": "a", "type": "mock", "models": ["m"]},
                    {"name": "b", "type": "mock", "models": ["x", "m"]},
                ],
            }
        )
    assert str(info.value) == (
        "<config>: providers[1].models[1]: model 'm' is also served by provider 'a'; "
        "give one of them another name, or put both behind an alias"
    )


def test_options_for_a_strategy_outside_the_chain_are_refused() -> None:
    with pytest.raises(sluiceway.ConfigError) as info:
        sluiceway.create_app({"auth": {"chain": [], "api-kyes": {"keys_file": "k.toml"}}})
    assert str(info.value) == (
        "<config>: auth.api-kyes: configures auth strategy 'api-kyes', which is not in auth.chain"
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"gateway": 5}, "<config>: gateway: expected a table"),
        ({"server": ["x"]}, "<config>: server: expected a table"),
        (
            {"server": {"graceful_timeout": float("nan")}},
            "<config>: server.graceful_timeout: expected a finite, non-negative duration",
        ),
        ({"server": {"port": 99999}}, "<config>: server.port: expected `int` <= 65535"),
        ({"server": {"workers": 0}}, "<config>: server.workers: expected `int` >= 1"),
        (
            {"gateway": {"request_id_header": "X Request Id"}},
            "<config>: gateway.request_id_header: expected `str` matching",
        ),
        (
            {"providers": [{"name": "a", "type": "mock", "models": ["m", "m"]}]},
            "<config>: providers[0].models[1]: model 'm' is listed twice",
        ),
        (
            {"providers": [{"name": "a", "type": "mock", "models": [""]}]},
            "<config>: providers[0].models[0].name: expected `str` of length >= 1",
        ),
    ],
)
def test_config_holes_are_closed(data: dict[str, object], message: str) -> None:
    with pytest.raises(sluiceway.ConfigError) as info:
        parse_config(data)
    assert str(info.value).startswith(message)


def test_in_process_plugins_may_have_plugin_tables() -> None:
    class Quiet:
        pass

    config = {"plugin": {"quiet": {"level": 2}}}
    gateway = sluiceway.create_app(config, plugins=[("quiet", Quiet())])
    assert gateway.config.plugin_options("quiet") == {"level": 2}
    with pytest.raises(sluiceway.ConfigError, match=r"plugin\.quiet: configures plugin 'quiet'"):
        sluiceway.create_app(config)
