"""Log lines as JSON objects (``[server] log_format = "json"``), one per line,
for log pipelines that parse rather than grep."""

from __future__ import annotations

import datetime
import logging
from typing import Any

import msgspec

__all__ = ["JSON_LINE", "JsonFormatter"]

# A record carrying a ready JSON object under this attribute (a plugin's
# structured line, such as the request log's) is written as it is.
JSON_LINE = "sluiceway_json"

_encode = msgspec.json.Encoder().encode


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message"}``, plus ``"exception"`` (the
    formatted traceback) when the record has one."""

    def format(self, record: logging.LogRecord) -> str:
        ready = getattr(record, JSON_LINE, None)
        if isinstance(ready, str):
            return ready
        line: dict[str, Any] = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        try:
            return _encode(line).decode()
        except UnicodeEncodeError:
            # A lone surrogate (bytes decoded with surrogateescape) is not Unicode:
            # written as its escape in plain text, so the line is kept and parses.
            clean = {key: value.encode("utf-8", "backslashreplace").decode("utf-8")
                     for key, value in line.items()}
            return _encode(clean).decode()
