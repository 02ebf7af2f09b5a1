"""plugins.toml, read once into typed settings: ``settings`` (the tables the core
owns, reading and validation) and ``values`` (durations, sizes, secrets)."""

from .settings import (
    AliasSettings,
    AliasTarget,
    AuthSettings,
    ByteSize,
    Config,
    Duration,
    GatewaySettings,
    ModelEntry,
    ProviderPolicy,
    ProviderSettings,
    Secret,
    ServerSettings,
    SessionSettings,
    load_config,
    parse_config,
    validate_options,
)

__all__ = [
    "AliasSettings",
    "AliasTarget",
    "AuthSettings",
    "ByteSize",
    "Config",
    "Duration",
    "GatewaySettings",
    "ModelEntry",
    "ProviderPolicy",
    "ProviderSettings",
    "Secret",
    "ServerSettings",
    "SessionSettings",
    "load_config",
    "parse_config",
    "validate_options",
]
