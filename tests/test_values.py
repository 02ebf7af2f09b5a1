"""Values shared by the core and plugins: OpenAI's style for reset headers."""

from __future__ import annotations

import math

import pytest

from sluiceway.config.values import format_duration


@pytest.mark.parametrize(("value", "expected"), [
    (0, "0s"), (-1, "0s"), (math.inf, "0s"), (0.02, "20ms"), (0.0001, "1ms"), (1, "1s"),
    (1.5, "1.5s"), (59.25, "59.25s"), (60, "1m0s"), (360, "6m0s"), (90.5, "1m30.5s"),
    (3600, "1h0m0s"), (83100, "23h5m0s"),
])
def test_reset_headers_are_written_in_openai_style(value: float, expected: str) -> None:
    rendered = format_duration(value)
    assert rendered == expected
