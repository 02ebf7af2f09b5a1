"""The ``api-keys`` auth strategy: hashed keys from a file or from Redis, reloaded
when they change.

A request is verified with one SHA-256 and one dict lookup (see
:mod:`sluiceway_api_keys.keyfile` for why that is safe). The :class:`Principal`
of every key is built once, when the file is loaded, so accepting a request
allocates nothing.

Reload: ``authenticate`` looks at the store's signature (the file's ``stat``, or
the version Redis keeps) at most once per ``reload_interval``, from the request
that finds the interval over, in a worker thread (``asyncio.to_thread``), so the
event loop never blocks on the disk or the network.
This is lazy on purpose, rather than a background task started by the
``lifespan`` hook: there is nothing to start or stop, it works the same when
the gateway is mounted in a host app that never runs its lifespan, and an idle
gateway touches nothing. Keys only matter when requests arrive, and then the
file is never more than one interval stale. The request that runs the check
waits for it (about a stat: tens of microseconds) so it sees the new keys;
requests arriving meanwhile use the keys already loaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import math
import os
import stat
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import msgspec

from sluiceway.api import AuthenticationFailed, ConfigError, Duration, Principal

from .keyfile import KeyRecord, TeamRecord, hash_secret
from .store import KeyOperations, KeyStore

if TYPE_CHECKING:
    from sluiceway.api import Gateway, RequestContext

__all__ = ["ApiKeysOptions", "ApiKeysStrategy", "create_strategy", "key_store",
           "resolve_keys_file"]

log = logging.getLogger("sluiceway.api_keys")

# The Redis URLs the keys may be kept at.
SCHEMES = ("redis://", "rediss://", "unix://")

# Headers a client may carry its key in, after `Authorization: Bearer`
# (x-api-key: Anthropic SDKs and many tools; api-key: Azure OpenAI SDKs).
KEY_HEADERS = (b"x-api-key", b"api-key")
# Echo the first characters of an unknown key only when it is long enough that
# they cannot be most of it.
_ECHO_MIN_LENGTH = 32
_ECHO_LENGTH = 8


class ApiKeysOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[auth.api-keys]``.

    ``storage``: ``"file"`` (the default: ``keys_file``, a path relative to the
    directory of the configuration file) or a Redis URL (``redis://``,
    ``rediss://``, ``unix://``): keys shared by every instance, under
    ``key_prefix``. ``reload_interval``: how often, at most, the keys are checked
    for changes (so a key revoked anywhere is refused everywhere within it).
    """

    storage: str = "file"
    keys_file: str | None = None
    key_prefix: str = "sluiceway:keys:"
    reload_interval: Duration = Duration(1)

    def __post_init__(self) -> None:
        if self.storage == "file" and not self.keys_file:
            raise ValueError('keys_file is required with storage = "file"')
        if self.storage != "file" and not self.storage.startswith(SCHEMES):
            raise ValueError(f"storage must be \"file\" or a URL starting with one of "
                             f"{', '.join(SCHEMES)}")


@dataclass(frozen=True, slots=True)
class _Entry:
    """What a request needs to know about one key, precomputed at load."""

    hash: str
    principal: Principal
    prefix: str
    enabled: bool
    expires_ts: float


def resolve_keys_file(keys_file: str, base_dir: str | os.PathLike[str]) -> Path:
    """``keys_file`` as an absolute path, relative ones against ``base_dir``."""
    path = Path(keys_file).expanduser()
    return path if path.is_absolute() else (Path(base_dir) / path).resolve()


def _index(records: list[KeyRecord], teams: list[TeamRecord]) -> dict[str, _Entry]:
    budgets = {team.name: team.budget for team in teams if team.budget is not None}

    def attributes(record: KeyRecord) -> dict[str, Any]:
        found = record.attributes()
        if record.team in budgets:
            found["team_budget"] = budgets[record.team]  # for the costs plugin
        return found

    return {
        record.hash: _Entry(
            hash=record.hash,
            principal=Principal(
                key_id=record.id,
                name=record.name,
                allowed_models=tuple(record.models) if record.models is not None else None,
                attributes=MappingProxyType(attributes(record)),
            ),
            prefix=record.prefix,
            enabled=record.enabled,
            expires_ts=record.expires_ts(),
        )
        for record in records
    }


def _warn_if_world_writable(path: Path) -> None:
    with_mode = os.stat(path).st_mode
    if with_mode & stat.S_IWOTH:
        log.warning("keys file %s is world-writable: anyone on this host can add a key", path)


