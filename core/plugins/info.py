"""What a gateway is made of, without secrets: for ``GET /info`` and
``sluiceway check --json``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from ..components import ProviderCapabilities
from ..config.values import ByteSize, Duration, Secret

if TYPE_CHECKING:
    from ..http.app import Gateway

__all__ = ["builtin", "describe", "public_options", "redact_text", "served_endpoints"]

# Plugin tables are free-form: a value under a name like these is shown only by
# reference (``env:NAME``, ``file:...``), never literally.
_SECRET_NAME = re.compile(
    r"secret|password|passwd|token|api_?key|credential|private|authorization|cookie|headers",
    re.IGNORECASE,
)
_REFERENCE = ("env:", "file:")
# scheme://user:password@host or scheme://:password@host: keep the host, hide the rest.
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]*@")
_QUERY_SECRET = re.compile(r"([?&](?:password|token|key|secret)=)[^&\s]*", re.IGNORECASE)


def builtin(value: Any) -> Any:
    """Config values for display: secrets by reference only, never by value."""
    if isinstance(value, Secret):
        return value.source if value.source != "literal" else "***"
    if isinstance(value, Duration):
        return float(value)
    if isinstance(value, ByteSize):
        return int(value)
    raise NotImplementedError(type(value))


def redact_text(text: str) -> str:
    """Credentials written into a URL (``redis://:pw@host``, ``?password=``) hidden."""
    text = _URL_PASSWORD.sub(r"\g<scheme>***@", text)
    return _QUERY_SECRET.sub(r"\1***", text)


def public_options(options: Any) -> Any:
    """A validated options struct (or a raw table) as JSON-ready data, secrets hidden:
    ``Secret`` values by reference, values under secret-looking names entirely,
    and credentials inside URLs, at any depth (tables and lists)."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        options = msgspec.to_builtins(options, enc_hook=builtin)
        if not isinstance(options, dict):
            return _public_value("", options)
    return {key: _public_value(key, value) for key, value in options.items()}


def _public_value(name: str, value: Any) -> Any:
    # A number is a setting (response_tokens, token_delay, max_tokens), never a secret.
    if _SECRET_NAME.search(name) and not isinstance(value, int | float) and not (
        isinstance(value, str) and value.startswith(_REFERENCE)
    ):
        return "***"
    if isinstance(value, dict):
        return public_options(value)
    if isinstance(value, list | tuple):
        return [_public_value(name, item) for item in value]
    value = msgspec.to_builtins(value, enc_hook=builtin)
    return redact_text(value) if isinstance(value, str) else value


def served_endpoints(provider: object) -> list[str]:
    """The model endpoints a built provider serves, and how: ``native`` (its own
    API, passed through) or ``translated`` (through chat completions)."""
    capabilities = ProviderCapabilities.of(provider)

    def how(native: object) -> str:
        return "native" if native is not None else "translated"

    served = [
        "/v1/chat/completions",
        f"/v1/responses ({how(capabilities.responses)})",
        f"/v1/messages ({how(capabilities.anthropic_messages)})",
    ]
    if capabilities.embeddings is not None:
        served.append("/v1/embeddings")
    return served


def describe(gateway: Gateway, providers: Mapping[str, object] | None = None
             ) -> dict[str, Any]:
    """Version, plugins, providers and their models (with the endpoints each serves,
    once built: ``providers`` by name, the started gateway's by default), routes,
    middleware, call policies in admission order, and the limits in force (the
    gateway's own and each plugin's table)."""
    from .. import __version__

    config = gateway.config
    built = gateway.providers if providers is None else providers
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
                **({"endpoints": served_endpoints(built[p.name])} if p.name in built else {}),
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
        # In the order they admit a call: the first to answer it (a cache) ends admission.
        "call_policies": [
            {"name": policy.name, "plugin": gateway.registry.call_policies[policy.name].plugin,
             "kinds": sorted(policy.kinds)}
            for policy in gateway.calls.policies
        ],
        "event_sinks": sorted(gateway.registry.event_sinks),
        "server": msgspec.to_builtins(config.server, enc_hook=builtin),
        "limits": {
            "gateway": msgspec.to_builtins(config.gateway, enc_hook=builtin),
            "plugins": {name: public_options(table) for name, table in config.plugin.items()},
        },
    }
