"""The keys file: its records, how secrets are made and hashed, reading and writing it.

The file is TOML and holds **hashes only**, never a secret::

    [[keys]]
    id = "key_3f9a0c41d2b7e865"
    name = "crm"
    prefix = "sk-sw-ab"
    hash = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    created_at = 2025-06-01T12:00:00Z
    enabled = true
    rpm = 100
    models = ["gpt-4o*"]
    expires_at = 2026-12-31T00:00:00Z

Why a plain SHA-256 rather than scrypt or PBKDF2: a secret is 32 bytes from
``os.urandom`` (256 bits of entropy), so nobody can guess it, and a slow hash
only protects secrets that *can* be guessed (passwords). With an unsalted fast
hash, a request is verified with one SHA-256 and one dict lookup, whatever the
number of keys; a per-key salt would force trying every key's salt on every
request. GitHub and Stripe store their tokens the same way.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import os
import re
import secrets
import tomllib
from datetime import UTC, date, datetime, time
from typing import Annotated, Any

import msgspec

from sluiceway.api import ConfigError, validate_options

__all__ = [
    "HASH_SCHEME",
    "SECRET_PREFIX",
    "KeyRecord",
    "KeysFile",
    "TeamRecord",
    "dump_keys",
    "hash_secret",
    "new_key_id",
    "new_secret",
    "parse_keys",
    "parse_store",
    "read_keys",
    "read_store",
    "verify_secret",
]

SECRET_PREFIX = "sk-sw-"
HASH_SCHEME = "sha256:"
PREFIX_LENGTH = 8
_HASH_PATTERN = r"^sha256:[0-9a-f]{64}$"
_DATETIME_FIELDS = ("expires_at", "created_at", "rotated_at")

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]


class KeyRecord(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """One ``[[keys]]`` table.

    Unknown fields are refused rather than ignored: a misspelt ``enabeld = false``
    must not leave a revoked key working. Datetimes without an offset are UTC.
    ``models`` absent means any model; ``models = []`` means none.
    """

    id: Annotated[str, msgspec.Meta(min_length=1)]
    name: str
    prefix: str = ""
    hash: Annotated[str, msgspec.Meta(pattern=_HASH_PATTERN)]
    enabled: bool = True
    rpm: PositiveInt | None = None
    tpm: PositiveInt | None = None
    max_concurrent: PositiveInt | None = None
    models: list[str] | None = None
    # The team (or project) the key belongs to: its budget applies to the key too.
    team: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    # US dollars the key may spend per budget period (the costs plugin's).
    budget: Annotated[float, msgspec.Meta(ge=0)] | None = None
    # The guardrails profiles that check the key's calls (the guardrails plugin's),
    # in place of its default.
    guardrails: list[Annotated[str, msgspec.Meta(min_length=1)]] | None = None
    expires_at: datetime | None = None
    created_at: datetime | None = None
    rotated_at: datetime | None = None

    def expires_ts(self) -> float:
        """The expiry as a POSIX timestamp (``inf`` when the key never expires)."""
        if self.expires_at is None:
            return math.inf
        return as_utc(self.expires_at).timestamp()

    def limits(self) -> dict[str, int | None]:
        """The limits the ``limits`` plugin will enforce, by name."""
        return {"rpm": self.rpm, "tpm": self.tpm, "max_concurrent": self.max_concurrent}

    def attributes(self) -> dict[str, Any]:
        """What the key's principal carries for policies: its limits, and its team
        and budget (the ``costs`` plugin's) and guardrails profiles when it has them."""
        found: dict[str, Any] = dict(self.limits())
        if self.team is not None:
            found["team"] = self.team
        if self.budget is not None:
            found["budget"] = self.budget
        if self.guardrails is not None:
            found["guardrails"] = tuple(self.guardrails)
        return found


class TeamRecord(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """One ``[[teams]]`` table: a team (or project) and its budget, in US dollars per
    budget period of the ``costs`` plugin, shared by every key whose ``team`` it is."""

    name: Annotated[str, msgspec.Meta(min_length=1)]
    budget: Annotated[float, msgspec.Meta(ge=0)] | None = None


class KeysFile(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The whole file: ``[[keys]]`` tables, then ``[[teams]]`` tables."""

    keys: list[KeyRecord] = msgspec.field(default_factory=list)
    teams: list[TeamRecord] = msgspec.field(default_factory=list)


def new_secret() -> str:
    """A new secret: ``sk-sw-`` and 32 random bytes, URL-safe base64 without padding."""
    return SECRET_PREFIX + base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()


def new_key_id() -> str:
    """A new public key id, such as ``key_3f9a0c41d2b7e865``."""
    return "key_" + secrets.token_hex(8)


def hash_secret(secret: str) -> str:
    """The stored form of a secret: ``sha256:<hex digest>``."""
    return HASH_SCHEME + hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def verify_secret(secret: str, stored_hash: str) -> bool:
    """Whether ``secret`` hashes to ``stored_hash``, compared in constant time."""
    return hmac.compare_digest(hash_secret(secret), stored_hash)


def as_utc(value: datetime) -> datetime:
    """``value`` with its offset, or as UTC when it has none."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _normalise(data: Any) -> Any:
    """TOML local dates (``expires_at = 2026-12-31``) become midnight UTC."""
    if isinstance(data, dict) and isinstance(data.get("keys"), list):
        for table in data["keys"]:
            if not isinstance(table, dict):
                continue
            for name in _DATETIME_FIELDS:
                value = table.get(name)
                if isinstance(value, date) and not isinstance(value, datetime):
                    table[name] = datetime.combine(value, time(), UTC)
    return data


def parse_keys(text: str, *, source: str) -> list[KeyRecord]:
    """Parse and check a keys file's text; a :class:`ConfigError` names ``source``
    and the key at fault (``keys[2].hash: ...``)."""
    return parse_store(text, source=source).keys


def parse_store(text: str, *, source: str) -> KeysFile:
    """The keys and the teams of a keys file's text, checked."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", source=source) from None
    parsed = validate_options(_normalise(data), KeysFile, source=source, key="")
    ids: dict[str, int] = {}
    hashes: dict[str, int] = {}
    for index, record in enumerate(parsed.keys):
        if record.id in ids:
            raise ConfigError(
                f"duplicate key id {record.id!r} (also keys[{ids[record.id]}])",
                source=source,
                key=f"keys[{index}].id",
            )
        if record.hash in hashes:
            raise ConfigError(
                f"same hash as keys[{hashes[record.hash]}]: one secret for two keys",
                source=source,
                key=f"keys[{index}].hash",
            )
        ids[record.id] = hashes[record.hash] = index
    names: set[str] = set()
    for index, team in enumerate(parsed.teams):
        if team.name in names:
            raise ConfigError(f"duplicate team {team.name!r}", source=source,
                              key=f"teams[{index}].name")
        names.add(team.name)
    return parsed


def read_keys(path: str | os.PathLike[str]) -> list[KeyRecord]:
    """Read and parse the keys file at ``path`` (:class:`ConfigError` naming it)."""
    return read_store(path).keys


def read_store(path: str | os.PathLike[str]) -> KeysFile:
    """The keys and teams of the keys file at ``path`` (:class:`ConfigError` naming it)."""
    source = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except FileNotFoundError:
        raise ConfigError(
            "keys file not found (create it with `sluiceway keys create`)", source=source
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        raise ConfigError(f"cannot read the keys file: {reason}", source=source) from None
    return parse_store(text, source=source)


# -- writing ---------------------------------------------------------------

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f",
            "\r": "\\r"}
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f\x7f]')


def _string(value: str) -> str:
    """A TOML basic string (every control character escaped, as TOML requires)."""
    return '"' + _NEEDS_ESCAPE.sub(
        lambda m: _ESCAPES.get(m.group(), f"\\u{ord(m.group()):04x}"), value
    ) + '"'


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)  # the shortest text that reads back the same float
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, datetime):
        return as_utc(value).astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, list):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to the keys file")


_HEADER = """\
# sluiceway API keys: hashes only, never a secret.
# Managed by `sluiceway keys` (create, list, revoke, rotate, delete);
# the gateway reloads this file when it changes.
"""


def dump_keys(records: list[KeyRecord], teams: list[TeamRecord] | None = None) -> str:
    """The TOML text of a keys file holding ``records`` and ``teams`` (fields in a
    fixed order)."""
    parts = [_HEADER]
    tables: list[tuple[str, msgspec.Struct]] = [("keys", record) for record in records]
    tables += [("teams", team) for team in teams or ()]
    for kind, table in tables:
        lines = ["", f"[[{kind}]]"]
        for field in table.__struct_fields__:
            value = getattr(table, field)
            if value is not None:
                lines.append(f"{field} = {_value(value)}")
        parts.append("\n".join(lines) + "\n")
    return "".join(parts)
