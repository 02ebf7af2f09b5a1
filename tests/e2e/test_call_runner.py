"""The model-call boundary end to end: every way a call can end settles each
admitted policy exactly once, with what the call became (status, usage,
error, a hang-up), on both dialects, over a real socket."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import anthropic
import httpx
import openai
import pytest

import sluiceway
from sluiceway.testing import RunningServer

Factory = Callable[..., RunningServer]
USER: list[Any] = [{"role": "user", "content": "Tell me a story."}]


class Ledger:
    """Records each admission and each settlement, by request id."""

    name = "ledger"
    kinds = frozenset({"chat", "messages", "count_tokens"})

    def __init__(self) -> None:
        self.admitted: list[str] = []
        self.settled: list[dict[str, Any]] = []

    async def admit(self, call: sluiceway.ModelCall) -> sluiceway.Settle:
        self.admitted.append(call.request_id)
        call.headers["x-ledger"] = "admitted"

        async def settle(call: sluiceway.ModelCall) -> None:
            self.settled.append({
                "id": call.request_id, "kind": call.kind, "status": call.status,
                "stream": call.stream, "disconnected": call.disconnected,
                "error": call.error.code if call.error is not None else None,
                "tokens": call.usage.total_tokens if call.usage is not None else None,
                "provider": call.deployment.provider_name if call.deployment else None,
            })

        return settle

    def wait_settled(self, count: int) -> list[dict[str, Any]]:
        for _ in range(500):
            if len(self.settled) >= count:
                break
            time.sleep(0.01)
        return self.settled


class LedgerPlugin:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    @sluiceway.hookimpl
    def register_call_policies(
        self, register: Callable[[sluiceway.CallPolicyType], None]
    ) -> None:
        register(sluiceway.CallPolicyType("ledger", lambda gateway: self.ledger))


def start(gateway_factory: Factory, ledger: Ledger, **mock: Any) -> RunningServer:
    config = {
        "gateway": {"plugins": ["mock"]},
        "providers": [{"name": "mock", "type": "mock", "models": ["mock-gpt"],
                       "allow_request_faults": True, "max_retries": 0,
                       "cooldown_failures": 1000, **mock}],
    }
    return gateway_factory(config, plugins=[("ledger", LedgerPlugin(ledger))])


def test_answers_errors_and_streams_settle_once_each(gateway_factory: Factory) -> None:
    ledger = Ledger()
    server = start(gateway_factory, ledger)
    with openai.OpenAI(api_key="x", base_url=server.base_url, max_retries=0) as client:
        plain = client.chat.completions.with_raw_response.create(model="mock-gpt",
                                                                 messages=USER)
        answer = plain.parse()
        stream = client.chat.completions.create(model="mock-gpt", messages=USER, stream=True,
                                                stream_options={"include_usage": True})
        usage = [chunk.usage for chunk in stream if chunk.usage][-1]
        with pytest.raises(openai.InternalServerError) as failed:
            client.chat.completions.create(model="mock-gpt", messages=USER,
                                           metadata={"mock_fault": "error"})
        dropped = client.chat.completions.create(model="mock-gpt", messages=USER, stream=True,
                                                 metadata={"mock_fault": "drop"})
        with pytest.raises(openai.APIError):
            for _ in dropped:
                pass
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="no-such-model", messages=USER)
    settled = ledger.wait_settled(4)
    assert plain.headers["x-ledger"] == "admitted"
    assert failed.value.response.headers["x-ledger"] == "admitted"
    assert answer.usage is not None
    assert [(s["status"], s["stream"], s["error"], s["tokens"]) for s in settled] == [
        (200, False, None, answer.usage.total_tokens),
        (200, True, None, usage.total_tokens),
        (502, False, "upstream_error", None),
        # The 200 went out; the call still records how it failed.
        (200, True, "upstream_disconnected", None),
    ]
    assert all(s["provider"] == "mock" and not s["disconnected"] for s in settled)
    # The unknown model was never admitted; nothing was settled twice.
    assert len(ledger.admitted) == 4
    assert sorted(s["id"] for s in settled) == sorted(ledger.admitted)


async def test_a_client_that_hangs_up_is_settled_once(gateway_factory: Factory) -> None:
    ledger = Ledger()
    server = start(gateway_factory, ledger, ttft="2s", token_delay="50ms")
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        # Hung up on while waiting for a whole answer...
        with pytest.raises(httpx.ReadTimeout):
            await client.post("/chat/completions", timeout=0.3,
                              json={"model": "mock-gpt", "messages": USER})
        # ...and in the middle of a stream, once it had started.
        async with client.stream("POST", "/chat/completions", json={
            "model": "mock-gpt", "messages": USER, "stream": True,
        }) as response:
            assert response.status_code == 200
            async for _ in response.aiter_bytes():
                break
    settled = await asyncio.to_thread(ledger.wait_settled, 2)
    await asyncio.sleep(0.2)  # nothing more arrives late
    assert [(s["status"], s["stream"], s["disconnected"]) for s in ledger.settled] == [
        (499, False, True), (200, True, True)]
    assert len(settled) == len(ledger.admitted) == 2
    # Both freed their pool slot.
    pool = server.gateway.router.resolve("mock-gpt").deployments[0].pool
    assert pool.active == 0


def test_messages_and_count_tokens_are_calls_too(gateway_factory: Factory) -> None:
    ledger = Ledger()
    server = start(gateway_factory, ledger)
    with anthropic.Anthropic(api_key="x", base_url=server.url, max_retries=0) as client:
        message = client.messages.create(model="mock-gpt", max_tokens=50, messages=USER)
        with client.messages.stream(model="mock-gpt", max_tokens=50, messages=USER) as stream:
            final = stream.get_final_message()
        counted = client.messages.count_tokens(model="mock-gpt", messages=USER)
    settled = ledger.wait_settled(3)
    assert [(s["kind"], s["status"], s["stream"]) for s in settled] == [
        ("messages", 200, False), ("messages", 200, True), ("count_tokens", 200, False)]
    assert settled[0]["tokens"] == message.usage.input_tokens + message.usage.output_tokens
    assert settled[1]["tokens"] == final.usage.input_tokens + final.usage.output_tokens
    assert settled[2]["provider"] == "mock" and counted.input_tokens > 0


class SlowToSettle:
    """Settles slowly, so that a client can hang up in the middle of it."""

    name = "slow"
    kinds = frozenset({"chat"})

    def __init__(self) -> None:
        self.cancelled = 0

    async def admit(self, call: sluiceway.ModelCall) -> sluiceway.Settle:
        async def settle(call: sluiceway.ModelCall) -> None:
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                self.cancelled += 1
                raise

        return settle


class SlowPlugin:
    def __init__(self, policy: SlowToSettle) -> None:
        self.policy = policy

    @sluiceway.hookimpl
    def register_call_policies(
        self, register: Callable[[sluiceway.CallPolicyType], None]
    ) -> None:
        register(sluiceway.CallPolicyType("slow", lambda gateway: self.policy))


async def test_a_hang_up_during_one_settlement_still_settles_the_others(
    gateway_factory: Factory,
) -> None:
    slow, ledger = SlowToSettle(), Ledger()
    server = gateway_factory(
        {"gateway": {"plugins": ["mock"]},
         "providers": [{"name": "mock", "type": "mock", "models": ["mock-gpt"],
                        "response_tokens": 3}]},
        # slow is admitted first, so it settles first.
        plugins=[("slow", SlowPlugin(slow)), ("ledger", LedgerPlugin(ledger))],
    )
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        async with client.stream("POST", "/chat/completions", json={
            "model": "mock-gpt", "messages": USER, "stream": True,
        }) as response:
            # The stream settles just before its last frame: the last chunk with
            # content comes, then nothing while slow settles. Hang up then.
            async for line in response.aiter_lines():
                if '"finish_reason":"stop"' in line:
                    break
    settled = await asyncio.to_thread(ledger.wait_settled, 1)
    assert slow.cancelled == 1
    assert [(s["status"], s["stream"]) for s in settled] == [(200, True)]
