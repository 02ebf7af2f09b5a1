"""Value types for configuration, and the validation that gives every error its key.

``Duration``, ``ByteSize`` and ``Secret`` are resolved from their written forms
once, at startup; :func:`validate_options` turns a raw table into a typed
``msgspec.Struct`` or raises a :class:`~sluiceway.errors.ConfigError` that names
the file, the full key path, what was found and what was expected.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec

from ..errors import ConfigError

__all__ = ["ByteSize", "Duration", "Secret", "format_duration", "validate_options"]

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


def format_duration(seconds: float) -> str:
    """OpenAI's style for durations in headers such as ``x-ratelimit-reset-*``:
    ``20ms``, ``1s``, ``1.5s``, ``6m0s``, ``23h5m0s`` (rounded up to the millisecond;
    ``0s`` for anything not positive)."""
    if not math.isfinite(seconds) or seconds <= 0:
        return "0s"
    millis = math.ceil(seconds * 1000)
    if millis < 1000:
        return f"{millis}ms"
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, fraction = divmod(rest, 1000)
    secs = f"{whole}.{fraction:03d}".rstrip("0") if fraction else str(whole)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


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


def validate_options(data: object, model: type[T], *, source: str, key: str) -> T:
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
