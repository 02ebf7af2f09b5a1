"""``propagate = true``: the client's W3C trace context continues in the gateway.

The lifecycle events carry no request headers, so a ``before_auth`` middleware
reads ``traceparent`` and ``tracestate`` and hands them to the sink under the
request's id. With ``propagate = false`` (the default) the factory returns the
next app itself: the stack has no extra layer.
"""

from __future__ import annotations

from typing import Any

from sluiceway.api import CONTEXT_KEY, Gateway, RequestContext

from .sink import TraceSink

__all__ = ["TraceContextCapture", "create_propagation", "find_sink"]

ASGIApp = Any


def find_sink(gateway: Gateway) -> TraceSink | None:
    """This gateway's trace sink, if the plugin registered one."""
    for _, sink in gateway.events.sinks:
        if isinstance(sink, TraceSink):
            return sink
    return None


class TraceContextCapture:
    """Hands each request's ``traceparent``/``tracestate`` to the sink."""

    def __init__(self, app: ASGIApp, sink: TraceSink) -> None:
        self.app = app
        self.sink = sink

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            ctx: RequestContext | None = scope.get(CONTEXT_KEY)
            if ctx is not None:
                traceparent = ctx.header(b"traceparent")
                if traceparent:
                    self.sink.continue_trace(
                        ctx.request_id, traceparent, ctx.header(b"tracestate")
                    )
        await self.app(scope, receive, send)


def create_propagation(app: ASGIApp, gateway: Gateway) -> ASGIApp:
    """The ``factory(app, gateway)`` of the ``before_auth`` middleware."""
    sink = find_sink(gateway)
    if sink is None or not sink.enabled or not sink.options.propagate:
        return app
    return TraceContextCapture(app, sink)
