"""Building the parts plugins registered: each factory run once, at build time,
its options validated against its own model and its failures named after it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from ..calls import CallPolicy
from ..calls.topology import ProviderPlan
from ..components import AuthStrategy
from ..config.settings import Config, validate_options
from ..errors import ConfigError, PluginError, StartupError
from ..events import Events, EventSink
from .registry import Registry

if TYPE_CHECKING:
    from ..http.app import Gateway

__all__ = [
    "OwnedLifespans",
    "build_auth_chain",
    "build_call_policies",
    "build_events",
    "built_by",
    "plan_provider",
]

log = logging.getLogger("sluiceway")

# (plugin, object with a ``lifespan()``): built parts the gateway opens and closes.
OwnedLifespans = list[tuple[str, Any]]


def built_by(plugin: str, what: str, build: Callable[[], Any]) -> Any:
    """Run a plugin's factory at build time; a failure is a startup error naming it."""
    try:
        return build()
    except StartupError:
        raise
    except Exception as exc:
        log.debug("%s of plugin %r failed to build", what, plugin, exc_info=True)
        raise PluginError(
            f"plugin {plugin!r}: {what} failed to build: {type(exc).__name__}: {exc}"
        ) from exc


def _options(
    raw: dict[str, Any], model: type | None, *, what: str, config: Config, key: str
) -> Any:
    """``raw`` validated against the plugin's ``model``; a part without a model
    takes no options, and saying so names the first one given."""
    if model is not None:
        return validate_options(raw, model, source=config.source, key=key)
    if raw:
        raise ConfigError(
            f"unknown key ({what} takes no options)",
            source=config.source,
            key=f"{key}.{sorted(raw)[0]}",
        )
    return None


def plan_provider(registry: Registry, config: Config, settings: Any) -> ProviderPlan:
    """A ``[[providers]]`` entry matched to its registered type, options validated."""
    key = f"providers[{settings.index}]"
    registered = registry.provider_types.get(settings.type)
    if registered is None:
        known = ", ".join(sorted(registry.provider_types)) or "none"
        raise ConfigError(
            f"unknown provider type {settings.type!r} (known types: {known}); "
            f"is the plugin that provides it listed in gateway.plugins?",
            source=config.source,
            key=f"{key}.type",
        )
    options = _options(
        settings.options, registered.item.config_model,
        what=f"provider type {settings.type!r}", config=config, key=key,
    )
    return ProviderPlan(settings, registered.item, options)


def build_auth_chain(registry: Registry, config: Config, gateway: Gateway,
                     owned: OwnedLifespans | None = None) -> list[AuthStrategy]:
    """The strategies of ``auth.chain``, in order, each built with its ``[auth.NAME]``;
    those with a ``lifespan()`` (a store client to close) go into ``owned``."""
    for name in config.auth.options:
        if name not in config.auth.chain:
            raise ConfigError(
                f"configures auth strategy {name!r}, which is not in auth.chain",
                source=config.source,
                key=f"auth.{name}",
            )
    chain: list[AuthStrategy] = []
    for index, name in enumerate(config.auth.chain):
        registered = registry.auth_types.get(name)
        if registered is None:
            known = ", ".join(sorted(registry.auth_types)) or "none"
            raise ConfigError(
                f"unknown auth strategy {name!r} (known strategies: {known})",
                source=config.source,
                key=f"auth.chain[{index}]",
            )
        options = _options(
            config.auth.options.get(name, {}), registered.item.config_model,
            what=f"auth strategy {name!r}", config=config, key=f"auth.{name}",
        )
        strategy = built_by(registered.plugin, f"auth strategy {name!r}",
                            partial(registered.item.factory, options, gateway))
        if owned is not None and callable(getattr(strategy, "lifespan", None)):
            owned.append((registered.plugin, strategy))
        chain.append(strategy)
    return chain


def build_events(registry: Registry, gateway: Gateway, owned: OwnedLifespans) -> Events:
    """The event sinks, each checked for ``handle(event)``."""
    sinks: list[tuple[str, EventSink]] = []
    for name, registered in registry.event_sinks.items():
        sink = built_by(registered.plugin, f"event sink {name!r}",
                        partial(registered.item.factory, gateway))
        if not callable(getattr(sink, "handle", None)):
            raise PluginError(
                f"plugin {registered.plugin!r}: event sink {name!r} has no handle(event)"
            )
        if callable(getattr(sink, "lifespan", None)):
            owned.append((registered.plugin, sink))
        sinks.append((name, sink))
    return Events(sinks)


def build_call_policies(
    registry: Registry, gateway: Gateway, owned: OwnedLifespans
) -> list[CallPolicy]:
    """The call policies, in registration order, each checked for what the runner calls."""
    policies: list[CallPolicy] = []
    for name, registered in registry.call_policies.items():
        policy = built_by(registered.plugin, f"call policy {name!r}",
                          partial(registered.item.factory, gateway))
        if not callable(getattr(policy, "admit", None)) or not isinstance(
            getattr(policy, "kinds", None), frozenset
        ):
            raise PluginError(
                f"plugin {registered.plugin!r}: call policy {name!r} needs an async "
                "admit(call) and a frozenset of kinds"
            )
        if getattr(policy, "name", None) != name:
            raise PluginError(
                f"plugin {registered.plugin!r}: call policy {name!r} built an object "
                f"named {getattr(policy, 'name', None)!r}"
            )
        if callable(getattr(policy, "lifespan", None)):
            owned.append((registered.plugin, policy))
        policies.append(policy)
    return policies
