"""pytest fixtures for testing sluiceway and sluiceway plugins over real sockets.

Installed as a pytest plugin (entry point ``pytest11``), so a plugin's own tests
can use them without a conftest:

* ``gateway_factory(config, plugins=())`` builds a gateway from a dict, a path
  or a :class:`~sluiceway.Config` and serves it on hypercorn on a free loopback
  port in a background thread; returns a :class:`RunningServer`. Everything it
  started is stopped at the end of the test.
* ``serve_asgi(app)`` does the same for any ASGI app (a fake upstream, a host
  app that mounts the gateway).
* ``redis_server`` starts a private ``redis-server`` (Debian's, installed by
  the bootstrap) on a free loopback port, with no persistence; ``.url`` is its
  ``redis://`` URL and ``.kill()`` takes it away mid-test. ``redis_sentinel``
  (a master watched by one sentinel, ``redis+sentinel://`` URL) and
  ``redis_cluster`` (three masters, ``redis+cluster://`` URL) likewise.
* ``gateway_processes(config, count)`` starts ``count`` separate
  ``sluiceway serve`` processes on free ports with one config file, for
  cross-process behaviour (limits, bans shared through Redis).
* ``fake_openai(**kwargs)`` starts a :class:`~sluiceway.testing.fakes.FakeOpenAI`: a
  real OpenAI-compatible upstream on loopback with scripted faults (statuses,
  delays, stalls, resets and clean closes mid-stream, garbage, error events).

Streaming and disconnects only behave truly over sockets, which is why these
start real servers instead of using an in-process transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ..config.settings import Config, Duration, ServerSettings
from ..http.app import Gateway, create_app
from .fakes import FakeOpenAI
from .redis import RedisServer, redis_cluster, redis_sentinel, redis_server
from .waiting import wait_until, wait_until_async

__all__ = [
    "GatewayProcess",
    "RedisServer",
    "RunningServer",
    "fake_openai",
    "gateway_factory",
    "gateway_processes",
    "read_body",
    "redis_cluster",
    "redis_sentinel",
    "redis_server",
    "serve_asgi",
    "start_server",
    "wait_until",
    "wait_until_async",
]


async def read_body(receive: Callable[[], Any]) -> bytes:
    """The whole body of an ASGI ``http`` request: for the fake upstreams a test
    serves with :func:`serve_asgi`."""
    body = b""
    while True:
        message = await receive()
        body += bytes(message.get("body", b""))
        if not message.get("more_body"):
            return body


@dataclass
class RunningServer:
    """A server running in a background thread on ``127.0.0.1:<port>``."""

    app: Any
    port: int
    thread: threading.Thread
    loop: asyncio.AbstractEventLoop
    stop_event: asyncio.Event
    errors: list[BaseException] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL (``.../v1``)."""
        return self.url + "/v1"

    @property
    def gateway(self) -> Gateway:
        assert isinstance(self.app, Gateway)
        return self.app

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the server's event loop and return its result."""

        async def run() -> Any:
            result = fn()
            if asyncio.iscoroutine(result):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout=30)

    def stop(self, timeout: float = 30.0) -> None:
        """Trigger a graceful shutdown and wait for the thread to end."""
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.stop_event.set)
            self.thread.join(timeout)
        if self.thread.is_alive():
            raise RuntimeError(f"server on port {self.port} did not stop within {timeout}s")


def _free_socket() -> socket.socket:
    from ..http.server import bind_socket

    return bind_socket("127.0.0.1", 0)


def start_server(app: Any, *, settings: ServerSettings | None = None) -> RunningServer:
    """Serve ``app`` on a free port in a thread; return once it accepts connections."""
    from hypercorn.asyncio import serve
    from hypercorn.config import Config as HypercornConfig

    from ..http.server import _hypercorn_config, serve_gateway

    sock = _free_socket()
    port = sock.getsockname()[1]
    ready = threading.Event()
    holder: dict[str, Any] = {}
    settings = settings or ServerSettings(graceful_timeout=Duration(5))

    async def main() -> None:
        stop = asyncio.Event()
        holder["loop"], holder["stop"] = asyncio.get_running_loop(), stop
        ready.set()
        if isinstance(app, Gateway):
            await serve_gateway(app, settings, sock, stop=stop, handle_signals=False)
        else:
            config: HypercornConfig = _hypercorn_config(settings, sock)
            await serve(app, config, shutdown_trigger=stop.wait)

    def target() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # surfaced by the fixture
            holder.setdefault("errors", []).append(exc)
            ready.set()

    thread = threading.Thread(target=target, name=f"sluiceway-test-{port}", daemon=True)
    thread.start()
    ready.wait(10)
    if "loop" not in holder:
        raise RuntimeError(f"server failed to start: {holder.get('errors')}")
    server = RunningServer(
        app, port, thread, holder["loop"], holder["stop"], holder.setdefault("errors", [])
    )
    _wait_until_accepting(port)
    return server


