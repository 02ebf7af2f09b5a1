"""`sluiceway serve` as an operator runs it: a real process, real signals."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

ROOT = Path(__file__).parent.parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_ready(url: str, process: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited early: {process.communicate()[1]}")
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError("server never became ready")


@pytest.fixture
def serve_process(request: pytest.FixtureRequest) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    workers = getattr(request, "param", 1)
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sluiceway.cli",
            "serve",
            "--config",
            str(ROOT / "plugins.toml"),
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process)
        yield url, process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.mark.parametrize("serve_process", [1, 2], indirect=True)
def test_serve_answers_and_stops_cleanly_on_sigterm(
    serve_process: tuple[str, subprocess.Popen[str]],
) -> None:
    url, process = serve_process
    client = openai.OpenAI(api_key="sk-anything", base_url=url + "/v1", max_retries=0)
    for _ in range(10):
        assert (
            client.chat.completions.create(
                model="mock-gpt", messages=[{"role": "user", "content": "hi"}]
            )
            .choices[0]
            .message.content
        )
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert "AUTHENTICATION IS OFF" in stderr
    assert "Traceback" not in stderr


def test_serve_refuses_a_bad_config_before_binding(tmp_path: Path) -> None:
    config = tmp_path / "plugins.toml"
    config.write_text('[gateway]\nplugins = ["mock"]\n\n[server]\nport = "eighty"\n')
    result = subprocess.run(
        [sys.executable, "-m", "sluiceway.cli", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: {config}: server.port: expected `int`, got `str` (found 'eighty')"
    )
