"""``GET /metrics``: the Prometheus text format, or the JSON stats on ``Accept: application/json``.

The route is behind the auth chain unless ``public = true``, which registers
it as a public route (no credentials, like the health checks).
"""

from __future__ import annotations

import asyncio

import msgspec
from prometheus_client.exposition import choose_encoder

from sluiceway.api import CONTEXT_KEY, Gateway, PluginError, Receive, Scope, Send, send_bytes

from .sink import PLUGIN, PrometheusSink

__all__ = ["metrics", "sink_of", "wants_json"]


_NO_STORE = [(b"cache-control", b"no-store")]
_encode = msgspec.json.Encoder().encode
_JSON = "application/json"
# What a Prometheus scraper asks for.
_EXPOSITION = ("text/plain", "application/openmetrics-text")


def sink_of(gateway: Gateway) -> PrometheusSink:
    """This gateway's sink (each gateway has its own)."""
    for name, sink in gateway.events.sinks:
        if name == PLUGIN and isinstance(sink, PrometheusSink):
            return sink
    raise PluginError("prometheus: the gateway has no prometheus event sink")


def wants_json(accept: str | None) -> bool:
    """Whether ``Accept`` prefers ``application/json`` to the exposition formats.

    A specific media type outranks a wildcard (RFC 9110); on a tie (``*/*``, a
    browser's list, no header) the answer is the text format, which is what a
    scraper that says little expects."""
    if not accept:
        return False
    json_q: tuple[int, float] = (0, 0.0)  # (specificity, q)
    text_q: tuple[int, float] = (0, 0.0)
    for part in accept.split(","):
        media, *params = part.split(";")
        media = media.strip().lower()
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
        major = media.partition("/")[0]
        if media == _JSON:
            json_q = max(json_q, (3, q))
        elif media in _EXPOSITION:
            text_q = max(text_q, (3, q))
        elif media == "*/*":
            json_q, text_q = max(json_q, (1, q)), max(text_q, (1, q))
        elif media.endswith("/*"):
            if major == "application":
                json_q = max(json_q, (2, q))
            if major in ("text", "application"):
                text_q = max(text_q, (2, q))
    return json_q[1] > text_q[1]


async def metrics(scope: Scope, receive: Receive, send: Send) -> None:
    """The endpoint of ``GET /metrics``."""
    ctx = scope[CONTEXT_KEY]
    gateway: Gateway = ctx.gateway
    if not ctx.route.public:
        # Every caller's key ids and traffic: operators only ([gateway] operator_keys).
        gateway.require_operator(ctx)
    accept = ctx.header(b"accept")
    if wants_json(accept):
        body = _encode(gateway.stats.snapshot(gateway))
        await send_bytes(send, 200, body, headers=_NO_STORE)
        return
    sink = sink_of(gateway)
    sink.refresh()  # on the event loop, where the pools and breakers live
    encoder, content_type = choose_encoder(accept or "")
    # Rendering (and, with workers, reading every worker's file) off the event loop.
    body = await asyncio.to_thread(encoder, sink.exposed)
    await send_bytes(send, 200, body, content_type=content_type.encode("latin-1"),
                     headers=_NO_STORE)
