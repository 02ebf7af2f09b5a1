"""Redis servers for tests, as child processes on free loopback ports: one server,
a master watched by a sentinel, and a three-master cluster. Debian's
``redis-server`` (installed by the bootstrap) plays every part: a sentinel is
``redis-server --sentinel``, and the cluster's slots are assigned with
``CLUSTER ADDSLOTSRANGE`` over a socket, so no ``redis-cli`` is needed."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

__all__ = ["RedisServer", "redis_cluster", "redis_sentinel", "redis_server", "start_redis"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _command(port: int, *args: str, timeout: float = 2.0) -> bytes:
    """One Redis command over RESP; the raw reply (enough for +OK, :n and bulk text)."""
    request = f"*{len(args)}\r\n".encode() + b"".join(
        f"${len(arg.encode())}\r\n{arg}\r\n".encode() for arg in args
    )
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        reply = sock.recv(65536)
    return reply


def _answers(port: int) -> bool:
    try:
        return _command(port, "PING", timeout=0.2).startswith(b"+PONG")
    except OSError:
        return False


def _executable() -> str:
    executable = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.path.exists(executable):
        raise RuntimeError(
            "redis-server is not installed: run `make setup` (scripts/apt-packages.txt)"
        )
    return executable


@dataclass
class RedisServer:
    """A ``redis-server`` child process on ``127.0.0.1:<port>``; ``url`` is how a
    client reaches it (for a cluster or a sentinel, all of it)."""

    process: subprocess.Popen[bytes]
    port: int
    url_override: str | None = None
    others: list[RedisServer] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.url_override or f"redis://127.0.0.1:{self.port}/0"

    def kill(self) -> None:
        """Take the server (and any it stands for) away at once, as a crash would."""
        for server in [self, *self.others]:
            if server.process.poll() is None:
                server.process.kill()
            server.process.wait(10)


def start_redis(workdir: Path, *extra: str, sentinel_config: Path | None = None) -> RedisServer:
    """Start one redis-server (or sentinel) and wait until it answers PING."""
    port = _free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    argv: Sequence[str]
    if sentinel_config is not None:
        text = sentinel_config.read_text().replace("{port}", str(port))
        sentinel_config.write_text(text)
        argv = [_executable(), str(sentinel_config), "--sentinel"]
    else:
        argv = [_executable(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(workdir), *extra]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               cwd=workdir)
    server = RedisServer(process, port)
    for _ in range(400):
        if _answers(port):
            return server
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {process.returncode}")
        time.sleep(0.025)
    server.kill()
    raise RuntimeError("redis-server did not answer PING within 10 s")


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server on a free loopback port, killed at teardown."""
    server = start_redis(tmp_path / "redis")
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def redis_sentinel(tmp_path: Path) -> Iterator[RedisServer]:
    """A master and one sentinel watching it as ``mymaster``; ``url`` is
    ``redis+sentinel://127.0.0.1:<sentinel port>/mymaster``."""
    master = start_redis(tmp_path / "master")
    config = tmp_path / "sentinel" / "sentinel.conf"
    config.parent.mkdir(parents=True)
    config.write_text(
        "port {port}\nbind 127.0.0.1\n"
        f"dir {config.parent}\n"
        f"sentinel monitor mymaster 127.0.0.1 {master.port} 1\n"
        "sentinel down-after-milliseconds mymaster 5000\n"
    )
    try:
        sentinel = start_redis(config.parent, sentinel_config=config)
    except BaseException:
        master.kill()
        raise
    sentinel.url_override = f"redis+sentinel://127.0.0.1:{sentinel.port}/mymaster"
    sentinel.others.append(master)
    try:
        yield sentinel
    finally:
        sentinel.kill()


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[RedisServer]:
    """Three masters sharing the 16384 slots; ``url`` is
    ``redis+cluster://127.0.0.1:<p1>,127.0.0.1:<p2>,127.0.0.1:<p3>``."""
    nodes: list[RedisServer] = []
    bus_ports: list[int] = []
    try:
        for n in range(3):
            # The bus port defaults to port + 10000, past 65535 for many free ports.
            bus_ports.append(_free_port())
            nodes.append(start_redis(tmp_path / f"node{n}", "--cluster-enabled", "yes",
                                     "--cluster-config-file", "nodes.conf",
                                     "--cluster-port", str(bus_ports[-1])))
        ranges = [(0, 5460), (5461, 10922), (10923, 16383)]
        for node, (first, last) in zip(nodes, ranges, strict=True):
            _command(node.port, "CLUSTER", "ADDSLOTSRANGE", str(first), str(last))
        for node, bus_port in zip(nodes[1:], bus_ports[1:], strict=True):
            _command(nodes[0].port, "CLUSTER", "MEET", "127.0.0.1", str(node.port),
                     str(bus_port))
        # Gossip takes longer on a loaded machine: a generous bound, not a speed.
        for _ in range(1200):
            if all(b"cluster_state:ok" in _command(node.port, "CLUSTER", "INFO")
                   for node in nodes):
                break
            time.sleep(0.025)
        else:
            raise RuntimeError("the Redis cluster did not reach cluster_state:ok in 30 s")
        head, *rest = nodes
        head.url_override = "redis+cluster://" + ",".join(
            f"127.0.0.1:{node.port}" for node in nodes)
        head.others.extend(rest)
        yield head
    finally:
        for node in nodes:
            node.kill()
