"""sluiceway event sink ``request-log``: a structured JSON log of requests.

* One line per request at INFO on the logger ``sluiceway.requests``: id, key
  id, route, model, provider, status, latencies, tokens, cost, attempts.
* At DEBUG, one line per step: arrival, auth and policy decisions, each
  upstream call and response, the first token, the end.
* A WARNING line for each request slower than ``slow_request`` (30 s).

The lines go to the logging system by default, or to a file of JSON lines.
Either way the event loop only enqueues: a thread per gateway formats and
writes. Enable it in plugins.toml::

    [gateway]
    plugins = ["openai", "api-keys", "request-log"]

    [plugin.request-log]
    slow_request = "30s"
    file = "/var/log/sluiceway/requests.jsonl"   # default: the logging system
"""

from __future__ import annotations

from collections.abc import Callable

from sluiceway.api import EventSinkType, hookimpl

from .lines import Progress, Queued, Timestamps, line_for, timestamp
from .options import RequestLogOptions
from .sink import LOGGER, PLUGIN, RequestLog, create_sink, load_options
from .writer import FileOutput, LoggingOutput, Writer

__all__ = [
    "LOGGER",
    "PLUGIN",
    "FileOutput",
    "LoggingOutput",
    "Progress",
    "Queued",
    "RequestLog",
    "RequestLogOptions",
    "Timestamps",
    "Writer",
    "create_sink",
    "line_for",
    "load_options",
    "register_event_sinks",
    "timestamp",
]


@hookimpl
def register_event_sinks(register: Callable[[EventSinkType], None]) -> None:
    register(EventSinkType(PLUGIN, create_sink))
