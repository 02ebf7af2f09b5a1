"""``sluiceway sessions warm|list|clear|rotate-key``: the session store, operated.

``warm`` builds the gateway from the configuration (without serving it) and
logs the named providers in, all at once; the others read the store directly.
No command prints a cookie or a token; ``rotate-key`` prints a new key only
when the keys live in the environment, where it cannot write them itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import click

from ..config.loading import load_config
from ..config.settings import Config
from ..errors import SluicewayError, StartupError
from ..sessions.keys import write_key_file
from ..sessions.manager import SessionManager
from ..sessions.record import session_state
from .options import config_option, configure_logging, debug_option, fail, resolve_config_path

__all__ = ["sessions_group"]


def _manager(config: Config) -> SessionManager:
    return SessionManager(config.sessions, base_dir=config.base_dir, source=config.source)


def _load(config_path: str | None, debug: bool) -> Config:
    configure_logging(debug)
    try:
        return load_config(resolve_config_path(config_path))
    except StartupError as exc:
        fail(exc, debug)
        raise  # not reached: _fail exits


def _expires(seconds: float) -> str:
    """``11h59m``, ``4m10s``, ``expired 3m ago``."""
    if math.isinf(seconds):
        return "never"
    ago = seconds < 0
    left = int(abs(seconds))
    hours, rest = divmod(left, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
    return f"expired {text} ago" if ago else text


def _table(rows: list[dict[str, Any]]) -> None:
    click.echo(f"{'PROVIDER':<20} {'STATE':<12} {'EXPIRES IN':<18} DETAIL")
    for row in rows:
        click.echo(f"{row['provider']:<20} {row['state']:<12} {row['expires_in']:<18} "
                   f"{row.get('detail', '')}".rstrip())


@click.group("sessions")
def sessions_group() -> None:
    """Logins of web-login providers: warm, list, clear, rotate-key."""


@sessions_group.command("warm")
@click.argument("providers", nargs=-1)
@click.option("--force", is_flag=True, help="Log in again even if a session is valid.")
@config_option
@debug_option
def warm(providers: tuple[str, ...], force: bool, config_path: str | None, debug: bool) -> None:
    """Log PROVIDERS in (all web-login providers if none is named), in parallel."""
    from ..http.app import Gateway

    config = _load(config_path, debug)
    if not debug:
        # The gateway's own startup notes (such as "authentication is off") are
        # about serving, which this command does not do.
        logging.getLogger("sluiceway").setLevel(logging.ERROR)
        for name in ("sluiceway.sessions", "sluiceway.webchat"):
            logging.getLogger(name).setLevel(logging.WARNING)
    try:
        gateway = Gateway(config)
    except StartupError as exc:
        fail(exc, debug)
        return

    async def run() -> list[dict[str, Any]]:
        await gateway.startup()
        try:
            handles = gateway.sessions.handles
            unknown = [name for name in providers if name not in handles]
            if unknown:
                known = ", ".join(sorted(handles)) or "none"
                raise click.UsageError(
                    f"not a web-login provider: {', '.join(unknown)} (these are: {known})"
                )
            names = list(providers) or sorted(handles)
            results = await asyncio.gather(
                *(handles[name].warm(force=force) for name in names), return_exceptions=True
            )
        finally:
            await gateway.shutdown()
        rows = []
        margin = config.sessions.refresh_margin
        for name, result in zip(names, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result
                rows.append({"provider": name, "state": "failed", "expires_in": "-",
                             "detail": str(result)})
            else:
                rows.append({"provider": name, "state": session_state(result, margin),
                             "expires_in": _expires(result.expires_in())})
        return rows

    try:
        rows = asyncio.run(run())
    except SluicewayError as exc:
        fail(exc, debug)
        return
    if not rows:
        click.echo("no web-login providers are configured")
        return
    _table(rows)
    if any(row["state"] == "failed" for row in rows):
        sys.exit(1)


@sessions_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@config_option
@debug_option
def list_sessions(as_json: bool, config_path: str | None, debug: bool) -> None:
    """Stored sessions: provider, state and time left (never a secret)."""
    config = _load(config_path, debug)
    settings = config.sessions
    rows: list[dict[str, Any]] = []
    # Listing an empty file store must not create it (nor its key file).
    if settings.storage != "file" or (Path(config.base_dir) / settings.path).is_dir():
        async def entries() -> list[dict[str, Any]]:
            manager = _manager(config)
            async with manager.lifespan():
                store = await manager.store()
                found = await store.entries()
            now = time.time()
            result: list[dict[str, Any]] = []
            for entry in found:
                if entry.session is None:
                    result.append({"provider": entry.provider, "state": "unreadable",
                                   "expires_in": "-", "detail": entry.problem or ""})
                    continue
                session = entry.session
                result.append({
                    "provider": entry.provider,
                    "state": session_state(session, settings.refresh_margin, now),
                    "expires_in": _expires(session.expires_in(now)),
                    "expires_at": session.expires_at, "created_at": session.created_at,
                    "detail": "",
                })
            return result

        try:
            rows = asyncio.run(entries())
        except SluicewayError as exc:
            fail(exc, debug)
            return
    if as_json:
        click.echo(json.dumps({"sessions": rows}, indent=2))
    elif not rows:
        click.echo("no sessions stored")
    else:
        _table(rows)


@sessions_group.command("clear")
@click.argument("providers", nargs=-1, required=True)
@config_option
@debug_option
def clear(providers: tuple[str, ...], config_path: str | None, debug: bool) -> None:
    """Forget the stored sessions of PROVIDERS (they log in again on next use)."""
    config = _load(config_path, debug)

    async def run() -> list[bool]:
        manager = _manager(config)
        async with manager.lifespan():
            store = await manager.store()
            return [await store.delete(name) for name in providers]

    try:
        removed = asyncio.run(run())
    except SluicewayError as exc:
        fail(exc, debug)
        return
    for name, done in zip(providers, removed, strict=True):
        click.echo(f"{name}: {'cleared' if done else 'no session stored'}")


@sessions_group.command("rotate-key")
@config_option
@debug_option
def rotate_key(config_path: str | None, debug: bool) -> None:
    """Encrypt every stored session with a new key, keeping the previous one."""
    from cryptography.fernet import Fernet

    config = _load(config_path, debug)
    new_key = Fernet.generate_key()

    async def run() -> tuple[int, Any, Any]:
        manager = _manager(config)
        async with manager.lifespan():
            store = await manager.store()
            current = store.keys
            rotated = current.rotated(new_key)
            if current.key_file is not None:
                # The key file first: a gateway that meets the new key id in a
                # session re-reads it, so running gateways keep working.
                await asyncio.to_thread(write_key_file, current.key_file, rotated.keys)
            count = await store.rotate(rotated)
            return count, current, rotated

    try:
        count, current, rotated = asyncio.run(run())
    except SluicewayError as exc:
        fail(exc, debug)
        return
    click.echo(f"re-encrypted {count} session(s) with the new key {rotated.ids[0]}")
    if current.key_file is not None:
        click.echo(f"{current.key_file}: new key first, previous key {current.ids[0]} kept "
                   "so that running gateways read the sessions until they restart")
    else:
        variable = current.source.removeprefix("env:")
        click.echo(f"the keys come from {current.source}: set {variable} to the new key, a "
                   "comma, then its current value, and restart the gateways. New key:")
        click.echo(new_key.decode())
