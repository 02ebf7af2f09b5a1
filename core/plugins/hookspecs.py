"""The hook contract between sluiceway and its plugins (version 1).

Every hook here is an *assembly* hook: it runs once, while the gateway is built,
and registers objects through the ``register`` callback it is given. The request
path calls those objects directly and never calls a hook, because pluggy is
synchronous, a ``firstresult`` hook stops at the first coroutine object, and a
hook call costs more than calling a pre-resolved object.

The core calls each hook **per plugin, in the order plugins.toml lists them**, so
that every registration is attributed to its plugin and order never depends on
installation order. An implementation may accept fewer arguments than the spec
(pluggy passes only the ones it names), so adding an argument later breaks no
plugin. ``register`` raises :class:`~sluiceway.errors.PluginError` for an object
of the wrong kind or a duplicate name; the gateway then refuses to start.

Each docstring follows one template: what the hook is for, when it is called,
its parameters, what it returns, and who may use it.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import click

    from ..components import AuthStrategyType, CallPolicyType, Middleware, ProviderType, Route
    from ..config.settings import Config
    from ..events import EventSinkType
    from ..http.app import Gateway

__all__ = ["HOOK_API_VERSION", "hookimpl", "hookspec"]

HOOK_API_VERSION = 1

hookspec = pluggy.HookspecMarker("sluiceway")
hookimpl = pluggy.HookimplMarker("sluiceway")

# --------------------------------------------------------------------------
# Assembly: what the gateway is made of
# --------------------------------------------------------------------------


@hookspec
def register_provider_types(register: Callable[[ProviderType], None]) -> None:
    """Register kinds of provider that ``[[providers]]`` tables can name by ``type``.

    Called once per gateway build, per plugin in plugins.toml order.

    :param register: call with a :class:`~sluiceway.ProviderType` for each kind.
        A type name already registered by another plugin is a startup error
        naming both plugins.
    :returns: nothing; results are ignored.

    Used by provider plugins (``mock``, ``openai``...).
    """


@hookspec
def register_routes(register: Callable[[Route], None], config: Config) -> None:
    """Register extra HTTP routes, such as ``/metrics`` or a login callback.

    Called once per gateway build, per plugin in plugins.toml order. A path is
    exact, or ends in one ``{parameter}`` that takes the rest of the path
    (slashes included) into ``scope["path_params"]``. A path and method already
    taken (by the core or another plugin) is a startup error naming both owners.

    :param register: call with a :class:`~sluiceway.Route` for each route.
    :param config: the gateway's configuration, for routes that depend on the
        plugin's options (take the argument only if you need it).
    :returns: nothing.

    Used by plugins that expose endpoints of their own.
    """


@hookspec
def register_middleware(register: Callable[[Middleware], None]) -> None:
    """Register pure ASGI middleware in a named slot of the stack.

    Called once per gateway build, per plugin in plugins.toml order. Slots are
    ``"before_auth"`` (after request context and error handling, before the auth
    chain) and ``"after_auth"`` (the principal is known, before the endpoint).
    Within a slot the first plugin listed is the outermost.

    :param register: call with a :class:`~sluiceway.Middleware`.
    :returns: nothing.

    Used by policy plugins (rate limits, abuse guards) and by anything that must
    see every request.
    """


@hookspec
def register_call_policies(register: Callable[[CallPolicyType], None], config: Config) -> None:
    """Register policies that admit and settle every model call.

    Called once per gateway build, per plugin in plugins.toml order. Each
    :class:`~sluiceway.CallPolicyType`'s ``factory(gateway)`` is called once
    while the gateway is built and returns a :class:`~sluiceway.CallPolicy`.
    For each model call of a kind in the policy's ``kinds``, the
    :class:`~sluiceway.calls.CallRunner` awaits ``admit(call)`` (in
    registration order) after the request is parsed and its model resolved and
    before any upstream is tried; a policy refuses by raising a
    :class:`~sluiceway.GatewayError`. What ``admit`` returns (an async
    ``settle(call)``, or ``None``) is awaited exactly once when the call ends:
    on success, on error, or when the client hangs up. Policies read the typed
    :class:`~sluiceway.ModelCall` (principal, model, parsed request, estimate,
    deployment, usage, cost, status) and never re-parse the body.

    :param register: call with a :class:`~sluiceway.CallPolicyType`; a name
        already registered is a startup error naming both plugins.
    :param config: the gateway's configuration (take it only if you need it).
    :returns: nothing.

    Used by policy plugins: ``limits`` (rpm, tpm, concurrency), ``costs``
    (prices and budgets), ``guard`` (per-key bursts).
    """


@hookspec
def register_event_sinks(register: Callable[[EventSinkType], None]) -> None:
    """Register sinks that receive every lifecycle event of every request.

    Called once per gateway build, per plugin in plugins.toml order. Each
    :class:`~sluiceway.EventSinkType`'s ``factory(gateway)`` is called once while
    the gateway is built; the sink's ``handle(event)`` then runs synchronously on
    the event loop for each event and must not block. A sink that raises is
    logged and skipped; the request goes on.

    :param register: call with a :class:`~sluiceway.EventSinkType`.
    :returns: nothing.

    Used by metrics exporters, request logs and tracers.
    """


@hookspec
def register_auth_strategies(register: Callable[[AuthStrategyType], None]) -> None:
    """Register kinds of auth strategy that ``[auth] chain`` can name.

    Called once per gateway build, per plugin in plugins.toml order. Only the
    strategies named in the chain are built, in chain order, with options from
    their ``[auth.<name>]`` table.

    :param register: call with an :class:`~sluiceway.AuthStrategyType`.
    :returns: nothing.

    Used by auth plugins (``api-keys``, ``jwt``).
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add subcommands to the ``sluiceway`` command line.

    Called once when the CLI starts, for every plugin named in the default
    plugins.toml (or ``--config``), in order.

    :param cli: the top-level :class:`click.Group`; use ``@cli.command()`` or
        ``cli.add_command``.
    :returns: nothing.

    Used by plugins with operator commands (``keys``, ``sessions``).
    """


# --------------------------------------------------------------------------
# Lifecycle
# --------------------------------------------------------------------------


@hookspec
def lifespan(gateway: Gateway) -> AbstractAsyncContextManager[None] | None:
    """Open resources when the gateway starts and close them when it stops.

    Called once at startup, per plugin in plugins.toml order, after providers
    are built. Return an async context manager (or ``None``); they are entered
    in order on one exit stack and exited in reverse. Raise
    :class:`~sluiceway.errors.StartupError` to abort startup with a clear message.
    Runs inside the serving event loop, whether the gateway is served
    standalone or mounted in another ASGI app.

    :param gateway: the :class:`~sluiceway.Gateway` being started.
    :returns: an async context manager, or ``None``.

    Used by plugins that hold connections or background tasks.
    """
