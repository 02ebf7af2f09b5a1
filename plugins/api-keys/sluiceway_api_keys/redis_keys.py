"""API keys in Redis, shared by every gateway instance.

The keys are one hash, ``<prefix>records`` (key id -> the record as JSON, hashes
only, never a secret), and a version counter, ``<prefix>version``, raised by
every change. A change is a read-modify-write under ``WATCH`` of the version,
applied in one ``MULTI``/``EXEC``: two writers never lose each other's change,
and a crash mid-write leaves the old keys or the new ones, never a mix. Each
gateway instance reads the version once per ``reload_interval`` and reloads the
hash when it moved, so a key revoked on one instance is refused by all within
that interval.

The client is redis-py's synchronous one (as the file store blocks on its file):
the ``sluiceway keys`` commands call it directly, the gateway from a worker
thread. ``redis://``, ``rediss://`` and ``unix://`` URLs are supported.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

from sluiceway.api import ConfigError, redact_url

from .keyfile import KeyRecord, TeamRecord
from .store import KeyOperations
from .strategy import SCHEMES

__all__ = ["SCHEMES", "RedisKeyStore"]

T = TypeVar("T")
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(KeyRecord).decode
_decode_team = msgspec.json.Decoder(TeamRecord).decode
_ATTEMPTS = 20


class RedisKeyStore(KeyOperations):
    """The keys in Redis at ``url``, under ``key_prefix``."""

    def __init__(self, url: str, *, key_prefix: str = "sluiceway:keys:",
                 timeout: float = 2.0) -> None:
        if not url.startswith(SCHEMES):
            raise ConfigError(f"keys storage must start with one of {', '.join(SCHEMES)}, "
                              f"not {redact_url(url)!r}")
        self.url = url
        self.where = redact_url(url)
        self._records = key_prefix + "records"
        self._teams = key_prefix + "teams"
        self._version = key_prefix + "version"
        self._timeout = timeout
        self._client: Any = None
        self._lock = threading.Lock()

    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                import redis

                self._client = redis.Redis.from_url(
                    self.url, socket_timeout=self._timeout,
                    socket_connect_timeout=self._timeout)
            return self._client

    def read(self) -> list[KeyRecord]:
        return self._parse(self.client().hgetall(self._records))

    def _parse(self, raw: dict[bytes, bytes]) -> list[KeyRecord]:
        try:
            records = [_decode(value) for value in raw.values()]
        except msgspec.DecodeError as exc:
            raise ConfigError(f"the keys in {self.where} cannot be read: {exc}") from None
        return sorted(records, key=lambda record: (
            record.created_at.timestamp() if record.created_at else 0.0, record.id))

    def read_teams(self) -> list[TeamRecord]:
        raw = self.client().hgetall(self._teams)
        return sorted((_decode_team(value) for value in raw.values()), key=lambda t: t.name)

    def update_teams(self, change: Callable[[list[TeamRecord]], T]) -> T:
        return self._update(self._teams, _decode_team, lambda team: team.name, change)

    def signature(self) -> int:
        return int(self.client().get(self._version) or 0)

    def update(self, change: Callable[[list[KeyRecord]], T]) -> T:
        """Read, ``change``, write: retried when another writer changed the keys in
        between (``WATCH``), applied whole (``MULTI``)."""
        return self._update(self._records, _decode, lambda record: record.id, change,
                            parse=self._parse)

    def _update(self, name: str, decode: Callable[[bytes], Any], key: Callable[[Any], str],
                change: Callable[[list[Any]], T],
                parse: Callable[[dict[bytes, bytes]], list[Any]] | None = None) -> T:
        import redis

        client = self.client()
        for _ in range(_ATTEMPTS):
            with client.pipeline() as pipe:
                try:
                    pipe.watch(self._version)
                    raw = pipe.hgetall(name)
                    items = parse(raw) if parse else [decode(value) for value in raw.values()]
                    result = change(items)
                    pipe.multi()
                    pipe.delete(name)
                    if items:
                        pipe.hset(name, mapping={key(item): _encode(item) for item in items})
                    pipe.incr(self._version)
                    pipe.execute()
                    return result
                except redis.WatchError:
                    continue
        raise ConfigError(f"the keys in {self.where} kept changing: try again")

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
