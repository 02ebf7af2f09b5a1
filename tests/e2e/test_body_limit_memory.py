"""A 10 MB body is refused with 413 without the gateway's memory growing by 10 MB:
the limit is enforced while the body streams in, and a declared Content-Length
over the limit is refused before any of it is read."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from sluiceway.testing import GatewayProcess

Processes = Callable[..., list[GatewayProcess]]
TEN_MB = 10 * 1024 * 1024


def peak_rss_kb(pid: int) -> int:
    """The process's high-water mark of resident memory (VmHWM), in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc status")


def test_ten_megabytes_are_refused_without_being_held(
    tmp_path: Path, gateway_processes: Processes
) -> None:
    config = tmp_path / "plugins.toml"
    config.write_text(
        '[gateway]\nplugins = ["mock"]\nmax_body_size = "1MB"\n\n'
        '[[providers]]\nname = "mock"\ntype = "mock"\nmodels = ["mock-gpt"]\n',
        encoding="utf-8",
    )
    (gateway,) = gateway_processes(config, 1)
    url = gateway.base_url + "/chat/completions"
    body = b'{"model": "mock-gpt", "messages": [], "pad": "' + b"x" * TEN_MB + b'"}'
    with httpx.Client(timeout=30) as client:
        assert client.post(url, json={"model": "mock-gpt", "messages": [
            {"role": "user", "content": "warm up"}]}).status_code == 200
        before = peak_rss_kb(gateway.process.pid)

        def chunks() -> Iterator[bytes]:  # no Content-Length: refused while streaming in
            for start in range(0, len(body), 65536):
                yield body[start:start + 65536]

        for _ in range(3):
            declared = client.post(url, content=body)
            assert declared.status_code == 413
            assert declared.json()["error"]["code"] == "request_too_large"
            streamed = client.post(url, content=chunks())
            assert streamed.status_code == 413
        after = peak_rss_kb(gateway.process.pid)
        # Still serving afterwards.
        assert client.post(url, json={"model": "mock-gpt", "messages": [
            {"role": "user", "content": "hi"}]}).status_code == 200
    # Six 10 MB bodies went by; the peak grew by far less than one of them.
    assert after - before < 5 * 1024, f"peak RSS grew by {after - before} kB"
