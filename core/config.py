"""plugins.toml: reading, typing and validating the gateway's configuration.

The core owns ``[gateway]``, ``[server]``, ``[auth] chain`` and each
``[[providers]]`` table's ``name``/``type``/``models``. Everything else in a
provider table is validated against the ``config_model`` of its provider type,
and each ``[auth.<strategy>]`` table against its strategy type's. A
``[plugin.<name>]`` table is handed to its plugin as it is
(:meth:`Config.plugin_options`); the plugin validates it with
:func:`validate_options` to get the same error messages.

Values may use two conveniences, both resolved here, once, at startup:

* secrets as ``"env:VAR"`` in any field typed :class:`Secret`;
* durations as ``"250ms"``, ``"5s"``, ``"2m"``, ``"12h"`` (or a bare number of
  seconds) in any field typed :class:`Duration`; sizes as ``"10MB"``/``"512KiB"``
  in any field typed :class:`ByteSize`.

Every error is a :class:`~sluiceway.errors.ConfigError` naming the file, the key
path, what was found and what was expected.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

import msgspec

from .errors import ConfigError

__all__ = [
    "AuthSettings",
    "ByteSize",
    "Config",
    "Duration",
    "GatewaySettings",
    "ModelEntry",
    "ProviderSettings",
    "Secret",
    "ServerSettings",
    "load_config",
    "parse_config",
    "validate_options",
]

T = TypeVar("T")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|kib|mb|mib|gb|gib)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    None: 1,
    "b": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 1000**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "gib": 1024**3,
}


class Duration(float):
    """A number of seconds, written in config as ``"250ms"``, ``"5s"``, ``"12h"`` or a number."""

    @classmethod
    def parse(cls, value: object) -> Duration:
        if isinstance(value, bool):
            raise TypeError(f"expected a duration such as '5s', got {value!r}")
        if isinstance(value, int | float):
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"expected a finite, non-negative duration, got {value!r}")
            return cls(value)
        if isinstance(value, str) and (match := _DURATION.match(value)):
            return cls(float(match.group(1)) * _DURATION_UNITS[match.group(2)])
        raise ValueError(f"expected a duration such as '250ms', '5s' or '12h', got {value!r}")


class ByteSize(int):
    """A number of bytes, written as ``"10MB"``, ``"512KiB"`` or a number."""

    @classmethod
    def parse(cls, value: object) -> ByteSize:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return cls(value)
        if isinstance(value, str) and (match := _SIZE.match(value)):
            unit = match.group(2).lower() if match.group(2) else None
            return cls(int(float(match.group(1)) * _SIZE_UNITS[unit]))
        raise ValueError(f"expected a size such as '10MB' or '512KiB', got {value!r}")


class Secret:
    """A secret value; written in config as ``"env:VAR"`` so that it never lives in the file.

    ``str()`` and ``repr()`` never show the value: call :meth:`reveal`.
    """

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str = "literal") -> None:
        self._value = value
        self.source = source

    def reveal(self) -> str:
        """The secret itself, for the one place that must send it."""
        return self._value

    @classmethod
    def parse(cls, value: object) -> Secret:
        if not isinstance(value, str):
            raise TypeError(f"expected a string such as 'env:MY_KEY', got {type(value).__name__}")
        if value.startswith("env:"):
            var = value[4:]
            if var not in os.environ:
                raise ValueError(f"environment variable {var} is not set (referenced as {value!r})")
            return cls(os.environ[var], source=value)
        return cls(value)

    def __repr__(self) -> str:
        return f"Secret({self.source if self.source != 'literal' else '***'})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


_PARSERS: dict[type, Any] = {
    Duration: Duration.parse,
    ByteSize: ByteSize.parse,
    Secret: Secret.parse,
}


def _dec_hook(type_: type, value: object) -> object:
    parser = _PARSERS.get(type_)
    if parser is None:
        raise NotImplementedError(f"no config parser for {type_!r}")
    return parser(value)


# An HTTP header name (RFC 9110 token).
_HTTP_TOKEN = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"


class ServerSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[server]``: how ``sluiceway serve`` listens."""

    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8080
    workers: Annotated[int, msgspec.Meta(ge=1, le=256)] = 1
    # In-flight requests get this long after SIGTERM; streams still open then get
    # an error frame and a clean end instead of a cut.
    graceful_timeout: Duration = Duration(30)
    # Idle keep-alive connections close after this; it is also how long a client
    # may take to send its request headers (hypercorn's slow-loris guard).
    # A slow body is bounded separately by [gateway] body_timeout.
    keep_alive_timeout: Duration = Duration(5)
    # hypercorn's default of 1000 churns HTTP/2 connections.
    keep_alive_max_requests: Annotated[int, msgspec.Meta(ge=1)] = 100_000
    access_log: bool = False
    uvloop: bool = True
    # Providers and plugin lifespans must be up within this; a browser login may need more.
    startup_timeout: Duration = Duration(60)


class GatewaySettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[gateway]``: which plugins load (and in what order) and core request limits."""

    plugins: list[str] = msgspec.field(default_factory=list)
    max_body_size: ByteSize = ByteSize(8 * 1024 * 1024)
    # A body trickled in slowly holds a socket and a task; past this it is a 408.
    body_timeout: Duration = Duration(30)
    # Trust a caller's x-request-id only if it looks like an id, not a payload.
    request_id_header: Annotated[str, msgspec.Meta(pattern=_HTTP_TOKEN)] = "x-request-id"


class AuthSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[auth]``: the ordered chain of auth strategies; empty means authentication is off.

    Each ``[auth.<strategy>]`` sub-table holds that strategy's options.
    """

    chain: list[str] = msgspec.field(default_factory=list)
    options: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)


