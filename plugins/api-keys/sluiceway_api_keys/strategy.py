"""The ``api-keys`` auth strategy: hashed keys from a file, reloaded when it changes.

A request is verified with one SHA-256 and one dict lookup (see
:mod:`sluiceway_api_keys.keyfile` for why that is safe). The :class:`Principal`
of every key is built once, when the file is loaded, so accepting a request
allocates nothing.

Reload: ``authenticate`` looks at the file's ``stat`` at most once per
``reload_interval``, from the request that finds the interval over, in a worker
thread (``asyncio.to_thread``), so the event loop never blocks on the disk.
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
import hmac
import logging
import math
import os
import stat
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

import msgspec

from sluiceway.api import AuthenticationFailed, ConfigError, Duration, Principal

from .keyfile import KeyRecord, hash_secret, read_keys

if TYPE_CHECKING:
    from sluiceway.api import Gateway, RequestContext

__all__ = ["ApiKeysOptions", "ApiKeysStrategy", "create_strategy", "resolve_keys_file"]

log = logging.getLogger("sluiceway.api_keys")

# Headers a client may carry its key in, after `Authorization: Bearer`
# (x-api-key: Anthropic SDKs and many tools; api-key: Azure OpenAI SDKs).
KEY_HEADERS = (b"x-api-key", b"api-key")
# Echo the first characters of an unknown key only when it is long enough that
# they cannot be most of it.
_ECHO_MIN_LENGTH = 32
_ECHO_LENGTH = 8

Signature = tuple[int, int, int, int]


class ApiKeysOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[auth.api-keys]``.

    ``keys_file``: the keys file; a relative path is relative to the directory of
    the configuration file. ``reload_interval``: how often, at most, the file is
    checked for changes.
    """

    keys_file: str
    reload_interval: Duration = Duration(2)


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


def _signature(path: Path) -> Signature:
    info = os.stat(path)
    return (info.st_dev, info.st_ino, info.st_mtime_ns, info.st_size)


def _index(records: list[KeyRecord]) -> dict[str, _Entry]:
    return {
        record.hash: _Entry(
            hash=record.hash,
            principal=Principal(
                key_id=record.id,
                name=record.name,
                allowed_models=tuple(record.models) if record.models is not None else None,
                attributes=MappingProxyType(record.limits()),
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

    def __init__(self, path: Path, reload_interval: float) -> None:
        self.path = path
        self.reload_interval = float(reload_interval)
        # stat before reading: a change in between is then seen at the next check.
        try:
            self._signature = _signature(path)
        except OSError:
            self._signature = (0, 0, 0, 0)  # read_keys below says what is wrong
        records = read_keys(path)
        _warn_if_world_writable(path)
        self._entries = _index(records)
        self._next_check = time.monotonic() + self.reload_interval
        self._reload_lock = threading.Lock()
        self._last_problem: str | None = None
        log.info("api-keys: %d keys loaded from %s", len(records), path)
        log.debug("api-keys: key ids %s", [record.id for record in records])

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
                signature = _signature(self.path)
            except OSError as exc:
                self._problem(f"cannot stat the keys file: {exc.strerror}")
                return False
            if signature == self._signature:
                return False
            self._signature = signature  # a broken version is reported once, not per check
            try:
                records = read_keys(self.path)
            except ConfigError as exc:
                self._problem(str(exc))
                return False
            self._entries = _index(records)
            self._last_problem = None
            log.info("api-keys: %d keys reloaded from %s", len(records), self.path)
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


def create_strategy(options: ApiKeysOptions, gateway: Gateway) -> ApiKeysStrategy:
    """The factory of the ``api-keys`` strategy type; reads the keys file at build time.

    A missing or broken file is a :class:`ConfigError` naming the option and the file.
    """
    path = resolve_keys_file(options.keys_file, gateway.config.base_dir)
    if not math.isfinite(options.reload_interval) or options.reload_interval <= 0:
        raise ConfigError(
            "expected a positive duration such as '2s'",
            source=gateway.config.source,
            key="auth.api-keys.reload_interval",
        )
    try:
        return ApiKeysStrategy(path, options.reload_interval)
    except ConfigError as exc:
        raise ConfigError(
            str(exc), source=gateway.config.source, key="auth.api-keys.keys_file"
        ) from None
