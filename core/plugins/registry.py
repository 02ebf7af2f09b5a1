"""The ``register`` callbacks behind each assembly hook.

Each callback checks that it got the right kind of object, refuses a name that
another plugin already took (naming both plugins), and records which plugin
made each registration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from ..components import AuthStrategyType, CallPolicyType, Middleware, ProviderType, Route
from ..config.settings import Config
from ..errors import PluginError
from ..events import EventSinkType
from ..http.routes import route_key
from .loading import PluginSet

__all__ = ["Registered", "Registry"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Registered(Generic[T]):
    """A registered object and the plugin that registered it."""

    item: T
    plugin: str


@dataclass(slots=True)
class Registry:
    """Everything the plugins registered, in plugins.toml order."""

    provider_types: dict[str, Registered[ProviderType]] = field(default_factory=dict)
    auth_types: dict[str, Registered[AuthStrategyType]] = field(default_factory=dict)
    routes: list[Registered[Route]] = field(default_factory=list)
    middleware: list[Registered[Middleware]] = field(default_factory=list)
    event_sinks: dict[str, Registered[EventSinkType]] = field(default_factory=dict)
    call_policies: dict[str, Registered[CallPolicyType]] = field(default_factory=dict)

    @classmethod
    def collect(cls, plugins: PluginSet, config: Config) -> Registry:
        """Run every assembly hook once, per plugin, and gather what they register."""
        registry = cls()
        current = {"plugin": ""}

        def keyed(kind: str, expected: type[Any], table: dict[str, Registered[Any]]) -> Any:
            def register(item: object) -> None:
                _check_kind(kind, expected, item, current["plugin"])
                name = item.name  # type: ignore[attr-defined]
                if not isinstance(name, str) or not name:
                    raise PluginError(f"registered a {kind} with an empty name")
                if name in table:
                    raise PluginError(
                        f"registers {kind} {name!r}, already registered by plugin "
                        f"{table[name].plugin!r}"
                    )
                table[name] = Registered(item, current["plugin"])

            return register

        def register_route(item: object) -> None:
            _check_kind("route", Route, item, current["plugin"])
            assert isinstance(item, Route)
            if not item.path.startswith("/"):
                raise PluginError(f"registers route {item.path!r}, which does not start with '/'")
            if not item.methods:
                raise PluginError(f"registers route {item.path!r} with no methods")
            key = route_key(item.path)
            methods = {m.upper() for m in item.methods}
            for other in registry.routes:
                other_key = route_key(other.item.path)
                if other_key[0] != key[0] or (other_key[1] is None) != (key[1] is None):
                    continue
                clash = methods & {m.upper() for m in other.item.methods}
                if other.item.path == item.path and clash:
                    raise PluginError(
                        f"registers {sorted(clash)[0]} {item.path}, already registered by "
                        f"plugin {other.plugin!r}"
                    )
                if clash or other_key[1] != key[1]:
                    # /v1/models/{id} against /v1/models/{model}: one would shadow the other.
                    raise PluginError(
                        f"registers {item.path}, which clashes with {other.item.path} "
                        f"registered by plugin {other.plugin!r}"
                    )
            registry.routes.append(Registered(item, current["plugin"]))

        def register_middleware(item: object) -> None:
            _check_kind("middleware", Middleware, item, current["plugin"])
            assert isinstance(item, Middleware)
            if item.slot not in ("edge", "before_auth", "after_auth"):
                raise PluginError(
                    f"registers middleware {item.name!r} in unknown slot {item.slot!r} "
                    "(expected 'edge', 'before_auth' or 'after_auth')"
                )
            registry.middleware.append(Registered(item, current["plugin"]))

        hooks: list[tuple[str, Any]] = [
            (
                "register_provider_types",
                keyed("provider type", ProviderType, registry.provider_types),
            ),
            (
                "register_auth_strategies",
                keyed("auth strategy", AuthStrategyType, registry.auth_types),
            ),
            ("register_routes", register_route),
            ("register_middleware", register_middleware),
            ("register_event_sinks", keyed("event sink", EventSinkType, registry.event_sinks)),
            ("register_call_policies",
             keyed("call policy", CallPolicyType, registry.call_policies)),
        ]
        for hook_name, register in hooks:
            for plugin in plugins.loaded:
                current["plugin"] = plugin.name
                plugins.call_for(plugin, hook_name, register=register, config=config)
        return registry


def _check_kind(kind: str, expected: type, item: object, plugin: str) -> None:
    if not isinstance(item, expected):
        raise PluginError(
            f"registered {type(item).__name__!s} where a {expected.__name__} was expected "
            f"(in its {kind} hook)"
        )
