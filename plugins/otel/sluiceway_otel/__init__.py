"""sluiceway event sink ``otel``: OpenTelemetry spans for every request.

Each request becomes a ``SERVER`` span (``chat {model}`` on model routes,
``{METHOD} {route}`` elsewhere) and each upstream attempt a ``CLIENT`` span
under it (``chat {upstream model}``), with the GenAI semantic conventions'
attributes (``gen_ai.*``: operation, provider, models, token usage, time to
first chunk) and sluiceway's own (request id, key id, deployment, attempt,
retry or fallback, cost). Spans are exported in a background thread by the
SDK's batch processor; each gateway has a ``TracerProvider`` of its own.

    [gateway]
    plugins = ["openai", "api-keys", "otel"]

    [plugin.otel]
    exporter = "otlp"                       # or "console", "none"
    endpoint = "http://collector:4318"      # OTLP/HTTP; protocol = "grpc" for 4317
    headers = { authorization = "env:OTLP_AUTH" }
    service_name = "llm-gateway"
    sample_ratio = 0.25
    propagate = true                        # continue the client's traceparent

In code, :class:`OtelPlugin` takes any ``SpanExporter`` (an in-memory one in tests).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.sdk.trace.export import SpanExporter

import sluiceway.api as sluiceway
from sluiceway.api import (
    ConfigError,
    EventSinkType,
    Gateway,
    Middleware,
    hookimpl,
    validate_options,
)

from .exporters import ExporterFactory, MissingExporter, exporter_factory, http_traces_url
from .options import OtelOptions
from .propagation import TraceContextCapture, create_propagation, find_sink
from .sink import ProviderInfo, RouteInfo, TraceSink

__all__ = [
    "OtelOptions",
    "OtelPlugin",
    "ProviderInfo",
    "RouteInfo",
    "TraceContextCapture",
    "TraceSink",
    "create_propagation",
    "create_sink",
    "find_sink",
    "http_traces_url",
    "load_options",
    "register_event_sinks",
    "register_middleware",
]

PLUGIN = "otel"

# Where a provider type's upstream is when its table does not say (base_url's default).
_DEFAULT_BASE_URLS = {"anthropic": "https://api.anthropic.com"}


def load_options(gateway: Gateway) -> OtelOptions:
    """``[plugin.otel]``, validated; a ``ConfigError`` names a bad key."""
    config = gateway.config
    return validate_options(
        config.plugin_options(PLUGIN), OtelOptions, source=config.source, key=f"plugin.{PLUGIN}"
    )


def create_sink(
    gateway: Gateway,
    exporter: SpanExporter | None = None,
    options: OtelOptions | None = None,
) -> TraceSink:
    """The ``factory(gateway)`` of the event sink. ``options`` replace
    ``[plugin.otel]`` and ``exporter`` the one the options describe."""
    if options is None:
        options = load_options(gateway)
        source = gateway.config.source
    else:
        source = "OtelPlugin"
    factory: ExporterFactory | None
    if exporter is not None:
        given = exporter

        def factory() -> SpanExporter:
            return given
    else:
        try:
            factory = exporter_factory(options)
        except MissingExporter as exc:
            raise ConfigError(str(exc), source=source, key=f"plugin.{PLUGIN}.protocol") from None
    routes: dict[str, RouteInfo] = {}
    for registered in gateway.registry.routes:
        route = registered.item
        if route.name and route.name not in routes:
            routes[route.name] = RouteInfo(route.path, route.calls_model)
    providers = {
        settings.name: _provider_info(settings.name, settings.type, settings.options, options)
        for settings in gateway.config.providers
    }
    return TraceSink(options, exporter=factory, routes=routes, providers=providers,
                     version=sluiceway.__version__)


def _provider_info(
    name: str, type_: str, table: dict[str, Any], options: OtelOptions
) -> ProviderInfo:
    system = options.provider_names.get(name, type_)
    base_url = table.get("base_url", _DEFAULT_BASE_URLS.get(type_))
    if not isinstance(base_url, str):
        return ProviderInfo(system)
    try:
        parts = urlsplit(base_url)
        port = parts.port
    except ValueError:
        return ProviderInfo(system)
    if not parts.hostname:
        return ProviderInfo(system)
    if port is None:
        port = {"https": 443, "http": 80}.get(parts.scheme)
    # Only host and port: a URL's user:password part is never copied into a span.
    return ProviderInfo(system, parts.hostname, port)


class OtelPlugin:
    """The plugin as an object, for embedding and tests::

        exporter = InMemorySpanExporter()
        app = create_app(config, plugins=[("otel", OtelPlugin(exporter, service_name="gw"))])

    Its options are given here, as keyword arguments (those of ``[plugin.otel]``),
    not in the config: leave ``otel`` out of ``[gateway] plugins`` then. A bad
    option is a ``ConfigError`` at once. ``exporter``, when given, replaces the
    one the options describe.
    """

    def __init__(self, exporter: SpanExporter | None = None, **options: Any) -> None:
        self.exporter = exporter
        self.options = validate_options(
            options, OtelOptions, source="OtelPlugin", key=f"plugin.{PLUGIN}"
        )

    def create_sink(self, gateway: Gateway) -> TraceSink:
        return create_sink(gateway, self.exporter, self.options)

    @hookimpl
    def register_event_sinks(self, register: Callable[[EventSinkType], None]) -> None:
        register(EventSinkType(PLUGIN, self.create_sink))

    @hookimpl
    def register_middleware(self, register: Callable[[Middleware], None]) -> None:
        register(Middleware(f"{PLUGIN}:traceparent", create_propagation, slot="before_auth"))


@hookimpl
def register_event_sinks(register: Callable[[EventSinkType], None]) -> None:
    register(EventSinkType(PLUGIN, create_sink))


@hookimpl
def register_middleware(register: Callable[[Middleware], None]) -> None:
    register(Middleware(f"{PLUGIN}:traceparent", create_propagation, slot="before_auth"))
