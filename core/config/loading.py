"""Reading plugins.toml into a :class:`~sluiceway.config.settings.Config`: the file,
its top-level tables, each ``[[providers]]`` entry and its ``models``, and the
aliases, every error naming the file and the key."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .settings import (
    POLICY_KEYS,
    AliasSettings,
    AuthSettings,
    Config,
    GatewaySettings,
    ModelEntry,
    ProviderPolicy,
    ProviderSettings,
    ServerSettings,
    SessionSettings,
    StateSettings,
)
from .values import _describe, validate_options

__all__ = ["load_config", "parse_config"]


_TOP_LEVEL = {"gateway", "server", "auth", "providers", "aliases", "plugin", "sessions",
              "state"}


def _provider(raw: object, index: int, source: str) -> ProviderSettings:
    key = f"providers[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"expected a table, found {_describe(raw)}", source=source, key=key)
    table = dict(raw)
    for required in ("name", "type"):
        if not isinstance(table.get(required), str) or not table[required]:
            found = _describe(table.get(required)) if required in table else "nothing"
            raise ConfigError(
                f"expected a non-empty string, found {found}",
                source=source,
                key=f"{key}.{required}",
            )
    models_raw = table.pop("models", [])
    if not isinstance(models_raw, list):
        raise ConfigError(
            f"expected a list of model names or tables, found {_describe(models_raw)}",
            source=source,
            key=f"{key}.models",
        )
    models = [
        validate_options(
            {"name": m} if isinstance(m, str) else m if isinstance(m, dict) else {"name": m},
            ModelEntry,
            source=source,
            key=f"{key}.models[{i}]",
        )
        for i, m in enumerate(models_raw)
    ]
    seen: set[str] = set()
    for i, entry in enumerate(models):
        if entry.name in seen:
            raise ConfigError(
                f"model {entry.name!r} is listed twice", source=source, key=f"{key}.models[{i}]"
            )
        seen.add(entry.name)
    policy = validate_options(
        {k: table.pop(k) for k in list(table) if k in POLICY_KEYS},
        ProviderPolicy, source=source, key=key,
    )
    name, type_ = table.pop("name"), table.pop("type")
    return ProviderSettings(
        name=name, type=type_, models=models, policy=policy, options=table, index=index
    )


def _alias_table(raw: object) -> object:
    """Targets may be written as plain ``"provider/model"`` strings."""
    if isinstance(raw, dict) and isinstance(raw.get("targets"), list):
        targets = [{"target": t} if isinstance(t, str) else t for t in raw["targets"]]
        return {**raw, "targets": targets}
    return raw


def parse_config(
    data: Mapping[str, Any], *, source: str = "<config>", base_dir: str = ".",
    extra_plugins: Iterable[str] = (),
) -> Config:
    """Build a :class:`Config` from an already-parsed mapping (e.g. a test's dict).
    ``extra_plugins`` names in-process plugins that may have ``[plugin.*]`` tables
    without being in ``gateway.plugins``."""
    unknown = sorted(set(data) - _TOP_LEVEL)
    if unknown:
        raise ConfigError(
            f"unknown table (expected one of: {', '.join(sorted(_TOP_LEVEL))})",
            source=source,
            key=unknown[0],
        )
    gateway = validate_options(
        data.get("gateway", {}), GatewaySettings, source=source, key="gateway"
    )
    server = validate_options(data.get("server", {}), ServerSettings, source=source, key="server")
    sessions = validate_options(
        data.get("sessions", {}), SessionSettings, source=source, key="sessions"
    )
    state = validate_options(data.get("state", {}), StateSettings, source=source, key="state")
    auth_raw = data.get("auth", {})
    if not isinstance(auth_raw, dict):
        raise ConfigError("expected a table", source=source, key="auth")
    auth = validate_options(
        {k: v for k, v in auth_raw.items() if not isinstance(v, dict)},
        AuthSettings,
        source=source,
        key="auth",
    )
    auth.options = {k: v for k, v in auth_raw.items() if isinstance(v, dict)}
    raw_providers = data.get("providers", [])
    if not isinstance(raw_providers, list):
        raise ConfigError(
            "expected an array of tables ([[providers]])", source=source, key="providers"
        )
    providers = [_provider(p, i, source) for i, p in enumerate(raw_providers)]
    seen: dict[str, int] = {}
    for p in providers:
        if p.name in seen:
            raise ConfigError(
                f"duplicate provider name {p.name!r} (also providers[{seen[p.name]}])",
                source=source,
                key=f"providers[{p.index}].name",
            )
        seen[p.name] = p.index
    raw_aliases = data.get("aliases", [])
    if not isinstance(raw_aliases, list):
        raise ConfigError("expected an array of tables ([[aliases]])", source=source, key="aliases")
    aliases = [
        validate_options(_alias_table(a), AliasSettings, source=source, key=f"aliases[{i}]")
        for i, a in enumerate(raw_aliases)
    ]
    plugin_tables = data.get("plugin", {})
    if not isinstance(plugin_tables, dict) or not all(
        isinstance(v, dict) for v in plugin_tables.values()
    ):
        raise ConfigError("expected tables such as [plugin.NAME]", source=source, key="plugin")
    known = {*gateway.plugins, *extra_plugins}
    for name in plugin_tables:
        if name not in known:
            raise ConfigError(
                f"configures plugin {name!r}, which is not in gateway.plugins",
                source=source,
                key=f"plugin.{name}",
            )
    return Config(
        gateway=gateway,
        server=server,
        auth=auth,
        providers=providers,
        aliases=aliases,
        plugin=dict(plugin_tables),
        sessions=sessions,
        state=state,
        source=source,
        base_dir=base_dir,
    )


def load_config(path: str | os.PathLike[str], *, extra_plugins: Iterable[str] = ()) -> Config:
    """Read and validate a plugins.toml file."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", source=str(file)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text (byte {exc.start})", source=str(file)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", source=str(file)) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", source=str(file)) from None
    return parse_config(data, source=str(file), base_dir=str(file.resolve().parent),
                        extra_plugins=extra_plugins)