class ApiKeysStrategy:
    """Accepts a key from ``Authorization: Bearer``, ``x-api-key`` or ``api-key``.

    No key in those headers: ``None`` (the next strategy is asked). A key that
    is unknown, revoked or expired: :class:`AuthenticationFailed` with code
    ``invalid_api_key``, ``api_key_revoked`` or ``api_key_expired``.
    """

    def __init__(self, source: KeyOperations, reload_interval: float) -> None:
        self.source = source
        self.reload_interval = float(reload_interval)
        # The signature before reading: a change in between is seen at the next check.
        try:
            self._signature: object = source.signature()
        except Exception:
            self._signature = None  # reading below says what is wrong
        try:
            records = source.load()
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(f"cannot read the keys from {source.where}: "
                              f"{type(exc).__name__}: {exc}") from None
        if isinstance(source, KeyStore):
            _warn_if_world_writable(source.path)
        self._entries = _index(records, source.read_teams())
        self._next_check = time.monotonic() + self.reload_interval
        self._reload_lock = threading.Lock()
        self._last_problem: str | None = None
        log.info("api-keys: %d keys loaded from %s", len(records), source.where)
        log.debug("api-keys: key ids %s", [record.id for record in records])

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """Entered at startup, left at shutdown (and when a reload retires this
        build): closes the store's client, if it has one (Redis)."""
        try:
            yield
        finally:
            close = getattr(self.source, "close", None)
            if close is not None:
                await asyncio.to_thread(close)

    @property
    def key_count(self) -> int:
        """How many keys are loaded (enabled or not)."""
        return len(self._entries)

    # -- request path ------------------------------------------------------

    @staticmethod
    def credential(ctx: RequestContext) -> str | None:
        """The key the request carries, or ``None`` if it carries none."""
        header = ctx.header(b"authorization")
        if header is not None:
            scheme, _, token = header.partition(" ")
            token = token.strip()
            if scheme.lower() == "bearer" and token:
                return token
        for name in KEY_HEADERS:
            value = ctx.header(name)
            if value and value.strip():
                return value.strip()
        return None

    async def authenticate(self, ctx: RequestContext) -> Principal | None:
        """The key's principal, ``None`` without a key, or a 401 for a bad one."""
        secret = self.credential(ctx)
        if secret is None:
            return None
        if time.monotonic() >= self._next_check:
            await self.check_for_changes()
        digest = hash_secret(secret)
        entry = self._entries.get(digest)
        if entry is None or not hmac.compare_digest(entry.hash, digest):
            hint = (
                f": {secret[:_ECHO_LENGTH]}****" if len(secret) >= _ECHO_MIN_LENGTH else ""
            )
            raise AuthenticationFailed(
                f"Incorrect API key provided{hint}. Check the key, or ask for a new one.",
                code="invalid_api_key",
            )
        key_id = entry.principal.key_id
        if not entry.enabled:
            log.debug("api-keys: refused revoked key %s", key_id)
            raise AuthenticationFailed(
                f"API key {key_id} ({entry.prefix}...) has been revoked.",
                code="api_key_revoked",
            )
        if time.time() >= entry.expires_ts:
            log.debug("api-keys: refused expired key %s", key_id)
            expired = datetime.fromtimestamp(entry.expires_ts, UTC).isoformat()
            raise AuthenticationFailed(
                f"API key {key_id} ({entry.prefix}...) expired at {expired}.",
                code="api_key_expired",
            )
        return entry.principal

    # -- reload ------------------------------------------------------------

    async def check_for_changes(self) -> None:
        """Reload the file if it changed (in a worker thread); at most once per interval."""
        self._next_check = time.monotonic() + self.reload_interval  # single flight
        await asyncio.to_thread(self.reload_if_changed)

    def reload_if_changed(self) -> bool:
        """Reload if the file's stat changed; keep the loaded keys if it is broken.

        Returns whether new keys were loaded. Blocking: call it off the event loop.
        """
        if not self._reload_lock.acquire(blocking=False):
            return False  # a slow check (a hung network disk) is still running
        try:
            try:
                signature = self.source.signature()
            except OSError as exc:
                self._problem(f"cannot stat the keys file: {exc.strerror}")
                return False
            except Exception as exc:  # Redis down: the keys already loaded go on
                self._problem(f"cannot reach {self.source.where}: {type(exc).__name__}")
                return False
            if signature == self._signature:
                return False
            try:
                records = self.source.load()
            except ConfigError as exc:
                self._signature = signature  # a broken version is reported once
                self._problem(str(exc))
                return False
            except Exception as exc:
                self._problem(f"cannot read {self.source.where}: {type(exc).__name__}")
                return False
            self._signature = signature
            self._entries = _index(records, self.source.read_teams())
            self._last_problem = None
            log.info("api-keys: %d keys reloaded from %s", len(records), self.source.where)
            log.debug("api-keys: key ids %s", [record.id for record in records])
            return True
        finally:
            self._reload_lock.release()

    def _problem(self, message: str) -> None:
        if message != self._last_problem:
            self._last_problem = message
            log.error(
                "api-keys: keeping the %d keys already loaded: %s", len(self._entries), message
            )


def key_store(options: ApiKeysOptions, base_dir: str | os.PathLike[str]) -> KeyOperations:
    """The store the options name: the keys file, or Redis."""
    if options.storage == "file":
        assert options.keys_file is not None
        return KeyStore(resolve_keys_file(options.keys_file, base_dir))
    from .redis_keys import RedisKeyStore  # the Redis client only for those who use it

    return RedisKeyStore(options.storage, key_prefix=options.key_prefix)


def create_strategy(options: ApiKeysOptions, gateway: Gateway) -> ApiKeysStrategy:
    """The factory of the ``api-keys`` strategy type; reads the keys at build time.

    Keys that cannot be read are a :class:`ConfigError` naming the option and the store.
    """
    if not math.isfinite(options.reload_interval) or options.reload_interval <= 0:
        raise ConfigError(
            "expected a positive duration such as '2s'",
            source=gateway.config.source,
            key="auth.api-keys.reload_interval",
        )
    try:
        return ApiKeysStrategy(key_store(options, gateway.config.base_dir),
                               options.reload_interval)
    except ConfigError as exc:
        key = "keys_file" if options.storage == "file" else "storage"
        raise ConfigError(
            str(exc), source=gateway.config.source, key=f"auth.api-keys.{key}"
        ) from None
