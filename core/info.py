"""What a gateway is made of, without secrets: for ``GET /info`` and
``sluiceway check --json``."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import msgspec

from .values import ByteSize, Duration, Secret

if TYPE_CHECKING:
    from .app import Gateway

__all__ = ["builtin", "describe", "public_options"]

# Plugin tables are free-form: a value under a name like these is shown only by
# reference (``env:NAME``, ``file:...``), never literally.
_SECRET_NAME = re.compile(r"secret|password|passwd|token|api_?key|credential", re.IGNORECASE)
_REFERENCE = ("env:", "file:")


def builtin(value: Any) -> Any:
    """Config values for display: secrets by reference only, never by value."""
    if isinstance(value, Secret):
        return value.source if value.source != "literal" else "***"
    if isinstance(value, Duration):
        return float(value)
    if isinstance(value, ByteSize):
        return int(value)
    raise NotImplementedError(type(value))


def public_options(options: Any) -> Any:
    """A validated options struct (or a raw table) as JSON-ready data, secrets hidden."""
    if options is None:
        return {}
    if isinstance(options, dict):
        return {key: _public_value(key, value) for key, value in options.items()}
    return msgspec.to_builtins(options, enc_hook=builtin)


def _public_value(name: str, value: Any) -> Any:
    if isinstance(value, dict):
        return public_options(value)
    if _SECRET_NAME.search(name) and not (
        isinstance(value, str) and value.startswith(_REFERENCE)
    ):
        return "***"
    return msgspec.to_builtins(value, enc_hook=builtin)


def describe(gateway: Gateway) -> dict[str, Any]:
    """Version, plugins, providers and their models, routes, middleware, and the
    limits in force (the gateway's own and each plugin's table)."""
    from . import __version__

    config = gateway.config
    return {
        "version": __version__,
        "config": config.source,
        "plugins": [p.as_dict() for p in gateway.plugins.loaded],
        "providers": [
            {
                "name": p.name,
                "type": p.type,
                "models": [{"name": m.name, "upstream": m.upstream_id} for m in p.models],
                "options": public_options(plan.options),
            }
            for p, plan in zip(config.providers, gateway._provider_plans, strict=True)
        ],
        "models": sorted(group.name for group in gateway.router.groups()),
        "auth": {"chain": list(config.auth.chain) or "off"},
        "routes": sorted(
            f"{','.join(r.item.methods)} {r.item.path} ({r.plugin})"
            for r in gateway.registry.routes
        ),
        "middleware": [
            f"{r.item.slot}: {r.item.name} ({r.plugin})" for r in gateway.registry.middleware
        ],
        "event_sinks": sorted(gateway.registry.event_sinks),
        "server": msgspec.to_builtins(config.server, enc_hook=builtin),
        "limits": {
            "gateway": msgspec.to_builtins(config.gateway, enc_hook=builtin),
            "plugins": {name: public_options(table) for name, table in config.plugin.items()},
        },
    }
