"""The JSON log formatter: one object per line, tracebacks included, plugins'
ready-made JSON lines written as they are."""

from __future__ import annotations

import logging

import msgspec

from sluiceway.logformat import JSON_LINE, JsonFormatter


def record(message: str, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("sluiceway.test", logging.WARNING, __file__, 1, message, (), None)
    for name, value in extra.items():
        setattr(made, name, value)
    return made


def test_log_lines_are_json_objects() -> None:
    formatter = JsonFormatter()
    line = msgspec.json.decode(formatter.format(record('a "quoted"\nmessage')))
    assert (line["level"], line["logger"], line["message"]) == (
        "WARNING", "sluiceway.test", 'a "quoted"\nmessage')
    assert line["ts"].endswith("+00:00")
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        failed = record("it failed")
        failed.exc_info = sys.exc_info()
    with_traceback = msgspec.json.decode(formatter.format(failed))
    assert "ValueError: boom" in with_traceback["exception"]
    ready = '{"event": "request", "status": 200}'
    assert formatter.format(record(ready, **{JSON_LINE: ready})) == ready


def test_a_message_msgspec_cannot_encode_is_still_a_line() -> None:
    odd = "bytes from a socket: \udcff"
    line = msgspec.json.decode(JsonFormatter().format(record(odd)))
    assert line["message"].startswith("bytes from a socket")
