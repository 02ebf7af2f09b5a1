"""The sink on its own, fed events by hand: what it remembers and forgets, what a
full queue does, its options, and that instances share nothing."""

from __future__ import annotations

import json
import logging
import types
from pathlib import Path
from typing import Any

import pytest
import sluiceway_request_log
from sluiceway_request_log import (
    RequestLog,
    RequestLogOptions,
    Writer,
    lines,
    options,
    sink,
    writer,
)

import sluiceway
from sluiceway.events import AttemptEnded, FirstToken, RequestEnded, RequestStarted

Line = dict[str, Any]


class Collect:
    """An output that keeps what it is given."""

    def __init__(self) -> None:
        self.lines: list[tuple[int, Line]] = []
        self.opened = self.closed = 0

    def open(self) -> None:
        self.opened += 1

    def write(self, batch: list[tuple[int, bytes]]) -> None:
        self.lines.extend((level, json.loads(data)) for level, data in batch)

    def close(self) -> None:
        self.closed += 1


def started(rid: str, at: float = 100.0) -> RequestStarted:
    return RequestStarted(request_id=rid, at=at, method="POST", path="/v1/chat/completions",
                          route="chat", client="192.0.2.1")


def ended(rid: str, duration: float = 0.5, **fields: Any) -> RequestEnded:
    return RequestEnded(request_id=rid, method="POST", path="/v1/chat/completions",
                        route="chat", status=200, duration=duration, **fields)


def attempt_ended(rid: str, attempt: int, step: str) -> AttemptEnded:
    return AttemptEnded(request_id=rid, provider="p", deployment="p/m", model="m", key_id=None,
                        attempt=attempt, status=500, latency=0.01, error="server", next=step)


def in_file(tmp_path: Path, **values: Any) -> RequestLog:
    """A sink writing to a file (so its lines do not depend on the logger's level)
    whose writer is swapped for one that collects."""
    log = RequestLog(RequestLogOptions(file=str(tmp_path / "unused.jsonl"), **values))
    return log


def drained(log: RequestLog) -> list[tuple[int, Line]]:
    output = Collect()
    log.writer.output = output
    log.writer.start()
    log.writer.stop()
    assert (output.opened, output.closed) == (1, 1)
    return output.lines


def test_progress_is_remembered_until_the_request_ends(tmp_path: Path) -> None:
    log = in_file(tmp_path)
    log.handle(started("a"))
    log.handle(attempt_ended("a", 1, "retry"))
    log.handle(attempt_ended("a", 2, "fallback"))
    log.handle(attempt_ended("a", 3, "done"))
    log.handle(FirstToken(request_id="a", provider="q", model="m", ttft=0.25))
    assert log.tracked == 1
    log.handle(ended("a", attempts=3, stream=True, usage={"prompt_tokens": 3,
                                                         "cached_tokens": 2}))
    assert log.tracked == 0

    ((level, line),) = drained(log)
    assert level == logging.INFO
    assert (line["retries"], line["fallbacks"], line["attempts"]) == (1, 1, 3)
    assert (line["ttft_ms"], line["client"]) == (250.0, "192.0.2.1")
    assert (line["prompt_tokens"], line["cached_tokens"], line["completion_tokens"]) == (3, 2,
                                                                                       None)


def test_at_most_max_tracked_requests_are_remembered(tmp_path: Path) -> None:
    log = in_file(tmp_path, max_tracked=3)
    for n in range(5):
        log.handle(started(f"r{n}", at=100.0 + n))
    assert (log.tracked, log.forgotten) == (3, 2)
    log.handle(ended("r0"))  # forgotten: logged all the same, without what was lost
    log.handle(ended("r4"))

    (_, forgotten), (_, remembered) = drained(log)
    assert forgotten["request_id"] == "r0"
    assert (forgotten["client"], forgotten["retries"], forgotten["fallbacks"]) == (None,) * 3
    assert forgotten["status"] == 200
    assert (remembered["client"], remembered["retries"]) == ("192.0.2.1", 0)


def test_requests_that_never_end_are_forgotten_after_forget_after(tmp_path: Path) -> None:
    log = in_file(tmp_path, forget_after="10s")
    log.handle(started("stuck", at=100.0))
    for n in range(300):  # arrivals well after the horizon sweep it away
        log.handle(started(f"r{n}", at=200.0))
        log.handle(ended(f"r{n}"))
    assert (log.tracked, log.forgotten) == (0, 1)


def test_a_full_queue_drops_lines_and_says_how_many(tmp_path: Path) -> None:
    log = in_file(tmp_path, max_queue=2)
    for n in range(5):
        log.handle(started(f"r{n}"))
        log.handle(ended(f"r{n}"))
    assert log.writer.dropped == 3

    written = drained(log)
    assert [line["event"] for _, line in written] == ["request", "request", "log_dropped"]
    level, dropped = written[-1]
    assert level == logging.WARNING
    assert (dropped["dropped"], dropped["dropped_total"], dropped["level"]) == (3, 3, "warning")


