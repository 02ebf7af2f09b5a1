"""``sluiceway keys``: create, list, revoke, enable, rotate and delete API keys.

The keys are where ``[auth.api-keys]`` keeps them in the configuration
(``--config``, ``$SLUICEWAY_CONFIG`` or ``./plugins.toml``): its ``keys_file``,
or Redis when its ``storage`` is a Redis URL; ``--keys-file`` names a file
instead. A secret is printed once, when it is made, and stored nowhere.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import click

from sluiceway.api import (
    CONFIG_ENV,
    DEFAULT_CONFIG,
    ConfigError,
    Duration,
    load_config,
    resolve_config_path,
    validate_options,
)

from .keyfile import as_utc
from .store import CreatedKey, KeyNotFound, KeyOperations, KeyStore, describe_key
from .strategy import ApiKeysOptions, key_store, resolve_keys_file

__all__ = ["keys", "keys_file_from_config", "parse_expiry", "store_from_config"]

F = TypeVar("F", bound=Callable[..., Any])
STRATEGY = "api-keys"


def _options_from_config(config_path: str | None) -> tuple[ApiKeysOptions, str]:
    config = load_config(resolve_config_path(config_path))
    raw = config.auth.options.get(STRATEGY)
    if raw is None:
        raise ConfigError(
            f"no [auth.{STRATEGY}] table: set keys_file there, or pass --keys-file",
            source=config.source,
        )
    options = validate_options(raw, ApiKeysOptions, source=config.source, key=f"auth.{STRATEGY}")
    return options, config.base_dir


def keys_file_from_config(config_path: str | None) -> Path:
    """The keys file that ``[auth.api-keys] keys_file`` of the configuration names."""
    options, base_dir = _options_from_config(config_path)
    if options.keys_file is None:
        raise ConfigError(f"[auth.{STRATEGY}] keeps its keys in {options.storage!r}, not a file")
    return resolve_keys_file(options.keys_file, base_dir)


def store_from_config(config_path: str | None) -> KeyOperations:
    """The store ``[auth.api-keys]`` of the configuration names: the file or Redis."""
    return key_store(*_options_from_config(config_path))


def parse_expiry(value: str, now: datetime | None = None) -> datetime:
    """``30d``/``12h`` from now, or a date or date-time (UTC unless it has an offset)."""
    now = now or datetime.now(UTC)
    if value[-1:].isalpha():  # a bare number is refused rather than taken as seconds
        try:
            return (now + timedelta(seconds=Duration.parse(value))).replace(microsecond=0)
        except ValueError:
            pass
    try:
        moment = as_utc(datetime.fromisoformat(value))
    except ValueError:
        raise click.BadParameter(
            f"expected a duration such as '30d' or a date such as '2026-12-31', got {value!r}"
        ) from None
    if moment <= now:
        raise click.BadParameter(f"{value!r} is in the past")
    return moment


def _store_options(command: F) -> F:
    command = click.option(
        "--keys-file", metavar="FILE", default=None,
        help="The keys file (default: [auth.api-keys] keys_file of the configuration).",
    )(command)
    return click.option(
        "--config", "config_path", metavar="FILE", default=None,
        help=f"plugins.toml to read (default: ${CONFIG_ENV} or ./{DEFAULT_CONFIG}).",
    )(command)


def _store(config_path: str | None, keys_file: str | None) -> KeyOperations:
    try:
        return KeyStore(Path(keys_file)) if keys_file else store_from_config(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _run(action: Callable[[], Any]) -> Any:
    """Run a store operation, turning its failures into one-line CLI errors."""
    try:
        return action()
    except KeyNotFound as exc:
        raise click.ClickException(
            f"no key with id {exc.args[0]!r} (see `sluiceway keys list`)"
        ) from None
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"{exc.filename or 'keys file'}: {exc.strerror}") from None
    except Exception as exc:  # Redis unreachable, say
        raise click.ClickException(f"the keys store failed: {type(exc).__name__}: {exc}") from None


def _print_secret(created: CreatedKey, verb: str, as_json: bool) -> None:
    record = created.record
    if as_json:
        click.echo(json.dumps({"id": record.id, "name": record.name, "secret": created.secret}))
        return
    click.echo(f"{verb} key {record.id} for {record.name!r}. Its secret:\n")
    click.echo(f"    {created.secret}\n")
    click.echo("This is the only time the secret is shown: store it now.")
    click.echo("The store keeps only its hash; a lost secret cannot be recovered.")


@click.group()
def keys() -> None:
    """Manage the API keys of the api-keys auth strategy."""


@keys.command()
@click.option("--name", required=True, help="The application or person the key is for.")
@click.option("--rpm", type=click.IntRange(min=1), help="Requests per minute (limits plugin).")
@click.option("--tpm", type=click.IntRange(min=1), help="Tokens per minute (limits plugin).")
@click.option("--max-concurrent", type=click.IntRange(min=1), help="Requests at once.")
@click.option(
    "--models", multiple=True, metavar="GLOB",
    help="Models the key may use, e.g. 'gpt-4o*' (repeat, or separate with commas). "
    "Default: every model.",
)
@click.option("--expires", metavar="WHEN", help="'30d', '12h', '2026-12-31' or a date-time.")
@click.option("--team", metavar="TEAM", help="The team the key belongs to (its budget applies).")
@click.option("--budget", type=click.FloatRange(min=0), metavar="DOLLARS",
              help="US dollars the key may spend per budget period (costs plugin).")
@click.option("--guardrails", multiple=True, metavar="PROFILE",
              help="Guardrails profiles that check the key's calls, in place of the "
              "default (guardrails plugin; repeat, or separate with commas).")
@click.option("--json", "as_json", is_flag=True, help="Print the id and secret as JSON.")
@_store_options
def create(
    name: str, rpm: int | None, tpm: int | None, max_concurrent: int | None,
    models: tuple[str, ...], expires: str | None, team: str | None, budget: float | None,
    guardrails: tuple[str, ...], as_json: bool, config_path: str | None,
    keys_file: str | None,
) -> None:
    """Create a key and print its secret, once."""
    globs = [glob.strip() for value in models for glob in value.split(",") if glob.strip()]
    profiles = [p.strip() for value in guardrails for p in value.split(",") if p.strip()]
    expires_at = parse_expiry(expires) if expires else None
    store = _store(config_path, keys_file)
    created = _run(lambda: store.create(
        name, rpm=rpm, tpm=tpm, max_concurrent=max_concurrent,
        models=globs or None, expires_at=expires_at, team=team or None, budget=budget,
        guardrails=profiles or None,
    ))
    _print_secret(created, "Created", as_json)


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the keys as JSON.")
@_store_options
def list_keys(as_json: bool, config_path: str | None, keys_file: str | None) -> None:
    """List the keys (never their secrets)."""
    store = _store(config_path, keys_file)
    now = datetime.now(UTC)
    rows = [describe_key(record, now) for record in _run(store.read)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no keys in {store.where} (add one with `sluiceway keys create --name ...`)")
        return
    table = [("ID", "NAME", "PREFIX", "LIMITS", "MODELS", "EXPIRES", "STATUS")]
    for row in rows:
        limits = " ".join(
            f"{label}={row[field]}"
            for label, field in (("rpm", "rpm"), ("tpm", "tpm"), ("conc", "max_concurrent"))
            if row[field] is not None
        )
        table.append((
            row["id"], row["name"], row["prefix"], limits or "-",
            ",".join(row["models"]) if row["models"] is not None else "*",
            row["expires_at"] or "never", row["status"],
        ))
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    for line in table:
        cells = (cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        click.echo("  ".join(cells).rstrip())


@keys.command()
@click.argument("key_id", metavar="ID")
@_store_options
def revoke(key_id: str, config_path: str | None, keys_file: str | None) -> None:
    """Revoke a key: it is refused (api_key_revoked) from the gateway's next reload."""
    store = _store(config_path, keys_file)
    record = _run(lambda: store.set_enabled(key_id, False))
    click.echo(f"Revoked key {record.id} ({record.name!r}).")


@keys.command()
@click.argument("key_id", metavar="ID")
@_store_options
def enable(key_id: str, config_path: str | None, keys_file: str | None) -> None:
    """Enable a revoked key again."""
    store = _store(config_path, keys_file)
    record = _run(lambda: store.set_enabled(key_id, True))
    click.echo(f"Enabled key {record.id} ({record.name!r}).")


@keys.command()
@click.argument("key_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print the id and secret as JSON.")
@_store_options
def rotate(key_id: str, as_json: bool, config_path: str | None, keys_file: str | None) -> None:
    """Give a key a new secret (same id, name and limits); the old secret stops working."""
    store = _store(config_path, keys_file)
    _print_secret(_run(lambda: store.rotate(key_id)), "Rotated", as_json)


@keys.command()
@click.argument("key_id", metavar="ID")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_store_options
def delete(key_id: str, yes: bool, config_path: str | None, keys_file: str | None) -> None:
    """Delete a key from the file (prefer revoke, which keeps a record)."""
    store = _store(config_path, keys_file)
    if not yes:
        click.confirm(f"Delete key {key_id} for good?", abort=True)
    record = _run(lambda: store.delete(key_id))
    click.echo(f"Deleted key {record.id} ({record.name!r}).")
