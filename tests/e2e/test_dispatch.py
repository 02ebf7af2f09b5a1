"""The retry loop over a real server: fallbacks, retries, budget, deadline, pools.

Providers here are a plugin whose every call follows a script, so each rule of
the loop can be shown on its own; the same faults from a real upstream over
sockets are in test_fault_matrix.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import msgspec
import openai
import pytest

import sluiceway
from sluiceway.testing import RunningServer
from sluiceway.wire.openai import chunk_object, completion_object, usage_object

MESSAGES = [{"role": "user", "content": "hi"}]


class ScriptOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    script: list[str] = []
    delay: float = 0.0


def _failure(step: str) -> sluiceway.GatewayError | None:
    kind, _, arg = step.partition(":")
    if kind == "500":
        return sluiceway.UpstreamError("upstream said 500")
    if kind == "429":
        return sluiceway.RateLimited("upstream said 429", retry_after=float(arg or 0) or None)
    if kind == "timeout":
        return sluiceway.UpstreamTimeout("upstream too slow")
    if kind == "connect":
        return sluiceway.UpstreamError("refused", kind="connect")
    if kind == "context":
        return sluiceway.InvalidRequest("prompt too long", kind="context_window")
    if kind == "auth-alt":
        return sluiceway.UpstreamError("key rejected", kind="auth", alternate=True)
    if kind == "client":
        return sluiceway.InvalidRequest("bad temperature", param="temperature")
    return None


class ScriptedProvider:
    def __init__(self, name: str, options: ScriptOptions, calls: list[str]) -> None:
        self.name = name
        self.script = list(options.script)
        self.delay = options.delay
        self.calls = calls

    def _next(self) -> str:
        self.calls.append(self.name)
        return self.script.pop(0) if self.script else "ok"

    async def chat(self, request: sluiceway.ChatRequest) -> dict[str, Any]:
        step = self._next()
        await asyncio.sleep(self.delay)
        if (error := _failure(step)) is not None:
            raise error
        return completion_object(
            id="c",
            model=request.upstream_model,
            choices=[
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": self.name},
                    "finish_reason": "stop",
                }
            ],
            usage=usage_object(1, 1),
        )

    async def stream(self, request: sluiceway.ChatRequest) -> AsyncIterator[dict[str, Any]]:
        step = self._next()
        await asyncio.sleep(self.delay)
        if (error := _failure(step)) is not None:
            raise error
        for word in (self.name, " done"):
            yield chunk_object(
                id="c",
                model=request.upstream_model,
                created=0,
                choices=[{"index": 0, "delta": {"content": word}}],
            )

    async def aclose(self) -> None:
        pass


class ScriptedPlugin:
    def __init__(self) -> None:
        self.calls: list[str] = []

    @sluiceway.hookimpl
    def register_provider_types(self, register: Callable[[sluiceway.ProviderType], None]) -> None:
        register(
            sluiceway.ProviderType(
                "scripted",
                lambda ctx: ScriptedProvider(ctx.name, ctx.options, self.calls),
                config_model=ScriptOptions,
            )
        )


Start = Callable[..., tuple[RunningServer, ScriptedPlugin]]


@pytest.fixture
def start(gateway_factory: Callable[..., RunningServer]) -> Start:
    def build(
        *providers: dict[str, Any],
        aliases: list[dict[str, Any]] | None = None,
        gateway: dict[str, Any] | None = None,
    ) -> tuple[RunningServer, ScriptedPlugin]:
        plugin = ScriptedPlugin()
        tables = [{"type": "scripted", "models": ["m"], **p} for p in providers]
        config: dict[str, Any] = {"providers": tables, "aliases": aliases or []}
        if gateway:
            config["gateway"] = gateway
        return gateway_factory(config, plugins=[("scripted", plugin)]), plugin

    return build


def _client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(api_key="x", base_url=server.base_url, max_retries=0)


def _ask(server: RunningServer, model: str = "m") -> httpx.Response:
    return httpx.post(
        server.base_url + "/chat/completions",
        json={"model": model, "messages": MESSAGES},
        timeout=30,
    )


ALIAS = [{"name": "smart", "targets": ["a/m", "b/m"]}]


def _one_then_another(server: RunningServer, model: str) -> list[httpx.Response]:
    """Two requests: the second sent while the first is still being served."""

    async def both() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            url = server.base_url + "/chat/completions"
            body = {"model": model, "messages": MESSAGES}
            first = asyncio.create_task(client.post(url, json=body))
            await asyncio.sleep(0.1)
            second = await client.post(url, json=body)
            return [await first, second]

    return asyncio.run(both())


def test_falls_over_to_the_next_target_and_says_so(start: Start) -> None:
    server, plugin = start(
        {"name": "a", "script": ["500"], "models": ["m"]},
        {"name": "b", "models": ["m2"]},
        aliases=[{"name": "smart", "targets": ["a/m", "b/m2"]}],
    )
    response = _ask(server, "smart")
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "b"
    assert response.headers["x-sluiceway-provider"] == "b"
    assert response.headers["x-sluiceway-model"] == "m2"
    assert response.headers["x-sluiceway-attempts"] == "2"
    assert float(response.headers["x-sluiceway-overhead-ms"]) >= 0
    assert plugin.calls == ["a", "b"]


@pytest.mark.parametrize("fault", ["500", "timeout", "connect", "429"])
def test_retries_the_same_provider_after_a_transient_failure(start: Start, fault: str) -> None:
    server, plugin = start({"name": "a", "script": [fault]})
    response = _ask(server)
    assert response.status_code == 200
    assert response.headers["x-sluiceway-attempts"] == "2"
    assert plugin.calls == ["a", "a"]


def test_gives_up_after_max_retries_with_the_last_error(start: Start) -> None:
    server, plugin = start({"name": "a", "script": ["500"] * 5, "max_retries": 2})
    response = _ask(server)
    assert response.status_code == 502
    assert response.json()["error"]["message"] == "upstream said 500"
    assert response.headers["x-sluiceway-attempts"] == "3"
    assert plugin.calls == ["a"] * 3


def test_client_errors_are_never_retried(start: Start) -> None:
    server, plugin = start({"name": "a", "script": ["client"]})
    response = _ask(server)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "temperature"
    assert plugin.calls == ["a"]


def test_context_window_errors_fall_over_but_are_not_retried(start: Start) -> None:
    server, _plugin = start(
        {"name": "a", "script": ["context"]},
        {"name": "b", "models": ["m2"]},
        aliases=[{"name": "smart", "targets": ["a/m", "b/m2"]}],
    )
    assert _ask(server, "smart").json()["choices"][0]["message"]["content"] == "b"
    server2, plugin2 = start({"name": "a", "script": ["context", "context"]})
    assert _ask(server2).status_code == 400
    assert plugin2.calls == ["a"]


def test_an_alternate_key_is_tried_at_once(start: Start) -> None:
    server, plugin = start({"name": "a", "script": ["auth-alt"], "max_retries": 0})
    assert _ask(server).status_code == 200
    assert plugin.calls == ["a", "a"]


def test_honours_retry_after_when_it_fits(start: Start) -> None:
    server, _plugin = start({"name": "a", "script": ["429:0.3"]})
    response = _ask(server)
    assert response.status_code == 200
    assert response.headers["x-sluiceway-attempts"] == "2"


def test_the_deadline_covers_every_attempt(start: Start) -> None:
    server, plugin = start(
        {"name": "a", "delay": 0.3, "script": ["500"] * 10, "timeout": "0.5s", "max_retries": 10}
    )
    response = _ask(server)
    assert response.status_code in (502, 504)
    assert len(plugin.calls) <= 3


def test_a_deployment_that_keeps_failing_is_rested_then_probed(start: Start) -> None:
    server, plugin = start(
        {
            "name": "a",
            "script": ["500"] * 4,
            "max_retries": 0,
            "cooldown_failures": 2,
            "cooldown": "0.3s",
        }
    )
    assert _ask(server).status_code == 502
    assert _ask(server).status_code == 502  # second failure: rested now
    rested = _ask(server)
    assert rested.status_code == 503
    assert rested.json()["error"]["code"] == "no_healthy_deployment"
    assert rested.headers["retry-after"] == "1"
    assert plugin.calls == ["a", "a"]  # the rested deployment was not called
    asyncio.run(asyncio.sleep(0.35))
    assert _ask(server).status_code == 502  # the probe fails: rested again, for longer
    assert _ask(server).status_code == 503
    assert plugin.calls == ["a"] * 3


def test_a_full_provider_pool_falls_over_without_counting_a_failure(start: Start) -> None:
    server, _plugin = start(
        {"name": "a", "delay": 0.5, "concurrency": 1, "buffer": 0, "drop_excess": True},
        {"name": "b", "models": ["m2"]},
        aliases=[{"name": "smart", "targets": ["a/m", "b/m2"]}],
    )

    first, second = _one_then_another(server, "smart")
    assert first.headers["x-sluiceway-provider"] == "a"
    assert second.headers["x-sluiceway-provider"] == "b"
    assert second.headers["x-sluiceway-attempts"] == "1"  # a was full, never called


def test_a_full_pool_with_nowhere_else_to_go_is_503(start: Start) -> None:
    server, _ = start(
        {"name": "a", "delay": 0.5, "concurrency": 1, "buffer": 0, "drop_excess": True}
    )

    first, second = _one_then_another(server, "m")
    assert first.status_code == 200
    assert second.status_code == 503
    assert second.json()["error"]["code"] == "busy"
    assert int(second.headers["retry-after"]) >= 1


def test_the_gateway_wide_cap_answers_busy_when_the_wait_runs_out(start: Start) -> None:
    server, _ = start(
        {"name": "a", "delay": 0.5},
        gateway={"max_concurrent_requests": 1, "queue_timeout": "100ms"},
    )

    first, second = _one_then_another(server, "m")
    assert first.status_code == 200
    assert second.status_code == 503
    assert "the gateway is busy" in second.json()["error"]["message"]


def test_the_retry_budget_stops_a_retry_storm(start: Start) -> None:
    # Budget floor 1: with many requests failing at once, only one may retry at a time.
    server, plugin = start(
        {
            "name": "a",
            "delay": 0.2,
            "script": ["500"] * 40,
            "max_retries": 1,
            "cooldown_failures": 1000,
        },
        gateway={"retry_budget": 0.0, "retry_budget_min": 1},
    )

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            body = {"model": "m", "messages": MESSAGES}
            return list(
                await asyncio.gather(
                    *(
                        client.post(server.base_url + "/chat/completions", json=body)
                        for _ in range(10)
                    )
                )
            )

    responses = asyncio.run(burst())
    assert all(r.status_code == 502 for r in responses)
    assert len(plugin.calls) < 10 * 2  # without the budget every request would retry once
    assert len(plugin.calls) >= 11


def test_streams_fall_over_before_the_first_byte(start: Start) -> None:
    server, _plugin = start(
        {"name": "a", "script": ["500"], "models": ["m"]},
        {"name": "b", "models": ["m2"]},
        aliases=[{"name": "smart", "targets": ["a/m", "b/m2"]}],
    )
    with _client(server) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="smart",
            messages=MESSAGES,
            stream=True,  # type: ignore[arg-type]
        )
        assert raw.headers["x-sluiceway-provider"] == "b"
        assert raw.headers["x-sluiceway-attempts"] == "2"
        text = "".join(c.choices[0].delta.content or "" for c in raw.parse())
    assert text == "b done"


def test_weighted_alias_spreads_traffic(start: Start) -> None:
    server, plugin = start(
        {"name": "a", "models": ["m"]},
        {"name": "b", "models": ["m2"]},
        aliases=[
            {
                "name": "smart",
                "strategy": "weighted",
                "targets": [{"target": "a/m", "weight": 1}, {"target": "b/m2", "weight": 3}],
            }
        ],
    )

    async def many() -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            body = {"model": "smart", "messages": MESSAGES}
            for _ in range(10):
                await asyncio.gather(
                    *(
                        client.post(server.base_url + "/chat/completions", json=body)
                        for _ in range(40)
                    )
                )

    asyncio.run(many())
    share_b = plugin.calls.count("b") / len(plugin.calls)
    assert len(plugin.calls) == 400
    # Expected 0.75; four standard deviations of a binomial share over 400 is ±0.087.
    assert abs(share_b - 0.75) < 0.087
