"""plugins.toml, read once into typed settings: ``settings`` (the tables the core
owns), ``loading`` (reading the file into them) and ``values`` (durations,
sizes, secrets, and the validation that names every key)."""

from .loading import load_config, parse_config
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
