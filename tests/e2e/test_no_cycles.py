"""A finished request leaves no reference cycles behind: everything it made is
freed by reference counting as it ends. A cycle per request would wait for the
cyclic collector, whose passes then grow with every request in flight and
stall them all (benchmarks/RESULTS.md: +0.25 s at the p99 with a thousand in
flight). Served for real, on a real socket; the garbage is counted by type."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator

import anthropic
import openai
import pytest

import sluiceway
from sluiceway.calls import ModelCall
from sluiceway.http.context import RequestContext
from sluiceway.http.server import _serve_forever
from sluiceway.testing import RunningServer

Factory = Callable[..., RunningServer]
USER = [{"role": "user", "content": "hi"}]
# What a request makes that must not outlive it.
PER_REQUEST = (RequestContext, ModelCall, sluiceway.ChatRequest, sluiceway.MessagesRequest)


@pytest.fixture
def garbage() -> Iterator[Callable[[], list[object]]]:
    """Collect what is unreachable now, and hand back what the next collection finds."""
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)

    def found() -> list[object]:
        gc.collect()
        return [obj for obj in gc.garbage if isinstance(obj, PER_REQUEST)]

    try:
        yield found
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


def _requests(server: RunningServer) -> None:
    with openai.OpenAI(api_key="unused", base_url=server.base_url, max_retries=0) as client:
        for _ in range(5):
            client.chat.completions.create(model="mock-gpt", messages=USER)
            list(client.chat.completions.create(model="mock-gpt", messages=USER, stream=True))
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="no-such-model", messages=USER)
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="mock-gpt", messages=[])
    with anthropic.Anthropic(api_key="unused", base_url=server.url, max_retries=0) as claude:
        claude.messages.create(model="mock-gpt", max_tokens=16, messages=USER)  # type: ignore[arg-type]
        with claude.messages.stream(
            model="mock-gpt", max_tokens=16, messages=USER,  # type: ignore[arg-type]
        ) as stream:
            stream.until_done()
        claude.messages.count_tokens(model="mock-gpt", messages=USER)  # type: ignore[arg-type]


def test_failed_calls_leave_no_cycles_behind(
    gateway_factory: Factory, garbage: Callable[[], list[object]],
) -> None:
    # Upstream errors and policy refusals carry tracebacks whose frames hold the call.
    server = gateway_factory({
        "gateway": {"plugins": ["mock", "limits"]},
        "providers": [{"name": "mock", "type": "mock", "models": ["mock-gpt"],
                       "error_rate": 1.0}],
        "plugin": {"limits": {"default_rpm": 4}},
    })
    with openai.OpenAI(api_key="unused", base_url=server.base_url, max_retries=0) as client:
        for _ in range(3):
            with pytest.raises(openai.InternalServerError):
                client.chat.completions.create(model="mock-gpt", messages=USER)
        with pytest.raises(openai.APIStatusError):
            list(client.chat.completions.create(model="mock-gpt", messages=USER, stream=True))
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="mock-gpt", messages=USER)
    left = garbage()
    assert not left, f"{len(left)} objects left to the cyclic collector: {left[:4]}"


def test_requests_leave_no_cycles_behind(
    gateway_factory: Factory, garbage: Callable[[], list[object]],
) -> None:
    server = gateway_factory({
        "gateway": {"plugins": ["mock", "limits", "costs", "prometheus"]},
        "providers": [{"name": "mock", "type": "mock", "models": ["mock-gpt"]}],
        "plugin": {"costs": {"prices": {"mock-gpt": {"input": 1.0, "output": 2.0}}}},
    })
    _requests(server)
    left = garbage()
    assert not left, f"{len(left)} objects left to the cyclic collector: {left[:4]}"


def test_serving_sets_the_configured_gc_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    from sluiceway.http import server as serving

    before = gc.get_threshold()
    seen: list[tuple[int, ...]] = []
    # Serving itself is tested end to end elsewhere; here only what happens before it.
    monkeypatch.setattr(serving, "_run_loop", lambda main, use_uvloop: seen.append(
        gc.get_threshold()) or main().close())
    gateway = sluiceway.create_app({"server": {"gc_threshold": [12345, 7, 3]}})
    try:
        assert _serve_forever(gateway, gateway.config.server, None) == 0  # type: ignore[arg-type]
    finally:
        gc.set_threshold(*before)
    assert seen == [(12345, 7, 3)]