def _wait_until_accepting(port: int, attempts: int = 200) -> None:
    for _ in range(attempts):
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.1):
            return
        threading.Event().wait(0.025)
    raise RuntimeError(f"nothing accepted connections on port {port}")


@pytest.fixture
def serve_asgi() -> Iterator[Callable[..., RunningServer]]:
    """Serve any ASGI app on a free loopback port for the length of a test."""
    servers: list[RunningServer] = []

    def start(app: Any, **kwargs: Any) -> RunningServer:
        server = start_server(app, **kwargs)
        servers.append(server)
        return server

    yield start
    for server in reversed(servers):
        server.stop()
    crashed = [error for server in servers for error in server.errors]
    if crashed:
        raise RuntimeError(f"a test server crashed: {crashed[0]!r}") from crashed[0]


@pytest.fixture
def gateway_factory(
    serve_asgi: Callable[..., RunningServer],
) -> Callable[..., RunningServer]:
    """Build a gateway and serve it on a free loopback port for the length of a test."""

    def build(
        config: Config | str | os.PathLike[str] | dict[str, Any],
        *,
        plugins: Sequence[tuple[str, object]] = (),
        settings: ServerSettings | None = None,
    ) -> RunningServer:
        return serve_asgi(create_app(config, plugins=plugins), settings=settings)

    return build


@pytest.fixture
def fake_openai() -> Iterator[Callable[..., FakeOpenAI]]:
    """Start :class:`~sluiceway.testing.fakes.FakeOpenAI` upstreams for the length of a test:
    ``fake = fake_openai(chunks=3)``; point a provider at ``fake.url``. Each is stopped
    at teardown, and a crash inside one fails the test."""
    fakes: list[FakeOpenAI] = []

    def start(**kwargs: Any) -> FakeOpenAI:
        fake = FakeOpenAI(**kwargs).start()
        fakes.append(fake)
        return fake

    yield start
    for fake in reversed(fakes):
        fake.stop()
    crashed = [error for fake in fakes for error in fake.errors]
    if crashed:
        raise RuntimeError(f"a fake upstream crashed: {crashed[0]!r}") from crashed[0]


def _free_port() -> int:
    with contextlib.closing(_free_socket()) as sock:
        port: int = sock.getsockname()[1]
        return port


@dataclass
class GatewayProcess:
    """A ``sluiceway serve`` child process; its output goes to ``log``."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM (a graceful drain), then the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise


@pytest.fixture
def gateway_processes(tmp_path: Path) -> Iterator[Callable[..., list[GatewayProcess]]]:
    """Start separate gateway processes with one config: ``gateway_processes(path, 2)``;
    ``args`` are added to each ``sluiceway serve`` command line (``["--debug"]``).

    Returns once each accepts connections; all are stopped at teardown."""
    started: list[GatewayProcess] = []

    def start(
        config: str | os.PathLike[str], count: int = 1, *, args: Sequence[str] = ()
    ) -> list[GatewayProcess]:
        group: list[GatewayProcess] = []
        for _ in range(count):
            port = _free_port()
            log = tmp_path / f"gateway-{len(started) + len(group)}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    [sys.executable, "-m", "sluiceway.cli", "serve", "--config", str(config),
                     "--host", "127.0.0.1", "--port", str(port), *args],
                    stdout=out, stderr=subprocess.STDOUT,
                )
            group.append(GatewayProcess(process, port, log))
        started.extend(group)
        for gateway in group:
            for _ in range(800):
                if gateway.process.poll() is not None:
                    raise RuntimeError(f"gateway exited: {gateway.log.read_text()}")
                with socket.socket() as sock:
                    if sock.connect_ex(("127.0.0.1", gateway.port)) == 0:
                        break
                time.sleep(0.025)
            else:
                raise RuntimeError(f"gateway did not start: {gateway.log.read_text()}")
        return group

    yield start
    for gateway in started:
        if gateway.process.poll() is None:
            gateway.process.send_signal(signal.SIGTERM)
    for gateway in started:
        with contextlib.suppress(subprocess.TimeoutExpired):
            gateway.stop()
