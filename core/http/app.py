"""The gateway as one ASGI application: built once from the configuration.

``create_app`` loads the named plugins, runs the assembly hooks, validates every
plugin-owned table and builds the middleware stack; nothing is opened yet.
Providers and plugin resources open at startup, inside the serving event loop:
on the ASGI lifespan when served standalone, through :meth:`Gateway.lifespan`
when a host app chains it, or lazily (under a lock) on the first request when
the gateway is mounted and nobody chained it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from ..calls import CallRunner, Dispatcher, RetryBudget
from ..calls.pools import Pool, SlotPool
from ..calls.router import ModelAccess, ModelRouter
from ..calls.topology import build_router, check_routing, open_providers
from ..components import ASGIApp, Provider, Receive, Scope, Send
from ..config.loading import load_config, parse_config
from ..config.settings import Config
from ..errors import (
    PermissionDenied,
    ServiceUnavailable,
    StartupError,
)
from ..plugins.assembly import (
    OwnedLifespans,
    build_auth_chain,
    build_call_policies,
    build_events,
    built_by,
    plan_provider,
)
from ..plugins.loading import PluginSet, load_plugins
from ..plugins.registry import Registry
from ..sessions import SessionManager
from .context import RequestContext
from .middleware import AuthMiddleware, RequestContextMiddleware
from .routes import RouteTable
from .stats import RequestStats
from .subrequest import run_subrequest

if TYPE_CHECKING:
    from ..components import Principal
    from ..state import SharedState

__all__ = ["Gateway", "create_app"]

log = logging.getLogger("sluiceway")


class Gateway:
    """The sluiceway ASGI application.

    Serve it with any ASGI server, or mount it in Starlette/FastAPI. Use
    :meth:`lifespan` to tie its startup and shutdown to a host app's.
    """

    def __init__(self, config: Config, *, plugins: Sequence[tuple[str, object]] = ()) -> None:
        self.config = config
        # Hot reload: the root is the object a server holds; it sends requests to the
        # active generation (itself until a reload) and tracks the retiring ones.
        self.root: Gateway = self
        self.active: Gateway = self
        self.retiring: set[Gateway] = set()
        self.stopping = False  # the root is shutting down: no more reloads
        self.background: set[asyncio.Task[None]] = set()
        self.extra_plugins = tuple(plugins)
        self._reload_lock: asyncio.Lock | None = None
        self.plugins: PluginSet = load_plugins(
            config.gateway.plugins, source=config.source, extra=plugins
        )
        self.registry = Registry.collect(self.plugins, config)
        self.routes = RouteTable(self.registry.routes)
        self.router = ModelRouter()
        self.access = ModelAccess()
        self.providers: dict[str, Provider] = {}
        # Requests in flight, so that shutdown can end each one properly.
        self.inflight: set[RequestContext] = set()
        self.stats = RequestStats()
        self.started = False
        self.draining = False
        # Set by shutdown(): a gateway that was stopped is not restarted by a late request.
        self.closed = False
        self._start_lock: asyncio.Lock | None = None
        self._lazy_start: asyncio.Task[None] | None = None
        self._lazy_retry_at = 0.0
        self._exit_stack: contextlib.AsyncExitStack | None = None
        self._provider_plans = [plan_provider(self.registry, config, p) for p in config.providers]
        check_routing(config)
        gateway_settings = config.gateway
        self.dispatcher = Dispatcher(
            RetryBudget(gateway_settings.retry_budget, gateway_settings.retry_budget_min),
            inflight=lambda: len(self.inflight),
        )
        # What must hold across instances, in Redis ([state] backend = "redis").
        self.state: SharedState | None = None
        if config.state.backend == "redis":
            from ..state import SharedState

            self.state = SharedState(config.state)
        # The gateway-wide cap on requests served at once, if configured.
        self.capacity: SlotPool | None = None
        if gateway_settings.max_concurrent_requests:
            sizes: dict[str, Any] = {"concurrency": gateway_settings.max_concurrent_requests,
                     "buffer": 1 << 30, "queue_timeout": float(gateway_settings.queue_timeout)}
            self.capacity = (Pool("the gateway", **sizes) if self.state is None
                             else self.state.pool("gateway", "the gateway", **sizes))
        # Built middleware, sinks and policies that own resources (a ``lifespan()`` method).
        self._owned_lifespans: OwnedLifespans = []
        self.events = build_events(self.registry, self, self._owned_lifespans)
        # Every model call goes through this: capacity, policies, dispatch, settlement.
        self.calls = CallRunner(
            self.dispatcher, self.capacity,
            build_call_policies(self.registry, self, self._owned_lifespans),
            router=lambda: self.router, access=self.access,
        )
        # Logins of providers whose credentials expire (browser sessions, tokens).
        self.sessions = SessionManager(
            config.sessions, base_dir=config.base_dir, source=config.source, events=self.events
        )
        self._auth_chain = build_auth_chain(self.registry, config, self, self._owned_lifespans)
        self._app: ASGIApp = self._build_stack()

    # -- build -------------------------------------------------------------

    def _build_stack(self) -> ASGIApp:
        app: ASGIApp = self.routes
        by_slot: dict[str, list[Any]] = {"edge": [], "before_auth": [], "after_auth": []}
        for registered in self.registry.middleware:
            by_slot[registered.item.slot].append(registered)
        # Wrap innermost first, so the first listed ends up outermost in its slot.
        for registered in reversed(by_slot["after_auth"]):
            app = self._wrap(registered, app)
        if self._auth_chain:
            app = AuthMiddleware(app, self._auth_chain)
        for registered in reversed(by_slot["before_auth"]):
            app = self._wrap(registered, app)
        app = RequestContextMiddleware(app, self)
        for registered in reversed(by_slot["edge"]):
            app = self._wrap(registered, app)
        return app

    def _wrap(self, registered: Any, app: ASGIApp) -> ASGIApp:
        middleware = registered.item
        built = built_by(
            registered.plugin,
            f"middleware {middleware.name!r}",
            lambda: middleware.factory(app, self),
        )
        if callable(getattr(built, "lifespan", None)):
            self._owned_lifespans.append((registered.plugin, built))
        return built  # type: ignore[no-any-return]

    def require_operator(self, ctx: RequestContext) -> None:
        """Refuse (403 ``operator_only``) a caller whose key is not one of
        ``[gateway] operator_keys``: for routes that show every caller's data.
        With authentication off, everyone is an operator."""
        if not self._auth_chain:
            return
        principal = ctx.principal
        if principal is None or principal.key_id not in self.config.gateway.operator_keys:
            raise PermissionDenied(
                "This endpoint shows every caller's data: only the keys listed in "
                "[gateway] operator_keys may read it.",
                code="operator_only",
            )

    subrequest = run_subrequest  # a request of the gateway itself: see .subrequest

    # -- lifecycle ---------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Started and not draining."""
        return self.started and not self.draining

    async def startup(self) -> None:
        """Build providers and enter every plugin's lifespan; idempotent and race-safe."""
        if self.started:
            return
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self.started:
                return
            stack = contextlib.AsyncExitStack()
            try:
                await self._open(stack)
            except BaseException:
                await stack.aclose()
                self.providers.clear()
                self.router = ModelRouter()
                raise
            self._exit_stack = stack
            self.draining = False
            self.closed = False
            self.started = True
            if not self._auth_chain:
                log.warning(
                    "AUTHENTICATION IS OFF: any caller can use every model. "
                    "Set [auth] chain in %s before exposing this gateway.",
                    self.config.source,
                )

    async def ensure_started(self) -> None:
        """Start on a first request when nobody ran the lifespan (a mounted gateway).

        Startup runs in a task of its own, so a request that is cancelled cannot
        abandon it half-way, and concurrent first requests share one attempt. A
        failure is answered with 503 and not retried for a few seconds.
        """
        if self.closed:
            raise ServiceUnavailable("The gateway has shut down.", code="shut_down")
        loop = asyncio.get_running_loop()
        task = self._lazy_start
        if task is None or (task.done() and loop.time() >= self._lazy_retry_at):
            log.warning(
                "starting on the first request: chain gateway.lifespan into the host app's "
                "lifespan so that startup errors stop the host and resources close at exit"
            )
            task = self._lazy_start = loop.create_task(self._start_once())
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled():  # startup itself was cancelled, not this request
                self._lazy_retry_at = 0.0
            raise
        except Exception as exc:
            raise ServiceUnavailable(
                "The gateway could not start; see its log.", code="startup_failed", retry_after=5
            ) from exc

    async def _start_once(self) -> None:
        try:
            await self.startup()
        except Exception as exc:
            # Recorded before the task completes, so no waiter can start a second try.
            self._lazy_retry_at = asyncio.get_running_loop().time() + 5.0
            log.error("startup failed: %s", exc)
            raise

    async def _open(self, stack: contextlib.AsyncExitStack) -> None:
        if self.state is not None:
            # Left last: slots still held are given back once every request ended.
            await stack.enter_async_context(self.state.lifespan())
        # Entered first, so left last: what providers share for their logins (a
        # browser) closes after every provider has.
        await stack.enter_async_context(self.sessions.lifespan())
        opened = await open_providers(self._provider_plans, self, stack)
        await self.sessions.prepare()
        self.providers = {o.settings.name: o.provider for o in opened}
        self.router = build_router(self.config, opened, self.state)
        managers: list[tuple[str, Any]] = [
            (plugin.name, manager)
            for plugin, manager in self.plugins.call_each("lifespan", gateway=self)
        ]
        # Sinks first, then middleware innermost first: closed in the reverse order.
        managers += [(plugin, built.lifespan()) for plugin, built in self._owned_lifespans]
        for plugin_name, manager in managers:
            if manager is None:
                continue
            if not hasattr(manager, "__aenter__"):
                raise StartupError(
                    f"plugin {plugin_name!r}: lifespan must return an async context manager "
                    f"or None, not {type(manager).__name__}"
                )
            await stack.enter_async_context(manager)

    def begin_drain(self) -> None:
        """Stop reporting ready; in-flight requests carry on."""
        self.draining = True

    def interrupt_inflight(self, reason: str = "shutdown") -> int:
        """End every in-flight request now: streams get an error frame, others a 503."""
        contexts = list(self.inflight)
        for ctx in contexts:
            ctx.interrupt(reason)
        return len(contexts)

    async def shutdown(self) -> None:
        """End in-flight requests properly, then close providers and plugin resources.

        Afterwards the gateway refuses requests (503) rather than restarting on one;
        :meth:`startup` may still be called explicitly. A root closes the generations
        a reload made too.
        """
        # Under the reload lock: no reload can start a generation nobody would close.
        async with self.reload_lock():
            self.stopping = True
            others = {*self.retiring, self.active} - {self}
            for generation in others:
                await generation.close_generation()
        await self.close_generation()

    async def close_generation(self) -> None:
        """Close this generation's own providers and plugin resources (a reload
        retires the previous one this way)."""
        self.closed = True
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if not self.started:
                return
            self.begin_drain()
            if self.interrupt_inflight():
                # Let interrupted handlers write their final frames before closing clients.
                for _ in range(100):
                    if not self.inflight:
                        break
                    await asyncio.sleep(0.01)
            stack, self._exit_stack = self._exit_stack, None
            try:
                if stack is not None:
                    await stack.aclose()
            finally:
                self.started = False
                self.providers.clear()
                self.router = ModelRouter()

    @contextlib.asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        """Start on enter, shut down on exit. Pass it as (or chain it into) a host
        app's lifespan: ``Starlette(..., lifespan=gateway.lifespan)``."""
        await self.startup()
        try:
            yield
        finally:
            await self.shutdown()

    # -- ASGI --------------------------------------------------------------

    async def authenticate(self, ctx: RequestContext) -> Principal | None:
        """Who ``ctx`` comes from by the ``[auth] chain`` (the first strategy that
        knows the credential), or ``None``; for public routes that want a principal
        of their own (the admin plugin's JWT roles). A bad credential raises."""
        for strategy in self._auth_chain:
            principal = await strategy.authenticate(ctx)
            if principal is not None:
                return principal
        return None

    def generations(self) -> list[Gateway]:
        """The generation serving and those a reload is retiring (the root's view)."""
        root = self.root
        return [root.active, *(g for g in root.retiring if g is not root.active)]

    def reload_lock(self) -> asyncio.Lock:
        """One reload at a time."""
        if self._reload_lock is None:
            self._reload_lock = asyncio.Lock()
        return self._reload_lock

    async def reload(self, config: Config | None = None) -> Gateway:
        """Serve ``config`` (default: the configuration file, read again) from now on,
        without dropping a request: see :mod:`sluiceway.http.reload`."""
        from .reload import reload

        return await reload(self, config)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            active = self.active
            if active is not self:
                await active._app(scope, receive, send)
                return
            await self._app(scope, receive, send)
        elif kind == "lifespan":
            await self._serve_lifespan(receive, send)
        elif kind == "websocket":
            await receive()
            await send({"type": "websocket.close", "code": 1003})

    async def _serve_lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.error("startup failed: %s", exc, exc_info=log.isEnabledFor(logging.DEBUG))
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await self.shutdown()
                except Exception as exc:
                    log.exception("shutdown failed")
                    await send({"type": "lifespan.shutdown.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app(
    config: Config | str | os.PathLike[str] | dict[str, Any],
    *,
    plugins: Sequence[tuple[str, object]] = (),
) -> Gateway:
    """Build a gateway from a :class:`Config`, a path to plugins.toml, or a dict
    shaped like the file. ``plugins`` registers extra in-process plugin objects
    by name, after those the configuration lists."""
    # In-process plugins count as listed: their [plugin.*] tables are theirs.
    extra = [name for name, _ in plugins]
    if isinstance(config, Config):
        resolved = config
    elif isinstance(config, dict):
        resolved = parse_config(config, extra_plugins=extra)
    else:
        resolved = load_config(config, extra_plugins=extra)
    return Gateway(resolved, plugins=plugins)
