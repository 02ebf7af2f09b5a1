"""The keys, and changing them safely: one writer at a time, never half written.

:class:`KeyOperations` is what every store does (create, rotate, revoke,
enable, delete) as one read-modify-write ``update``; a store says how it reads,
writes atomically and tells a change (``signature``). :class:`KeyStore` is the
keys file; :class:`~sluiceway_api_keys.redis_keys.RedisKeyStore` keeps the keys
in Redis, shared by every instance. The ``sluiceway keys`` commands and the
gateway use the same stores.

The file: every change is read-modify-write under an exclusive ``fcntl.flock``
on a sidecar ``<keys file>.lock``, so two ``sluiceway keys`` processes never
lose each other's update. The new text goes to a temporary file in the same
directory (mode 0600), is fsynced, and replaces the old file with
``os.replace``, which is atomic: the gateway, which reads without the lock,
sees either the old file or the new one, never a mix. The directory is
fsynced too, so the rename survives a crash.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from .keyfile import (
    PREFIX_LENGTH,
    KeyRecord,
    KeysFile,
    TeamRecord,
    as_utc,
    dump_keys,
    hash_secret,
    new_key_id,
    new_secret,
    read_keys,
    read_store,
)

__all__ = ["CHANGEABLE", "CreatedKey", "KeyNotFound", "KeyOperations", "KeyStore",
           "describe_key", "key_status"]

FILE_MODE = 0o600
# What may change of a key after it was made (never its id, secret or history).
CHANGEABLE = frozenset({"name", "rpm", "tpm", "max_concurrent", "models", "expires_at",
                        "team", "budget"})
T = TypeVar("T")


class KeyNotFound(LookupError):
    """No key has this id."""


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A key just created or rotated, with the only copy of its secret."""

    record: KeyRecord
    secret: str


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def key_status(record: KeyRecord, now: datetime) -> str:
    """``enabled``, ``revoked`` or ``expired``."""
    if not record.enabled:
        return "revoked"
    if record.expires_at is not None and as_utc(record.expires_at) <= now:
        return "expired"
    return "enabled"


def _when(value: datetime | None) -> str | None:
    return as_utc(value).isoformat().replace("+00:00", "Z") if value is not None else None


def describe_key(record: KeyRecord, now: datetime | None = None) -> dict[str, Any]:
    """A key as the CLI and the admin API show it: never its secret or hash."""
    return {
        "id": record.id,
        "name": record.name,
        "prefix": record.prefix,
        **record.limits(),
        "team": record.team,
        "budget": record.budget,
        "models": record.models,
        "expires_at": _when(record.expires_at),
        "created_at": _when(record.created_at),
        "status": key_status(record, now or datetime.now(UTC)),
    }


