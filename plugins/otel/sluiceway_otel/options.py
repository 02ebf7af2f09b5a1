"""``[plugin.otel]``: the tracer's options, validated like every sluiceway table."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

import msgspec

from sluiceway.api import Duration, Secret

__all__ = ["OtelOptions"]


class OtelOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[plugin.otel]``.

    What is left unset falls back to the SDK's ``OTEL_*`` environment variables
    (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, ``OTEL_EXPORTER_OTLP_HEADERS``,
    ``OTEL_SERVICE_NAME``...), then to the SDK's defaults.
    """

    # Where spans go: an OTLP collector, stdout (one JSON object per span), or nowhere
    # (no span is built at all).
    exporter: Literal["otlp", "console", "none"] = "otlp"
    # OTLP over HTTP (protobuf bodies) or gRPC (needs the sluiceway-otel[grpc] extra).
    protocol: Literal["http/protobuf", "grpc"] = "http/protobuf"
    # The collector: "http://collector:4318" (HTTP: /v1/traces is added when the URL
    # has no path) or "http://collector:4317" (gRPC).
    endpoint: str | None = None
    # Sent with every export, e.g. {authorization = "env:OTLP_TOKEN"}; values are secrets.
    headers: dict[str, Secret] = msgspec.field(default_factory=dict)
    # One export request's timeout.
    timeout: Duration = Duration(10)
    # service.name of the resource; "" reads OTEL_SERVICE_NAME, else "sluiceway".
    service_name: str = ""
    # The share of new traces recorded (0 to 1). A propagated parent's decision wins.
    sample_ratio: Annotated[float, msgspec.Meta(ge=0, le=1)] = 1.0
    # Continue the client's trace from its W3C traceparent/tracestate headers.
    propagate: bool = False
    # Also install this gateway's TracerProvider as the process-global one.
    set_global: bool = False
    # Requests followed at once; past it, the oldest is forgotten (its spans are lost).
    max_open: Annotated[int, msgspec.Meta(ge=1)] = 10_000
    # A request not ended after this long is forgotten.
    max_age: Duration = Duration(3600)
    # The batch processor's queue (spans beyond it are dropped, never waited for)
    # and how often it exports.
    max_queue_size: Annotated[int, msgspec.Meta(ge=1)] = 2048
    schedule_delay: Duration = Duration(5)
    # gen_ai.provider.name per [[providers]] name, when the provider's type is not
    # the right answer ("azure-east" = "azure.ai.openai").
    provider_names: dict[str, str] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("max_age", "schedule_delay", "timeout"):
            value = Duration.parse(getattr(self, name))  # also accepts "5m" given in code
            if not value > 0:
                raise ValueError(f"{name} must be longer than 0s")
            setattr(self, name, value)
        if self.endpoint is not None:
            parts = urlsplit(self.endpoint)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(
                    f"endpoint must be an http:// or https:// URL (found {self.endpoint!r})"
                )
            if parts.username or parts.password:
                raise ValueError("endpoint must not hold credentials: send them in headers")
        for key in self.headers:
            if not key or key != key.strip() or any(c in key for c in ":\r\n"):
                raise ValueError(f"headers: {key!r} is not a header name")
