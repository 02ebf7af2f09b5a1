"""Fixtures for the request-log tests: a gateway with the mock provider and the
request log, and the lines it wrote (through logging, or to a file)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sluiceway.testing import RunningServer

LOGGER = "sluiceway.requests"
Line = dict[str, Any]
StartGateway = Callable[..., RunningServer]


def gateway_config(
    options: dict[str, Any] | None = None, mock: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The mock provider (mock-gpt, mock-reasoner), no auth, then the request log."""
    return {
        "gateway": {"plugins": ["mock", "request-log"]},
        "providers": [{"name": "mock", "type": "mock", "models": ["mock-gpt", "mock-reasoner"],
                       "reasoning_models": ["mock-reasoner"], "allow_request_faults": True,
                       **(mock or {})}],
        "plugin": {"request-log": options or {}},
    }


@pytest.fixture
def start(gateway_factory: StartGateway) -> StartGateway:
    """``start(options={...}, mock={...})``: a gateway logging its requests."""

    def run(options: dict[str, Any] | None = None, mock: dict[str, Any] | None = None,
            ) -> RunningServer:
        return gateway_factory(gateway_config(options, mock))

    return run


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> Callable[[], list[Line]]:
    """Captures ``sluiceway.requests`` at INFO (a test may lower it with
    ``caplog.set_level``); ``logged()`` returns every line written so far, each
    parsed as JSON: the test fails if one does not parse, or if its ``level``
    is not its record's. Read it after the server has stopped: the writer
    thread has then written everything."""
    caplog.set_level(logging.INFO, logger=LOGGER)

    def lines() -> list[Line]:
        parsed = []
        for record in caplog.records:
            if record.name == LOGGER:
                line = json.loads(record.getMessage())
                assert line["level"] == record.levelname.lower()
                parsed.append(line)
        return parsed

    return lines


def read_lines(path: Path) -> list[Line]:
    """Every line of a JSON-lines file, parsed (fails on one that does not parse)."""
    text = path.read_text(encoding="utf-8")
    assert text == "" or text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture
def lines_of() -> Callable[[Path], list[Line]]:
    return read_lines