class KeyOperations:
    """The operations on keys, for any store with ``read`` and ``update``."""

    #: Where the keys are, for messages ("keys.toml", "redis://host/0").
    where: str = ""

    def read(self) -> list[KeyRecord]:
        raise NotImplementedError

    def load(self) -> list[KeyRecord]:
        """The keys, for the gateway: as :meth:`read`, but a store that does not
        exist yet is an error rather than no keys."""
        return self.read()

    def read_teams(self) -> list[TeamRecord]:
        raise NotImplementedError

    def update_teams(self, change: Callable[[list[TeamRecord]], T]) -> T:
        """As :meth:`update`, for the teams."""
        raise NotImplementedError

    def set_team(self, name: str, budget: float | None) -> TeamRecord:
        """Create team ``name``, or set its budget (``None``: no budget)."""

        def apply(teams: list[TeamRecord]) -> TeamRecord:
            team = TeamRecord(name=name, budget=budget)
            for index, existing in enumerate(teams):
                if existing.name == name:
                    teams[index] = team
                    return team
            teams.append(team)
            return team

        return self.update_teams(apply)

    def delete_team(self, name: str) -> TeamRecord:
        """Remove team ``name`` (its keys keep their ``team``, with no budget)."""

        def apply(teams: list[TeamRecord]) -> TeamRecord:
            for index, existing in enumerate(teams):
                if existing.name == name:
                    return teams.pop(index)
            raise KeyNotFound(name)

        return self.update_teams(apply)

    def update(self, change: Callable[[list[KeyRecord]], T]) -> T:
        """Read, ``change`` the list in place, write it back: atomically, and
        without losing a concurrent writer's change."""
        raise NotImplementedError

    def signature(self) -> object:
        """Something that changes whenever the keys do (checked by the gateway)."""
        raise NotImplementedError

    @staticmethod
    def _index(records: list[KeyRecord], key_id: str) -> int:
        for index, record in enumerate(records):
            if record.id == key_id:
                return index
        raise KeyNotFound(key_id)

    def get(self, key_id: str) -> KeyRecord:
        """The key ``key_id``, or :class:`KeyNotFound`."""
        records = self.read()
        return records[self._index(records, key_id)]

    def create(
        self,
        name: str,
        *,
        rpm: int | None = None,
        tpm: int | None = None,
        max_concurrent: int | None = None,
        models: list[str] | None = None,
        expires_at: datetime | None = None,
        team: str | None = None,
        budget: float | None = None,
        guardrails: list[str] | None = None,
    ) -> CreatedKey:
        """Add a key and return it with its secret (which is stored nowhere)."""
        secret = new_secret()

        def add(records: list[KeyRecord]) -> KeyRecord:
            taken = {record.id for record in records}
            key_id = new_key_id()
            while key_id in taken:
                key_id = new_key_id()
            record = KeyRecord(
                id=key_id,
                name=name,
                prefix=secret[:PREFIX_LENGTH],
                hash=hash_secret(secret),
                rpm=rpm,
                tpm=tpm,
                max_concurrent=max_concurrent,
                models=list(models) if models is not None else None,
                team=team,
                budget=budget,
                guardrails=list(guardrails) if guardrails is not None else None,
                expires_at=expires_at,
                created_at=_now(),
            )
            records.append(record)
            return record

        return CreatedKey(self.update(add), secret)

    def rotate(self, key_id: str) -> CreatedKey:
        """Give key ``key_id`` a new secret; the old one stops working at the next reload."""
        secret = new_secret()

        def replace(records: list[KeyRecord]) -> KeyRecord:
            index = self._index(records, key_id)
            records[index] = msgspec.structs.replace(
                records[index],
                prefix=secret[:PREFIX_LENGTH],
                hash=hash_secret(secret),
                rotated_at=_now(),
            )
            return records[index]

        return CreatedKey(self.update(replace), secret)

    def set_enabled(self, key_id: str, enabled: bool) -> KeyRecord:
        """Revoke (``enabled=False``) or re-enable key ``key_id``."""

        def change(records: list[KeyRecord]) -> KeyRecord:
            index = self._index(records, key_id)
            records[index] = msgspec.structs.replace(records[index], enabled=enabled)
            return records[index]

        return self.update(change)

    def change(self, key_id: str, **fields: object) -> KeyRecord:
        """Set some of key ``key_id``'s ``name``, ``rpm``, ``tpm``, ``max_concurrent``,
        ``models`` and ``expires_at`` (``None`` clears a limit)."""
        unknown = set(fields) - CHANGEABLE
        if unknown:
            raise ValueError(f"cannot change {', '.join(sorted(unknown))} of a key")

        def apply(records: list[KeyRecord]) -> KeyRecord:
            index = self._index(records, key_id)
            records[index] = msgspec.structs.replace(records[index], **fields)
            return records[index]

        return self.update(apply)

    def delete(self, key_id: str) -> KeyRecord:
        """Remove key ``key_id`` from the store altogether."""
        return self.update(lambda records: records.pop(self._index(records, key_id)))


class KeyStore(KeyOperations):
    """The keys file at ``path``, changed only under its lock."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.where = str(self.path)

    # -- plumbing ----------------------------------------------------------

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the exclusive lock (blocking until other writers are done)."""
        import fcntl  # POSIX only; imported here so that the gateway never needs it

        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _file(self) -> KeysFile:
        return read_store(self.path) if self.path.exists() else KeysFile()

    def read(self) -> list[KeyRecord]:
        """The current keys; an absent file has none (the first ``create`` makes it)."""
        return self._file().keys

    def read_teams(self) -> list[TeamRecord]:
        return self._file().teams

    def load(self) -> list[KeyRecord]:
        return read_keys(self.path)  # a missing file is a ConfigError naming it

    def write(self, records: list[KeyRecord], teams: list[TeamRecord] | None = None) -> None:
        """Replace the file atomically (call with the lock held)."""
        text = dump_keys(records, teams).encode("utf-8")
        directory = self.path.parent
        fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, FILE_MODE)
            with os.fdopen(fd, "wb") as file:
                file.write(text)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def update(self, change: Callable[[list[KeyRecord]], T]) -> T:
        """Read, ``change`` the list in place, write; all under the lock."""
        with self.locked():
            stored = self._file()
            result = change(stored.keys)
            self.write(stored.keys, stored.teams)
            return result

    def update_teams(self, change: Callable[[list[TeamRecord]], T]) -> T:
        with self.locked():
            stored = self._file()
            result = change(stored.teams)
            self.write(stored.keys, stored.teams)
            return result

    def signature(self) -> tuple[int, int, int, int]:
        info = os.stat(self.path)
        return (info.st_dev, info.st_ino, info.st_mtime_ns, info.st_size)
