"""sluiceway auth strategy ``api-keys``: hashed API keys in a file or in Redis, managed
with a CLI.

Enable it in plugins.toml::

    [gateway]
    plugins = ["openai", "api-keys"]

    [auth]
    chain = ["api-keys"]

    [auth.api-keys]
    keys_file = "keys.toml"       # relative to this file's directory
    reload_interval = "1s"

or, shared by every instance, ``storage = "redis://127.0.0.1:6379/0"`` instead
of ``keys_file``.

then ``sluiceway keys create --name crm --rpm 100 --models 'gpt-4o*'`` prints a
secret once; clients send it as ``Authorization: Bearer``, ``x-api-key`` or
``api-key``. The store holds only hashes and is reloaded when it changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from sluiceway.api import AuthStrategyType, hookimpl

from .keyfile import KeyRecord, hash_secret, new_secret, parse_keys, read_keys
from .store import CreatedKey, KeyNotFound, KeyOperations, KeyStore, describe_key
from .strategy import ApiKeysOptions, ApiKeysStrategy, create_strategy, key_store

if TYPE_CHECKING:
    from .redis_keys import RedisKeyStore

__all__ = [
    "ApiKeysOptions",
    "ApiKeysStrategy",
    "CreatedKey",
    "KeyNotFound",
    "KeyOperations",
    "KeyRecord",
    "KeyStore",
    "RedisKeyStore",
    "describe_key",
    "hash_secret",
    "key_store",
    "new_secret",
    "parse_keys",
    "read_keys",
    "register_auth_strategies",
    "register_commands",
]


@hookimpl
def register_auth_strategies(register: Callable[[AuthStrategyType], None]) -> None:
    register(AuthStrategyType(
        "api-keys",
        create_strategy,
        ApiKeysOptions,
        description="Hashed API keys from a hot-reloaded file (Bearer, x-api-key, api-key).",
    ))


@hookimpl
def register_commands(cli: click.Group) -> None:
    from .cli import keys  # the CLI's imports are not needed to serve

    cli.add_command(keys)


def __getattr__(name: str) -> Any:
    # Redis (and its client library) is imported only by those who keep keys there.
    if name == "RedisKeyStore":
        from .redis_keys import RedisKeyStore

        return RedisKeyStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
