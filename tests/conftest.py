"""Shared test plugins: a provider whose behaviour each test controls and observes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

import sluiceway
from sluiceway.wire.openai import chunk_object, completion_object, usage_object


@dataclass
class Script:
    """What the controlled provider does, and what it saw."""

    chunks: int = 3
    chunk_delay: float = 0.0
    delay_before_first: float = 0.0
    fail_with: BaseException | None = None
    fail_after: int | None = None
    started: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: list[str] = field(default_factory=list)
    completed: list[str] = field(default_factory=list)
    loop: asyncio.AbstractEventLoop | None = None


class ControlledProvider:
    def __init__(self, script: Script) -> None:
        self.script = script

    async def chat(self, request: sluiceway.ChatRequest) -> dict[str, Any]:
        self.script.loop = asyncio.get_running_loop()
        self.script.started.set()
        try:
            await asyncio.sleep(self.script.delay_before_first)
            if self.script.fail_with is not None:
                raise self.script.fail_with
        except asyncio.CancelledError:
            self.script.cancelled.append(request.request_id)
            raise
        self.script.completed.append(request.request_id)
        return completion_object(
            id="chatcmpl-c",
            model=request.upstream_model,
            choices=[
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "done"},
                    "finish_reason": "stop",
                }
            ],
            usage=usage_object(1, 1),
        )

    async def stream(self, request: sluiceway.ChatRequest) -> AsyncIterator[dict[str, Any]]:
        self.script.loop = asyncio.get_running_loop()
        try:
            await asyncio.sleep(self.script.delay_before_first)
            for index in range(self.script.chunks):
                if self.script.fail_after is not None and index == self.script.fail_after:
                    assert self.script.fail_with is not None
                    raise self.script.fail_with
                self.script.started.set()
                yield chunk_object(
                    id="chatcmpl-c",
                    model=request.upstream_model,
                    created=0,
                    choices=[
                        {"index": 0, "delta": {"content": f"part{index} "}, "finish_reason": None}
                    ],
                )
                await asyncio.sleep(self.script.chunk_delay)
        except (asyncio.CancelledError, GeneratorExit):
            self.script.cancelled.append(request.request_id)
            raise
        self.script.completed.append(request.request_id)

    async def aclose(self) -> None:
        pass


class ControlledPlugin:
    """Registers provider type ``controlled``, driven by a :class:`Script`."""

    def __init__(self, script: Script) -> None:
        self.script = script

    @sluiceway.hookimpl
    def register_provider_types(self, register: Callable[[sluiceway.ProviderType], None]) -> None:
        register(sluiceway.ProviderType("controlled", lambda ctx: ControlledProvider(self.script)))


CONTROLLED_CONFIG: dict[str, Any] = {
    "providers": [{"name": "ctl", "type": "controlled", "models": ["ctl-model"]}],
}


@pytest.fixture
def script() -> Script:
    return Script()


@pytest.fixture
def controlled_plugin(script: Script) -> tuple[str, ControlledPlugin]:
    return ("controlled", ControlledPlugin(script))
