"""Selecting, importing and registering plugins.

Only the plugins named in ``[gateway] plugins`` are imported, in that order; an
installed plugin that is not named is never imported. Each gateway gets its own
``PluginManager``, so two gateways in one process (or one test) never share
state.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import inspect
import logging
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pluggy

from ..errors import ConfigError, PluginError
from . import hookspecs

__all__ = ["LoadedPlugin", "PluginSet", "installed_plugins", "load_plugins"]

log = logging.getLogger("sluiceway.plugins")

ENTRY_POINT_GROUP = "sluiceway"
BUILTIN_MODULES: tuple[tuple[str, str], ...] = (("sluiceway.core", "sluiceway.http.endpoints"),)


@dataclass(frozen=True, slots=True)
class InstalledPlugin:
    """An entry point in the ``sluiceway`` group, known without importing it."""

    name: str
    value: str
    distribution: str
    version: str


@dataclass(slots=True)
class LoadedPlugin:
    """A plugin that was imported and registered, for ``sluiceway plugins`` and ``/info``."""

    name: str
    distribution: str
    version: str
    import_ms: float
    module: ModuleType = field(repr=False)
    hooks: list[str] = field(default_factory=list)
    builtin: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "import_ms": round(self.import_ms, 2),
            "hooks": self.hooks,
            "builtin": self.builtin,
        }


def installed_plugins() -> dict[str, list[InstalledPlugin]]:
    """Every entry point in the ``sluiceway`` group, by name, read from metadata only."""
    found: dict[str, list[InstalledPlugin]] = {}
    for dist in importlib.metadata.distributions():
        for ep in dist.entry_points:
            if ep.group != ENTRY_POINT_GROUP:
                continue
            found.setdefault(ep.name, []).append(
                InstalledPlugin(ep.name, ep.value, dist.metadata["Name"], dist.version)
            )
    return found


class PluginSet:
    """A gateway's plugin manager and the plugins it loaded, in config order."""

    def __init__(self, pm: pluggy.PluginManager, loaded: list[LoadedPlugin]) -> None:
        self.pm = pm
        self.loaded = loaded

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.loaded]

    def call_each(self, hook_name: str, **kwargs: Any) -> Iterator[tuple[LoadedPlugin, Any]]:
        """Call one hook per plugin, in config order; yields ``(plugin, result)`` for
        each plugin that implements it."""
        for plugin in self.loaded:
            implemented, result = self.call_for(plugin, hook_name, **kwargs)
            if implemented:
                yield plugin, result

    def call_for(self, plugin: LoadedPlugin, hook_name: str, **kwargs: Any) -> tuple[bool, Any]:
        """Call one plugin's implementation of a hook, passing only the arguments it
        names. Returns ``(False, None)`` if it has none. An implementation that raises
        stops the build with a message naming the plugin."""
        caller = getattr(self.pm.hook, hook_name)
        impl = next((i for i in caller.get_hookimpls() if i.plugin_name == plugin.name), None)
        if impl is None:
            return False, None
        args = {name: kwargs[name] for name in impl.argnames}
        try:
            result = impl.function(**args)
            if inspect.iscoroutine(result):
                result.close()
                raise PluginError(
                    f"implements {hook_name} as an async function; hooks run once at build "
                    "time and must be plain functions (put async work on the objects it "
                    "registers, or in the lifespan hook)"
                )
            return True, result
        except PluginError as exc:
            raise PluginError(f"plugin {plugin.name!r} {exc}") from None
        except ConfigError:
            raise  # it names the file and key already, which is what the operator needs
        except Exception as exc:
            log.debug("hook %s of plugin %r failed", hook_name, plugin.name, exc_info=True)
            raise PluginError(
                f"plugin {plugin.name!r} failed in {hook_name}: {type(exc).__name__}: {exc}"
            ) from exc


