"""Serving the gateway standalone on hypercorn, with a graceful drain.

On SIGHUP the configuration file is reloaded (:mod:`sluiceway.http.reload`).
On SIGTERM or SIGINT the gateway stops reporting ready, hypercorn stops
accepting connections, and in-flight requests (streams included) get
``graceful_timeout`` to finish. Whatever is still open then is ended properly:
a stream gets an error frame and its end, a plain request a 503, so that no
client mistakes a cut for a complete answer. hypercorn's own grace period is
set a little longer so those final frames are written before it cancels.

``workers > 1`` forks that many processes sharing one listening socket; each
runs its own gateway. Limits that must hold across them live in shared storage
(Redis), never in process memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from ..config.settings import ServerSettings
from .app import Gateway

__all__ = ["bind_socket", "run", "serve_gateway"]

log = logging.getLogger("sluiceway.server")

# Time between ending the last streams and hypercorn cancelling what is left.
_FINAL_FRAME_MARGIN = 2.0


def bind_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A listening-ready TCP socket (``port=0`` picks a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port and hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def _hypercorn_config(settings: ServerSettings, sock: socket.socket) -> Any:
    from hypercorn.config import Config as HypercornConfig

    config = HypercornConfig()
    # hypercorn wraps the descriptor in a socket of its own; hand it over so the
    # descriptor has exactly one owner (and is closed exactly once).
    config.bind = [f"fd://{sock.detach()}"]
    config.keep_alive_timeout = settings.keep_alive_timeout
    config.keep_alive_max_requests = settings.keep_alive_max_requests
    config.graceful_timeout = settings.graceful_timeout + _FINAL_FRAME_MARGIN
    config.startup_timeout = settings.startup_timeout
    config.h11_max_incomplete_size = 16 * 1024
    config.include_server_header = False
    config.accesslog = logging.getLogger("sluiceway.access") if settings.access_log else None
    config.errorlog = logging.getLogger("hypercorn.error")
    return config


async def serve_gateway(
    gateway: Gateway,
    settings: ServerSettings,
    sock: socket.socket,
    *,
    stop: asyncio.Event | None = None,
    handle_signals: bool = True,
) -> None:
    """Serve until ``stop`` is set (or a signal arrives), then drain and return."""
    from hypercorn.asyncio import serve

    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    reloads: set[asyncio.Task[None]] = set()

    def reload_on_signal() -> None:
        task = loop.create_task(_reload(gateway))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    if handle_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, reload_on_signal)
    stop_accepting = asyncio.Event()

    async def drain() -> None:
        await stop.wait()
        # After a reload: the generation serving, and those still finishing requests.
        generations = gateway.generations()
        log.info(
            "shutting down: draining %d request(s) for up to %.1fs",
            sum(len(g.inflight) for g in generations),
            settings.graceful_timeout,
        )
        for generation in generations:
            generation.begin_drain()
        stop_accepting.set()
        deadline = loop.time() + settings.graceful_timeout
        # Polled rather than signalled: the in-flight set is touched on every request,
        # and a 50 ms poll during shutdown costs less than an event on that hot path.
        while any(g.inflight for g in generations) and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        if ended := sum(g.interrupt_inflight("shutdown") for g in generations):
            log.warning("grace period over: ended %d open request(s) with an error frame", ended)

    drainer = asyncio.create_task(drain())
    try:
        await serve(
            gateway,  # type: ignore[arg-type]  # hypercorn's TypedDict scopes vs plain dicts
            _hypercorn_config(settings, sock),
            shutdown_trigger=stop_accepting.wait,
        )
    finally:
        drainer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await drainer
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        for task in reloads:
            task.cancel()


async def _reload(gateway: Gateway) -> None:
    """SIGHUP: reload the configuration file; a bad one is logged and changes nothing."""
    log.info("SIGHUP: reloading %s", gateway.config.source)
    try:
        await gateway.reload()
    except Exception as exc:
        log.error("configuration not reloaded, the current one keeps serving: %s", exc)


def _run_loop(main: Callable[[], Coroutine[Any, Any, None]], use_uvloop: bool) -> None:
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            log.info("uvloop is not installed; using the default asyncio loop")
        else:
            uvloop.run(main())
            return
    asyncio.run(main())


def _serve_forever(gateway: Gateway, settings: ServerSettings, sock: socket.socket) -> int:
    """Serve in this process until stopped; a failed startup is reported, not raised."""
    from hypercorn.utils import LifespanFailureError, LifespanTimeoutError

    async def main() -> None:
        await serve_gateway(gateway, settings, sock)

    # Only when serving standalone: mounted in a host app, its process is not ours to tune.
    gc.set_threshold(*settings.gc_threshold)
    try:
        _run_loop(main, settings.uvloop)
    except LifespanFailureError:
        return 2  # the gateway has logged why
    except LifespanTimeoutError:
        log.error(
            "startup took longer than startup_timeout (%gs); raise [server] startup_timeout "
            "if providers need longer to start",
            settings.startup_timeout,
        )
        return 2
    return 0


def run(build: Callable[[], Gateway], settings: ServerSettings) -> int:
    """Serve in this process (``workers == 1``) or in forked workers; returns an exit code.

    ``build`` is called once per serving process, after any fork, so that nothing a
    plugin opens while building is shared between workers.
    """
    try:
        sock = bind_socket(settings.host, settings.port, reuse_port=settings.workers > 1)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", settings.host, settings.port, exc.strerror)
        return 2
    host, port = sock.getsockname()[:2]
    url = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
    if settings.workers <= 1:
        log.info("sluiceway listening on %s (pid %d)", url, os.getpid())
        return _serve_forever(build(), settings, sock)
    return _supervise(build, settings, sock, url)


def _supervise(
    build: Callable[[], Gateway], settings: ServerSettings, sock: socket.socket, url: str
) -> int:
    children: list[int] = []
    for _ in range(settings.workers):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 1
            try:
                code = _serve_forever(build(), settings, sock)
            except BaseException:
                log.exception("worker %d failed", os.getpid())
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        children.append(pid)
    log.info(
        "sluiceway listening on %s with %d workers (pids %s)",
        url,
        len(children),
        ", ".join(map(str, children)),
    )

    def forward(signum: int, _frame: object) -> None:
        # SIGHUP reloads each worker; SIGTERM and SIGINT stop them all.
        sent = signal.SIGHUP if signum == signal.SIGHUP else signal.SIGTERM
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, sent)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, forward)
    worst = 0
    for child in children:
        _, status = os.waitpid(child, 0)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            log.error(
                "worker %d exited with %s", child, f"signal {-code}" if code < 0 else f"code {code}"
            )
            worst = worst or (1 if code < 0 else code)
    sock.close()
    return worst
