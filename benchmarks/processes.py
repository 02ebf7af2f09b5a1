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

__all__ = ["Proc", "free_port", "gateway_config", "pin_self", "start", "started"]

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

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the process so far (from /proc)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
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


def start(name: str, argv: list[str], port: int, *, cpu: int | None, probe: str,
          workdir: Path) -> Proc:
    log = workdir / f"{name}.log"
    out = log.open("wb")

    def preexec() -> None:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})

    popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                             preexec_fn=preexec)
    proc = Proc(name, popen, port, log)
    try:
        _wait_ready(proc, probe)
    except BaseException:
        proc.stop()
        raise
    return proc


def gateway_config(upstream_url: str, port: int, *, backend: str = "aiohttp") -> str:
    return f"""\
[gateway]
plugins = ["openai"]

[server]
host = "127.0.0.1"
port = {port}
uvloop = true
access_log = false

[[providers]]
name = "bench-upstream"
type = "openai"
base_url = "{upstream_url}/v1"
backend = "{backend}"
max_connections = 100
models = [{{ name = "gpt-bench", upstream = "mock-model" }}]
"""


def gateway_argv(config_path: Path) -> list[str]:
    """``sluiceway serve`` when the CLI is installed, else ``server.run`` directly."""
    cli = shutil.which("sluiceway", path=str(Path(PYTHON).parent))
    probe = subprocess.run([PYTHON, "-c", "import sluiceway.cli"], capture_output=True, cwd=ROOT)
    if cli and probe.returncode == 0:
        return [cli, "serve", "--config", str(config_path)]
    code = (
        "import sys; from sluiceway import create_app, load_config; "
        "from sluiceway.server import run; "
        f"c = load_config({str(config_path)!r}); "
        f"sys.exit(run(lambda: create_app(c), c.server))"
    )
    return [PYTHON, "-c", code]


@contextlib.contextmanager
def started(*, chunks: int = 20, delay_ms: float = 10.0, gateway_cpu: int | None = None,
            other_cpu: int | None = None, bare: bool = True,
            backend: str = "aiohttp") -> Iterator[dict[str, Proc]]:
    """Upstream, gateway (and the bare proxy), all ready; stopped on exit."""
    workdir = Path(tempfile.mkdtemp(prefix="sluiceway-bench-"))
    procs: dict[str, Proc] = {}
    try:
        port = free_port()
        procs["upstream"] = start(
            "upstream",
            [PYTHON, "-m", "benchmarks.upstream", "--port", str(port), "--chunks", str(chunks),
             "--delay-ms", str(delay_ms)],
            port, cpu=other_cpu, probe="/health", workdir=workdir)
        upstream = procs["upstream"].url
        port = free_port()
        config = workdir / "plugins.toml"
        config.write_text(gateway_config(upstream, port, backend=backend))
        procs["gateway"] = start("gateway", gateway_argv(config), port, cpu=gateway_cpu,
                                 probe="/healthz", workdir=workdir)
        if bare:
            port = free_port()
            procs["bare"] = start(
                "bare", [PYTHON, "-m", "benchmarks.bare_proxy", "--port", str(port),
                         "--upstream", upstream],
                port, cpu=gateway_cpu, probe="/health", workdir=workdir)
        yield procs
    finally:
        for proc in reversed(procs.values()):
            proc.stop()
        shutil.rmtree(workdir, ignore_errors=True)