def test_a_failing_output_loses_lines_but_never_stops_the_writer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(Collect):
        def write(self, batch: list[tuple[int, bytes]]) -> None:
            raise OSError(28, "No space left on device")

    output = Broken()
    queue_writer = Writer(output, with_client=True, max_queue=10)
    log = in_file(tmp_path)
    log.writer = queue_writer
    log._put = queue_writer.put
    with caplog.at_level(logging.ERROR, logger="sluiceway.request_log"):
        queue_writer.start()
        log.handle(started("a"))
        log.handle(ended("a"))
        queue_writer.stop()
    assert output.closed == 1 and queue_writer.written == 0
    assert "cannot write 1 line(s)" in caplog.text


def test_slow_requests_get_a_warning_line_and_zero_turns_it_off(tmp_path: Path) -> None:
    log = in_file(tmp_path, slow_request="1s")
    log.handle(started("fast"))
    log.handle(ended("fast", duration=0.999))
    log.handle(started("slow"))
    log.handle(ended("slow", duration=1.0))
    events = [(line["request_id"], line["event"]) for _, line in drained(log)]
    assert events == [("fast", "request"), ("slow", "request"), ("slow", "slow_request")]

    log = in_file(tmp_path, slow_request=0)
    log.handle(started("slow"))
    log.handle(ended("slow", duration=3600.0))
    assert [line["event"] for _, line in drained(log)] == ["request"]


def test_in_logging_mode_the_loggers_level_decides(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("sluiceway.requests.test")
    log = RequestLog(RequestLogOptions(slow_request="1s"), logger=logger)
    caplog.set_level(logging.WARNING, logger=logger.name)
    for rid, duration in (("fast", 0.1), ("slow", 2.0)):
        log.handle(started(rid))
        log.handle(ended(rid, duration=duration))
    log.writer.start()
    log.writer.stop()
    messages = [json.loads(r.getMessage()) for r in caplog.records if r.name == logger.name]
    assert [(m["request_id"], m["event"]) for m in messages] == [("slow", "slow_request")]


def test_events_it_does_not_know_are_ignored(tmp_path: Path) -> None:
    from dataclasses import dataclass

    @dataclass(kw_only=True)
    class Novel(sluiceway.events.Event):
        what: str = "new"

    log = in_file(tmp_path)
    log.handle(Novel(request_id="x"))
    assert log.tracked == 0 and drained(log) == []


def test_a_relative_file_is_relative_to_the_config_directory(tmp_path: Path) -> None:
    log = RequestLog(RequestLogOptions(file="logs/requests.jsonl"), base_dir=tmp_path)
    assert log.path == tmp_path / "logs" / "requests.jsonl"


@pytest.mark.parametrize(("table", "message"), [
    ({"slow_reqest": "1s"}, "plugin.request-log.slow_reqest: unknown key"),
    ({"slow_request": "soon"}, "plugin.request-log.slow_request: expected a duration"),
    ({"forget_after": "0s"}, "forget_after must be longer than 0s"),
    ({"file": " "}, "file must be a path"),
    ({"max_file_size": "huge"}, "plugin.request-log.max_file_size: expected a size"),
    ({"keep_files": 0}, "plugin.request-log.keep_files: expected `int` >= 1"),
    ({"log_client_address": "no"}, "plugin.request-log.log_client_address: expected `bool`"),
])
def test_bad_options_stop_the_build_naming_the_key(table: dict[str, Any], message: str) -> None:
    config = {
        "gateway": {"plugins": ["mock", "request-log"]},
        "providers": [{"name": "mock", "type": "mock"}],
        "plugin": {"request-log": table},
    }
    with pytest.raises(sluiceway.ConfigError) as error:
        sluiceway.create_app(config)
    assert message in str(error.value)


def test_two_sinks_share_nothing(tmp_path: Path) -> None:
    one, two = in_file(tmp_path), in_file(tmp_path)
    one.handle(started("a"))
    assert (one.tracked, two.tracked) == (1, 0)
    assert one.writer.queue is not two.writer.queue


def test_no_module_holds_mutable_state() -> None:
    """State lives on the sink, one per gateway; modules hold only constants."""
    mutable = (dict, list, set, bytearray, logging.Logger, RequestLog, Writer)
    for module in (sluiceway_request_log, lines, options, sink, writer):
        for name, value in vars(module).items():
            if name.startswith("__") or isinstance(value, type | types.ModuleType):
                continue
            assert not isinstance(value, mutable), f"{module.__name__}.{name}"


@pytest.mark.parametrize("wall", [0.0, 1_700_000_000.0, 1_700_000_000.9996, 1_767_225_599.5])
def test_timestamps_are_iso_8601_utc_to_the_millisecond(wall: float) -> None:
    stamps = sluiceway_request_log.Timestamps()
    assert stamps(wall) == sluiceway_request_log.timestamp(wall)
    assert stamps(wall + 0.25) == sluiceway_request_log.timestamp(wall + 0.25)
    assert stamps(wall).endswith("Z") and len(stamps(wall)) == len("2025-01-01T00:00:00.000Z")
