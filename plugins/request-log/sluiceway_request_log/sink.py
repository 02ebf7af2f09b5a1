"""The event sink: remembers what each request did until it ends, then queues its line.

``handle`` runs on the event loop for every event of every request, so it does
as little as it can: a dict lookup, a few attribute updates, a level check, and
for the lines it decides to write, one ``put`` on the writer's queue. Building
the JSON, the timestamps and all I/O happen on the writer thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from types import MappingProxyType
from typing import Any

from sluiceway.api import (
    AttemptEnded,
    AttemptStarted,
    AuthDecided,
    Event,
    FirstToken,
    Gateway,
    LimitDecided,
    PolicyDecided,
    RequestEnded,
    RequestStarted,
    StartupError,
    validate_options,
)

from .lines import Progress, Queued
from .options import RequestLogOptions
from .writer import FileOutput, LoggingOutput, Output, Writer

__all__ = ["LOGGER", "PLUGIN", "RequestLog", "create_sink", "load_options"]

PLUGIN = "request-log"
LOGGER = "sluiceway.requests"

_DEBUG, _INFO, _WARNING = logging.DEBUG, logging.INFO, logging.WARNING
# The line each decision event makes, at debug level.
_STEPS: Mapping[type[Event], str] = MappingProxyType(
    {AuthDecided: "auth", LimitDecided: "limit", PolicyDecided: "policy"})
# Forgotten requests are looked for once every this many arrivals (and whenever
# max_tracked is reached), so that arrivals do not pay for it every time.
_SWEEP_EVERY = 256


def load_options(gateway: Gateway) -> RequestLogOptions:
    """``[plugin.request-log]``, validated; a ``ConfigError`` names a bad key."""
    config = gateway.config
    return validate_options(
        config.plugin_options(PLUGIN), RequestLogOptions, source=config.source,
        key=f"plugin.{PLUGIN}",
    )


def create_sink(gateway: Gateway) -> RequestLog:
    """The ``factory(gateway)`` of the event sink."""
    return RequestLog(load_options(gateway), base_dir=gateway.config.base_dir)


class RequestLog:
    """Writes one JSON line per request (INFO), one per step at DEBUG, and a
    WARNING for slow requests. One instance per gateway: nothing is shared."""

    def __init__(
        self, options: RequestLogOptions | None = None, *, base_dir: str | Path = ".",
        logger: logging.Logger | None = None,
    ) -> None:
        options = options or RequestLogOptions()
        self.options = options
        self.logger = logger or logging.getLogger(LOGGER)
        output: Output
        if options.file is not None:
            path = Path(options.file).expanduser()
            self.path: Path | None = path if path.is_absolute() else Path(base_dir) / path
            output = FileOutput(self.path, options.max_file_size, options.keep_files)
            # Request lines and warnings always go to the file; DEBUG lines when
            # the logger is enabled for DEBUG.
            self._always = _INFO
        else:
            self.path = None
            output = LoggingOutput(self.logger)
            self._always = logging.CRITICAL + 1  # the logger's level decides everything
        self.writer = Writer(output, with_client=options.log_client_address,
                             max_queue=options.max_queue)
        self._put = self.writer.put
        self._slow = float(options.slow_request)
        self._forget_after = float(options.forget_after)
        self._max_tracked = options.max_tracked
        self._pending: OrderedDict[str, Progress] = OrderedDict()
        self._arrivals = 0
        self.forgotten = 0
        self._handlers: dict[type[Event], Callable[[Any], None]] = {
            RequestStarted: self._started,
            AuthDecided: self._step,
            LimitDecided: self._step,
            PolicyDecided: self._step,
            AttemptStarted: self._attempt_started,
            AttemptEnded: self._attempt_ended,
            FirstToken: self._first_token,
            RequestEnded: self._ended,
        }

    # -- EventSink ------------------------------------------------------------

    def handle(self, event: Event) -> None:
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)

    def lifespan(self) -> AbstractAsyncContextManager[None]:
        """Entered by the gateway at startup: opens the output and starts the
        writer thread; at shutdown (every request has ended) writes what is left."""
        return self._lifespan()

    @contextlib.asynccontextmanager
    async def _lifespan(self) -> AsyncIterator[None]:
        try:
            await asyncio.to_thread(self.writer.start)
        except OSError as exc:
            raise StartupError(
                f"plugin.{PLUGIN}.file: cannot open {self.path}: {exc.strerror}"
            ) from None
        try:
            yield
        finally:
            await asyncio.to_thread(self.writer.stop)

    @property
    def tracked(self) -> int:
        """Requests started and not yet ended that the sink remembers."""
        return len(self._pending)

    # -- per event --------------------------------------------------------------

    def _enabled(self, level: int) -> bool:
        return level >= self._always or self.logger.isEnabledFor(level)

    def _started(self, event: RequestStarted) -> None:
        pending = self._pending
        self._arrivals += 1
        if len(pending) >= self._max_tracked or not self._arrivals % _SWEEP_EVERY:
            self._forget(event.at)
        # The level is checked once per request, here: the request's other events
        # read the answer from its Progress.
        debug = self._enabled(_DEBUG)
        pending[event.request_id] = Progress(event.at, event.client, debug)
        if debug:
            self._put(Queued(_DEBUG, "request_start", time.time(), event))

    def _forget(self, now: float) -> None:
        """Drop the oldest requests: those older than ``forget_after``, and enough
        to make room for one more under ``max_tracked``."""
        pending = self._pending
        horizon = now - self._forget_after
        while pending:
            oldest = next(iter(pending.values()))
            if oldest.at > horizon and len(pending) < self._max_tracked:
                break
            pending.popitem(last=False)
            self.forgotten += 1

    def _debug(self, progress: Progress | None) -> bool:
        return progress.debug if progress is not None else self._enabled(_DEBUG)

    def _step(self, event: AuthDecided | LimitDecided | PolicyDecided) -> None:
        if self._debug(self._pending.get(event.request_id)):
            self._put(Queued(_DEBUG, _STEPS[type(event)], time.time(), event))

    def _attempt_started(self, event: AttemptStarted) -> None:
        progress = self._pending.get(event.request_id)
        if progress is not None:
            progress.deployment = event.deployment
        if self._debug(progress):
            self._put(Queued(_DEBUG, "upstream_call", time.time(), event))

    def _attempt_ended(self, event: AttemptEnded) -> None:
        progress = self._pending.get(event.request_id)
        if progress is not None:
            step = event.next
            if step == "retry":
                progress.retries += 1
            elif step == "fallback":
                progress.fallbacks += 1
        if self._debug(progress):
            self._put(Queued(_DEBUG, "upstream_response", time.time(), event))

    def _first_token(self, event: FirstToken) -> None:
        progress = self._pending.get(event.request_id)
        if progress is not None:
            progress.ttft = event.ttft
        if self._debug(progress):
            self._put(Queued(_DEBUG, "first_token", time.time(), event))

    def _ended(self, event: RequestEnded) -> None:
        progress = self._pending.pop(event.request_id, None)
        wall = time.time()
        # DEBUG enabled implies INFO and WARNING: at most one level check here.
        if self._debug(progress):
            self._put(Queued(_DEBUG, "request_end", wall, event))
            info = True
        else:
            info = self._enabled(_INFO)
        if info:
            self._put(Queued(_INFO, "request", wall, event, progress))
        slow = self._slow
        if slow and event.duration >= slow and (info or self._enabled(_WARNING)):
            self._put(Queued(_WARNING, "slow_request", wall, event, progress, slow))
