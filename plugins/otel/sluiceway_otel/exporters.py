"""Span exporters from ``[plugin.otel]``.

:func:`exporter_factory` is called while the gateway is built, so that a missing
package or a bad option stops the gateway before it serves; the exporter itself
is made at each startup (a shut-down exporter cannot be reused).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter

from .options import OtelOptions

__all__ = ["ExporterFactory", "exporter_factory", "http_traces_url"]

ExporterFactory = Callable[[], SpanExporter]

_OTLP_MODULES = {
    "http/protobuf": ("opentelemetry.exporter.otlp.proto.http.trace_exporter",
                      "opentelemetry-exporter-otlp-proto-http", "sluiceway-otel"),
    "grpc": ("opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
             "opentelemetry-exporter-otlp-proto-grpc", "sluiceway-otel[grpc]"),
}


class MissingExporter(ValueError):
    """The package of the configured protocol is not installed."""


def http_traces_url(endpoint: str) -> str:
    """OTLP/HTTP wants the signal's own URL: ``/v1/traces`` is added to a bare
    ``http://collector:4318`` (a URL with a path is used as it is)."""
    if urlsplit(endpoint).path.strip("/"):
        return endpoint
    return endpoint.rstrip("/") + "/v1/traces"


def _console() -> SpanExporter:
    """One compact JSON object per line, to this process's stdout as it is now."""
    return ConsoleSpanExporter(
        out=sys.stdout, formatter=lambda span: span.to_json(indent=None) + "\n"
    )


def exporter_factory(options: OtelOptions) -> ExporterFactory | None:
    """What makes the exporter that ``options`` describe (``None``: export nothing).
    Raises :class:`MissingExporter` when the protocol's package is not installed."""
    if options.exporter == "none":
        return None
    if options.exporter == "console":
        return _console
    module_name, package, extra = _OTLP_MODULES[options.protocol]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise MissingExporter(
            f"protocol {options.protocol!r} needs the {package} package: "
            f"pip install '{extra}'"
        ) from None
    exporter_class: Any = module.OTLPSpanExporter
    kwargs: dict[str, Any] = {"timeout": float(options.timeout)}
    headers = {name: secret.reveal() for name, secret in options.headers.items()}
    if options.protocol == "grpc":
        if headers:
            kwargs["headers"] = {name.lower(): value for name, value in headers.items()}
        if options.endpoint is not None:
            kwargs["endpoint"] = options.endpoint
    else:
        if headers:
            kwargs["headers"] = headers
        if options.endpoint is not None:
            kwargs["endpoint"] = http_traces_url(options.endpoint)

    def make() -> SpanExporter:
        exporter: SpanExporter = exporter_class(**kwargs)
        return exporter

    return make