class ModelEntry(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One model a provider serves: the public ``name`` and the provider's own id for it."""

    name: Annotated[str, msgspec.Meta(min_length=1)]
    upstream: Annotated[str, msgspec.Meta(min_length=1)] | None = None

    @property
    def upstream_id(self) -> str:
        return self.upstream or self.name


class ProviderSettings(msgspec.Struct, kw_only=True):
    """One ``[[providers]]`` table. ``options`` holds every other key, for the provider type."""

    name: str
    type: str
    models: list[ModelEntry] = msgspec.field(default_factory=list)
    options: dict[str, Any] = msgspec.field(default_factory=dict)
    index: int = 0


class Config(msgspec.Struct, kw_only=True):
    """The whole configuration, as read from one file (or built in code)."""

    gateway: GatewaySettings = msgspec.field(default_factory=GatewaySettings)
    server: ServerSettings = msgspec.field(default_factory=ServerSettings)
    auth: AuthSettings = msgspec.field(default_factory=AuthSettings)
    providers: list[ProviderSettings] = msgspec.field(default_factory=list)
    plugin: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)
    source: str = "<config>"
    base_dir: str = "."

    def plugin_options(self, name: str) -> dict[str, Any]:
        """The raw ``[plugin.<name>]`` table (empty if absent)."""
        return self.plugin.get(name, {})


_TOP_LEVEL = {"gateway", "server", "auth", "providers", "plugin"}
_VALIDATION_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)


def _describe(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _lookup(data: object, path: str) -> object:
    """Follow a msgspec error path such as ``.providers[0].port`` into raw data."""
    for name, index in re.findall(r"\.([^.\[]+)|\[(\d+)\]", path):
        try:
            data = data[name] if name else data[int(index)]  # type: ignore[index]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def validate_options(data: Mapping[str, Any], model: type[T], *, source: str, key: str) -> T:
    """Validate a raw table against ``model`` (a ``msgspec.Struct``), resolving
    secrets, durations and sizes. Raises :class:`ConfigError` naming ``source``
    and the full key path of the first problem, with the value found."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"expected a table, found {_describe(data)}", source=source, key=key)
    try:
        return msgspec.convert(dict(data), model, dec_hook=_dec_hook, str_keys=True)
    except msgspec.ValidationError as exc:
        match = _VALIDATION_AT.match(str(exc))
        assert match is not None
        message, path = match.group("msg"), match.group("path") or ""
        full_key = (
            key + path
            if path.startswith("[")
            else ".".join(p for p in (key, path.lstrip(".")) if p)
        )
        unknown = re.match(r"Object contains unknown field `(.+)`", message)
        missing = re.match(r"Object missing required field `(.+)`", message)
        if unknown:
            full_key = f"{full_key}.{unknown.group(1)}" if full_key else unknown.group(1)
            message = f"unknown key (expected one of: {', '.join(_field_names(model, path))})"
        elif missing:
            full_key = f"{full_key}.{missing.group(1)}" if full_key else missing.group(1)
            message = "required key is missing"
        else:
            message = message[0].lower() + message[1:]
            found = _describe(_lookup(data, path)) if path else None
            if found is not None and found not in message:
                message += f" (found {found})"
        raise ConfigError(message, source=source, key=full_key) from None


def _field_names(model: type, path: str) -> list[str]:
    """Names of the struct that an error path points into, for 'did you mean'."""
    info: msgspec.inspect.Type | None = msgspec.inspect.type_info(model)
    for part in re.findall(r"\.([^.\[]+)", path):
        if not isinstance(info, msgspec.inspect.StructType):
            return []
        fields = {f.name: f.type for f in info.fields}
        info = fields.get(part)
        while isinstance(info, msgspec.inspect.ListType | msgspec.inspect.UnionType):
            info = (
                info.item_type
                if isinstance(info, msgspec.inspect.ListType)
                else next(
                    (t for t in info.types if isinstance(t, msgspec.inspect.StructType)), None
                )
            )
    if isinstance(info, msgspec.inspect.StructType):
        return [f.name for f in info.fields]
    return []


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
    name, type_ = table.pop("name"), table.pop("type")
    return ProviderSettings(name=name, type=type_, models=models, options=table, index=index)


def parse_config(
    data: Mapping[str, Any], *, source: str = "<config>", base_dir: str = "."
) -> Config:
    """Build a :class:`Config` from an already-parsed mapping (e.g. a test's dict)."""
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
    plugin_tables = data.get("plugin", {})
    if not isinstance(plugin_tables, dict) or not all(
        isinstance(v, dict) for v in plugin_tables.values()
    ):
        raise ConfigError("expected tables such as [plugin.NAME]", source=source, key="plugin")
    for name in plugin_tables:
        if name not in gateway.plugins:
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
        plugin=dict(plugin_tables),
        source=source,
        base_dir=base_dir,
    )


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a plugins.toml file."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", source=str(file)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", source=str(file)) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", source=str(file)) from None
    return parse_config(data, source=str(file), base_dir=str(file.resolve().parent))
