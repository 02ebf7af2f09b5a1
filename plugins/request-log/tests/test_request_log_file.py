"""``file = "..."``: JSON lines appended to a file by the writer thread, rotated,
reopened when moved away; one file per gateway, nothing shared between two."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from sluiceway_request_log import FileOutput, RequestLog, RequestLogOptions

import sluiceway
from sluiceway.testing import RunningServer

Line = dict[str, Any]
Start = Callable[..., RunningServer]
Logged = Callable[[], list[Line]]
LinesOf = Callable[[Path], list[Line]]
USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


def config(options: dict[str, Any]) -> dict[str, Any]:
    return {
        "gateway": {"plugins": ["mock", "request-log"]},
        "providers": [{"name": "mock", "type": "mock", "models": ["mock-gpt"]}],
        "plugin": {"request-log": options},
    }


def toml_value(value: Any) -> str:
    return json.dumps(value)  # strings, numbers and booleans are the same in TOML


def write_config(directory: Path, options: dict[str, Any]) -> Path:
    path = directory / "plugins.toml"
    table = "\n".join(f"{key} = {toml_value(value)}" for key, value in options.items())
    path.write_text(f"""
[gateway]
plugins = ["mock", "request-log"]

[[providers]]
name = "mock"
type = "mock"
models = ["mock-gpt"]

[plugin.request-log]
{table}
""", encoding="utf-8")
    return path


def ask(server: RunningServer, stream: bool = False) -> str:
    """One chat request; returns its request id."""
    with openai.OpenAI(api_key="x", base_url=server.base_url, max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="mock-gpt", messages=USER, stream=stream)
        if stream:
            list(raw.parse())
        return raw.headers["x-request-id"]


def test_lines_go_to_the_file_relative_to_the_config_and_not_to_logging(
    gateway_factory: Start, tmp_path: Path, logged: Logged, lines_of: LinesOf,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Request lines are written to the file whatever the logger's level.
    caplog.set_level(logging.WARNING, logger="sluiceway.requests")
    server = gateway_factory(write_config(tmp_path, {"file": "logs.jsonl"}))
    plain, streamed = ask(server), ask(server, stream=True)
    missing = httpx.post(server.base_url + "/chat/completions",
                         json={"model": "nope", "messages": USER})
    server.stop()

    lines = lines_of(tmp_path / "logs.jsonl")
    assert [line["request_id"] for line in lines] == [
        plain, streamed, missing.headers["x-request-id"]]
    assert [line["event"] for line in lines] == ["request"] * 3
    assert [line["status"] for line in lines] == [200, 200, 404]
    assert lines[1]["stream"] is True and lines[1]["ttft_ms"] > 0
    assert logged() == []  # nothing went through the logging system


def test_debug_lines_reach_the_file_when_the_logger_is_at_debug(
    gateway_factory: Start, tmp_path: Path, lines_of: LinesOf, caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "requests.jsonl"
    server = gateway_factory(config({"file": str(path), "slow_request": "0"}))
    quiet = ask(server)
    caplog.set_level(logging.DEBUG, logger="sluiceway.requests")
    traced = ask(server)
    server.stop()

    events = [(line["request_id"], line["event"]) for line in lines_of(path)]
    assert events == [
        (quiet, "request"),
        (traced, "request_start"), (traced, "upstream_call"), (traced, "upstream_response"),
        (traced, "request_end"), (traced, "request"),
    ]


def test_an_existing_file_is_appended_to(
    gateway_factory: Start, tmp_path: Path, lines_of: LinesOf,
) -> None:
    path = tmp_path / "requests.jsonl"
    path.write_text('{"earlier": true}\n', encoding="utf-8")
    server = gateway_factory(config({"file": str(path)}))
    ask(server)
    server.stop()

    first, second = lines_of(path)
    assert first == {"earlier": True} and second["event"] == "request"


def test_two_gateways_in_one_process_keep_their_own_lines(
    gateway_factory: Start, tmp_path: Path, lines_of: LinesOf,
) -> None:
    one = gateway_factory(config({"file": str(tmp_path / "one.jsonl")}))
    two = gateway_factory(config({"file": str(tmp_path / "two.jsonl")}))
    sent: dict[str, list[str]] = {"one": [], "two": []}
    for _ in range(3):
        sent["one"].append(ask(one, stream=True))
        sent["two"].append(ask(two))
    sinks = [server.gateway.events.sinks[0][1] for server in (one, two)]
    assert sinks[0] is not sinks[1]
    one.stop()
    two.stop()

    for name in ("one", "two"):
        assert [line["request_id"] for line in lines_of(tmp_path / f"{name}.jsonl")] == sent[name]


def test_the_file_is_rotated_at_max_file_size(
    gateway_factory: Start, tmp_path: Path, lines_of: LinesOf,
) -> None:
    path = tmp_path / "requests.jsonl"
    server = gateway_factory(config({"file": str(path), "max_file_size": "1KB",
                                     "keep_files": 2}))
    ids = [ask(server) for _ in range(6)]  # each line is ~700 bytes
    server.stop()

    rotated = [path.with_name(f"requests.jsonl.{n}") for n in (1, 2)]
    assert all(file.exists() for file in rotated)
    assert not path.with_name("requests.jsonl.3").exists()
    files = (*reversed(rotated), path)
    assert all(file.stat().st_size <= 1000 for file in files)
    # A file takes one line of ~700 bytes: the newest three are kept, oldest first.
    assert [line["request_id"] for file in files for line in lines_of(file)] == ids[-3:]


def test_a_file_moved_away_by_logrotate_is_reopened(
    tmp_path: Path, lines_of: LinesOf, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sluiceway_request_log.writer as writer

    monkeypatch.setattr(writer, "_REOPEN_CHECK_EVERY", 0.0)  # check before every write
    path = tmp_path / "requests.jsonl"
    output = FileOutput(path)
    output.open()
    output.write([(logging.INFO, b'{"n": 1}')])
    path.rename(tmp_path / "requests.jsonl.1")  # what logrotate does
    output.write([(logging.INFO, b'{"n": 2}'), (logging.INFO, b'{"n": 3}')])
    output.close()

    assert lines_of(tmp_path / "requests.jsonl.1") == [{"n": 1}]
    assert lines_of(path) == [{"n": 2}, {"n": 3}]


def test_dev_stdout_is_written_as_a_stream_and_never_rotated(
    capfd: pytest.CaptureFixture[str],
) -> None:
    output = FileOutput(Path("/dev/stdout"), max_size=10, keep=1)  # every line is too big
    output.open()
    output.write([(logging.INFO, b'{"n": 1}'), (logging.INFO, b'{"n": 2}')])
    output.close()

    assert [json.loads(line) for line in capfd.readouterr().out.splitlines()] == [
        {"n": 1}, {"n": 2}]
    assert Path("/dev/stdout").exists() and not Path("/dev/stdout.1").exists()


async def test_a_file_that_cannot_be_opened_stops_the_startup(tmp_path: Path) -> None:
    sink = RequestLog(RequestLogOptions(file=str(tmp_path / "no" / "such" / "dir.jsonl")))
    with pytest.raises(sluiceway.StartupError, match=r"plugin\.request-log\.file: cannot open"):
        async with sink.lifespan():
            pass
