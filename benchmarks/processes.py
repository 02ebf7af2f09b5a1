"""Starting and stopping the processes under test: mock upstream, gateway, bare proxy.

Each runs in its own process on a free loopback port, optionally pinned to one
CPU (``os.sched_setaffinity`` in the child before it starts), as PERFORMANCE.md
measured: the gateway alone on one core, the load generator and upstream on
the other.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Lab", "Proc", "free_port", "gateway_config", "lab", "pin_self", "start", "started"]

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def pin_self(cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.popen.pid

    def children(self) -> list[int]:
        """Live child pids (``--workers N`` forks its workers from this process)."""
        path = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        with contextlib.suppress(OSError):
            return [int(pid) for pid in path.read_text().split()]
        return []

    def pids(self) -> list[int]:
        return [self.pid, *self.children()]

    def cpu_seconds(self) -> float:
        """User plus system CPU time so far (from /proc), live worker children included."""
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
        return total / ticks

    def peak_rss_mb(self) -> float:
        """Peak RSS (VmHWM) of the process; summed over it and its workers when it has any."""
        total = 0.0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1]) / 1024
        return total or float("nan")

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                for child in self.children():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child, signal.SIGKILL)
                self.popen.kill()
                self.popen.wait(5)


def _wait_ready(proc: Proc, probe: str, timeout: float = 20.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}; see {proc.log}:\n"
                               + proc.log.read_text()[-2000:])
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(proc.url + probe, timeout=1) as response:
                if response.status < 500:
                    return
        time.sleep(0.05)
    raise RuntimeError(f"{proc.name} did not become ready; see {proc.log}")


def start(name: str, argv: list[str], port: int, *, cpu: int | set[int] | None, probe: str,
          workdir: Path, env: dict[str, str] | None = None) -> Proc:
    log = workdir / f"{name}.log"
    out = log.open("wb")
    allowed = {cpu} if isinstance(cpu, int) else cpu

    def preexec() -> None:
        if allowed is not None:
            os.sched_setaffinity(0, allowed)

    popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                             preexec_fn=preexec, env={**os.environ, **env} if env else None)
    proc = Proc(name, popen, port, log)
    try:
        _wait_ready(proc, probe)
    except BaseException:
        proc.stop()
        raise
    return proc


def gateway_config(upstream_url: str, port: int, *, backend: str = "aiohttp",
                   max_connections: int | None = None, concurrency: int | None = None,
                   workers: int = 1) -> str:
    """plugins.toml for the gateway. ``None`` leaves a key out, so the defaults apply:
    the core's ``concurrency`` (256) and the openai provider's ``max_connections``
    (as large as ``concurrency``)."""
    extra = "".join(f"{key} = {value}\n" for key, value in
                    (("concurrency", concurrency), ("max_connections", max_connections))
                    if value is not None)
    return f"""\
[gateway]
plugins = ["openai"]

[server]
host = "127.0.0.1"
port = {port}
workers = {workers}
uvloop = true
access_log = false

[[providers]]
name = "bench-upstream"
type = "openai"
base_url = "{upstream_url}/v1"
backend = "{backend}"
{extra}models = [{{ name = "gpt-bench", upstream = "mock-model" }}]
"""


def gateway_argv(config_path: Path) -> list[str]:
    """``sluiceway serve`` when the CLI is installed, else ``server.run`` directly."""
    cli = shutil.which("sluiceway", path=str(Path(PYTHON).parent))
    probe = subprocess.run([PYTHON, "-c", "import sluiceway.cli"], capture_output=True, cwd=ROOT)
    if cli and probe.returncode == 0:
        return [cli, "serve", "--config", str(config_path)]
    code = (
        "import sys; from sluiceway import create_app, load_config; "
        "from sluiceway.http.server import run; "
        f"c = load_config({str(config_path)!r}); "
        f"sys.exit(run(lambda: create_app(c), c.server))"
    )
    return [PYTHON, "-c", code]


class Lab:
    """Processes under test, in one scratch directory; every one is stopped on exit."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[Proc] = []

    def _start(self, name: str, argv: list[str], port: int, *, cpu: int | set[int] | None,
               probe: str, env: dict[str, str] | None = None) -> Proc:
        proc = start(name, argv, port, cpu=cpu, probe=probe, workdir=self.workdir, env=env)
        self.procs.append(proc)
        return proc

    def upstream(self, name: str = "upstream", *, cpu: int | None = None, chunks: int = 20,
                 delay_ms: float = 10.0, latency_ms: float = 0.0) -> Proc:
        port = free_port()
        return self._start(
            name, [PYTHON, "-m", "benchmarks.upstream", "--port", str(port), "--chunks",
                   str(chunks), "--delay-ms", str(delay_ms), "--latency-ms", str(latency_ms)],
            port, cpu=cpu, probe="/health")

    def gateway(self, name: str, upstream: Proc, *, cpu: int | set[int] | None = None,
                server: str = "hypercorn", backend: str = "aiohttp",
                max_connections: int | None = None, concurrency: int | None = None,
                workers: int = 1) -> Proc:
        """``sluiceway serve`` (hypercorn) or the same app on uvicorn."""
        port = free_port()
        config = self.workdir / f"{name}.toml"
        config.write_text(gateway_config(upstream.url, port, backend=backend,
                                         max_connections=max_connections,
                                         concurrency=concurrency, workers=workers))
        if server == "uvicorn":
            argv = [PYTHON, "-m", "benchmarks.uvicorn_gateway", "--config", str(config),
                    "--port", str(port)]
        else:
            argv = gateway_argv(config)
        return self._start(name, argv, port, cpu=cpu, probe="/healthz")

    def serve(self, name: str, config: Path, port: int, *,
              cpu: int | set[int] | None = None, env: dict[str, str] | None = None,
              argv: list[str] | None = None) -> Proc:
        """``sluiceway serve`` with a config file written by the caller (or ``argv``,
        e.g. another checkout's gateway run with ``env``)."""
        return self._start(name, argv or gateway_argv(config), port, cpu=cpu,
                           probe="/healthz", env=env)

    def bare(self, name: str, upstream: Proc, *, cpu: int | None = None,
             server: str = "hypercorn") -> Proc:
        port = free_port()
        return self._start(
            name, [PYTHON, "-m", "benchmarks.bare_proxy", "--port", str(port), "--upstream",
                   upstream.url, "--server", server],
            port, cpu=cpu, probe="/health")

    def stop(self, proc: Proc, timeout: float = 10.0) -> None:
        proc.stop(timeout)
        if proc in self.procs:
            self.procs.remove(proc)


@contextlib.contextmanager
def lab() -> Iterator[Lab]:
    workdir = Path(tempfile.mkdtemp(prefix="sluiceway-bench-"))
    the_lab = Lab(workdir)
    try:
        yield the_lab
    finally:
        for proc in reversed(the_lab.procs):
            proc.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def started(*, chunks: int = 20, delay_ms: float = 10.0, gateway_cpu: int | None = None,
            other_cpu: int | None = None, bare: bool = True,
            backend: str = "aiohttp") -> Iterator[dict[str, Proc]]:
    """Upstream, gateway (and the bare proxy), all ready; stopped on exit."""
    with lab() as the_lab:
        procs = {"upstream": the_lab.upstream(cpu=other_cpu, chunks=chunks, delay_ms=delay_ms)}
        procs["gateway"] = the_lab.gateway("gateway", procs["upstream"], cpu=gateway_cpu,
                                           backend=backend)
        if bare:
            procs["bare"] = the_lab.bare("bare", procs["upstream"], cpu=gateway_cpu)
        yield procs
