"""Assembling providers, pools, health and model groups from the configuration.

:func:`check_routing` runs at build time, so ``sluiceway check`` catches every
naming mistake; :func:`open_providers` and :func:`build_router` run at startup,
inside the serving loop.
"""

from __future__ import annotations

import contextlib
import inspect
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..components import Provider, ProviderContext
from ..config.settings import AliasSettings, Config, ModelEntry, ProviderSettings
from ..errors import ConfigError, StartupError
from .health import BreakerSettings, DeploymentHealth
from .pools import Pool, SlotPool
from .router import Deployment, ModelGroup, ModelRouter
from .strategies import make_strategy

if TYPE_CHECKING:
    from ..components import ProviderType
    from ..http.app import Gateway
    from ..state import SharedState

__all__ = ["OpenedProvider", "ProviderPlan", "build_router", "check_routing", "open_providers"]


@dataclass(slots=True)
class ProviderPlan:
    """A provider table, its type, and its validated options: ready to open."""

    settings: ProviderSettings
    type: ProviderType
    options: Any


@dataclass(slots=True)
class OpenedProvider:
    settings: ProviderSettings
    provider: Provider
    models: Sequence[ModelEntry]


def check_routing(config: Config) -> None:
    """Every public model name is served once; every alias target exists."""
    source = config.source
    owners: dict[str, str] = {}
    listed: dict[str, dict[str, ModelEntry]] = {}
    for settings in config.providers:
        listed[settings.name] = {m.name: m for m in settings.models}
        for index, entry in enumerate(settings.models):
            owner = owners.setdefault(entry.name, f"provider {settings.name!r}")
            if owner != f"provider {settings.name!r}":
                raise ConfigError(
                    f"model {entry.name!r} is also served by {owner}; "
                    "give one of them another name, or put both behind an alias",
                    source=source,
                    key=f"providers[{settings.index}].models[{index}]",
                )
    for index, alias in enumerate(config.aliases):
        key = f"aliases[{index}]"
        if alias.name in owners:
            raise ConfigError(
                f"alias {alias.name!r} is also the name of a model served by {owners[alias.name]}",
                source=source,
                key=f"{key}.name",
            )
        owners[alias.name] = f"alias {alias.name!r}"
        for t, target in enumerate(alias.targets):
            models = listed.get(target.provider)
            if models is None:
                raise ConfigError(
                    f"no provider is named {target.provider!r} (providers: "
                    f"{', '.join(sorted(listed)) or 'none'})",
                    source=source,
                    key=f"{key}.targets[{t}].target",
                )
            # A provider that lists its models must list this one; one that relies on
            # its type's defaults is checked when it starts.
            if models and target.model not in models:
                raise ConfigError(
                    f"provider {target.provider!r} does not list model {target.model!r} "
                    f"(it lists: {', '.join(models)})",
                    source=source,
                    key=f"{key}.targets[{t}].target",
                )


async def open_providers(
    plans: Sequence[ProviderPlan], gateway: Gateway, stack: contextlib.AsyncExitStack
) -> list[OpenedProvider]:
    """Build every provider; everything opened is closed by ``stack``."""
    opened: list[OpenedProvider] = []
    for plan in plans:
        settings = plan.settings
        context = ProviderContext(
            settings.name, settings.models, plan.options, gateway,
            concurrency=settings.policy.concurrency,
        )
        try:
            provider = plan.type.factory(context)
            if inspect.isawaitable(provider):
                provider = await provider
        except StartupError:
            raise
        except Exception as exc:
            raise StartupError(
                f"provider {settings.name!r} (type {settings.type!r}) failed to start: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        finally:
            # Clients it made are closed even if the factory failed after making them.
            for client in context.clients:
                stack.push_async_callback(client.aclose)
        # Exit runs in reverse: the provider closes first, then its clients.
        stack.push_async_callback(provider.aclose)
        models = settings.models or list(getattr(provider, "default_models", ()))
        opened.append(OpenedProvider(settings, provider, models))
    return opened


def build_router(config: Config, opened: Sequence[OpenedProvider],
                 state: SharedState | None = None) -> ModelRouter:
    """One group per listed model, one per alias; pools per provider, health per
    upstream (shared by every instance when ``state`` is given)."""
    router = ModelRouter()
    by_name = {o.settings.name: o for o in opened}
    pools: dict[str, SlotPool] = {}
    health: dict[tuple[str, str], DeploymentHealth] = {}

    def deployment(item: OpenedProvider, upstream: str, weight: float = 1.0) -> Deployment:
        policy = item.settings.policy
        name = item.settings.name
        if name not in pools:
            sizes: dict[str, Any] = {"concurrency": policy.concurrency, "buffer": policy.buffer,
                     "drop_excess": policy.drop_excess, "queue_timeout": policy.queue_timeout}
            pools[name] = (Pool(f"provider {name!r}", **sizes) if state is None
                           else state.pool(f"provider:{name}", f"provider {name!r}", **sizes))
        key = (name, upstream)
        if key not in health:
            health[key] = DeploymentHealth(
                BreakerSettings(
                    failures=policy.cooldown_failures,
                    window=policy.cooldown_window,
                    cooldown=policy.cooldown,
                    max_cooldown=max(policy.cooldown * 10, policy.cooldown),
                )
            )
            if state is not None:
                state.rests.watch(f"{name}/{upstream}", health[key])
        return Deployment(name, item.provider, upstream, pools[name], health[key], weight)

    for item in opened:
        policy = item.settings.policy
        for entry in item.models:
            if any(g.name == entry.name for g in router.groups()):
                raise StartupError(
                    f"model {entry.name!r} of provider {item.settings.name!r} is already "
                    "served by another provider"
                )
            single = [deployment(item, entry.upstream_id)]
            router.add(ModelGroup(
                entry.name, single, make_strategy("fallback", single),
                max_retries=policy.max_retries, timeout=policy.timeout,
                fallback_on=frozenset(policy.fallback_on), owned_by=item.settings.name,
            ))
    for alias in config.aliases:
        router.add(_alias_group(alias, by_name, deployment))
    return router


def _alias_group(alias: AliasSettings, by_name: dict[str, OpenedProvider], make: Any) -> ModelGroup:
    deployments = []
    for target in alias.targets:
        item = by_name[target.provider]
        entry = next((m for m in item.models if m.name == target.model), None)
        if entry is None:
            raise StartupError(
                f"alias {alias.name!r}: provider {target.provider!r} does not serve "
                f"model {target.model!r}"
            )
        deployments.append(make(item, entry.upstream_id, target.weight))
    return ModelGroup(
        alias.name,
        deployments,
        make_strategy(alias.strategy, deployments, random.Random()),
        max_retries=alias.max_retries,
        timeout=alias.timeout,
        fallback_on=frozenset(alias.fallback_on),
        owned_by="sluiceway",
    )