def _suggest(name: str, candidates: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def _hooks_of(pm: pluggy.PluginManager, module: ModuleType) -> list[str]:
    return sorted(
        caller.name for caller in pm.get_hookcallers(module) or [] if caller.name != "__init__"
    )


def load_plugins(
    names: Sequence[str],
    *,
    source: str = "plugins.toml",
    extra: Sequence[tuple[str, object]] = (),
    importer: Callable[[str], ModuleType] | None = None,
) -> PluginSet:
    """Import and register the built-ins, then each named plugin, in order.

    ``extra`` registers already-imported plugin objects by name (for embedding
    and for tests of the hook contract); they count as listed.
    """
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    loaded: list[LoadedPlugin] = []

    for name, module_path in BUILTIN_MODULES:
        module = importlib.import_module(module_path)
        pm.register(module, name)
        loaded.append(LoadedPlugin(name, "sluiceway", _own_version(), 0.0, module, builtin=True))

    available = installed_plugins()
    seen: set[str] = set()
    for index, name in enumerate(names):
        key = f"gateway.plugins[{index}]"
        if name in seen:
            raise PluginError(f"{source}: {key}: plugin {name!r} is listed twice")
        seen.add(name)
        candidates = available.get(name, [])
        if not candidates:
            hint = _suggest(name, sorted(available))
            installed = ", ".join(sorted(available)) or "none"
            raise PluginError(
                f"{source}: {key}: plugin {name!r} is not installed.{hint} "
                f"Installed plugins: {installed}. To install it: pip install sluiceway-{name}"
            )
        if len({c.distribution for c in candidates}) > 1:
            owners = " and ".join(f"{c.distribution} {c.version}" for c in candidates)
            raise PluginError(
                f"{source}: {key}: plugin name {name!r} is provided by both {owners}; "
                "uninstall one of them"
            )
        entry = candidates[0]
        started = time.perf_counter()
        try:
            ep = importlib.metadata.EntryPoint(name, entry.value, ENTRY_POINT_GROUP)
            module = ep.load()
        except Exception as exc:
            log.debug("plugin %r failed to import:\n%s", name, traceback.format_exc())
            raise PluginError(
                f"{source}: {key}: plugin {name!r} ({entry.distribution} {entry.version}) "
                f"failed to import: {type(exc).__name__}: {exc}. "
                "Run with --debug for the traceback."
            ) from exc
        import_ms = (time.perf_counter() - started) * 1000
        _register(pm, module, name, f"{entry.distribution} {entry.version}")
        loaded.append(LoadedPlugin(name, entry.distribution, entry.version, import_ms, module))
        log.debug("loaded plugin %s from %s in %.1f ms", name, entry.distribution, import_ms)

    for name, obj in extra:
        if name in seen:
            raise PluginError(f"plugin {name!r} is registered twice")
        seen.add(name)
        _register(pm, obj, name, "an object passed to create_app")
        loaded.append(LoadedPlugin(name, "(in-process)", "", 0.0, obj))  # type: ignore[arg-type]

    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(_unknown_hook_message(pm, exc)) from None
    for plugin in loaded:
        plugin.hooks = _hooks_of(pm, plugin.module)
    return PluginSet(pm, loaded)


def _register(pm: pluggy.PluginManager, module: object, name: str, origin: str) -> None:
    try:
        pm.register(module, name)
    except pluggy.PluginValidationError as exc:
        # pluggy may have half-registered it; leave nothing behind.
        if pm.get_plugin(name) is not None:
            pm.unregister(name=name)
        raise PluginError(f"plugin {name!r} ({origin}) has an invalid hook: {exc}") from None
    except ValueError as exc:
        raise PluginError(f"plugin {name!r} ({origin}) cannot be registered: {exc}") from None


def _unknown_hook_message(pm: pluggy.PluginManager, exc: pluggy.PluginValidationError) -> str:
    known = sorted(
        name
        for name in dir(pm.hook)
        if not name.startswith("_") and getattr(pm.hook, name).spec is not None
    )
    plugin_name = pm.get_name(exc.plugin) or "?"
    unknown = [
        caller.name for caller in pm.get_hookcallers(exc.plugin) or [] if caller.spec is None
    ]
    hook = unknown[0] if unknown else "?"
    return (
        f"plugin {plugin_name!r} implements {hook!r}, which is not a sluiceway hook."
        f"{_suggest(hook, known)} Known hooks: {', '.join(known)}"
    )


def _own_version() -> str:
    try:
        return importlib.metadata.version("sluiceway")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"
