"""Waiting in tests for what happens in the background (a reload, a lease given
back, a file re-read): poll a condition, and assert the condition, never a time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

__all__ = ["wait_until", "wait_until_async"]


def wait_until(condition: Callable[[], object], within: float = 10.0) -> bool:
    """Poll ``condition`` until it holds; ``False`` if it still does not after
    ``within`` seconds. For what happens in the background (a reload, a lease
    released, a file re-read): assert its result, the condition, never a time."""
    give_up = time.monotonic() + within
    while not condition():
        if time.monotonic() >= give_up:
            return False
        time.sleep(0.02)
    return True


async def wait_until_async(condition: Callable[[], Any], within: float = 10.0) -> bool:
    """:func:`wait_until` for async tests: ``condition`` may be a coroutine function."""
    give_up = time.monotonic() + within
    while True:
        held = condition()
        if asyncio.iscoroutine(held):
            held = await held
        if held:
            return True
        if time.monotonic() >= give_up:
            return False
        await asyncio.sleep(0.02)
