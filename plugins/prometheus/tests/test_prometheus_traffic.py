"""Known traffic through a real gateway, then /metrics parsed with prometheus_client's
own parser: every counter and every histogram count is exactly what was sent.

The stack: the mock provider, three OpenAI-compatible upstreams (FakeOpenAI) for
retries, a fallback and a breaker that opens, api-keys, limits (a key with
rpm = 2) and prometheus; plus a tiny in-process plugin that prices each answered
request at 0.25 USD, so the cost counter has something to count.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from sluiceway_api_keys import KeyStore

import sluiceway
from sluiceway.testing import RunningServer
from sluiceway.testing.fakes import FakeOpenAI, Status

Factory = Callable[..., RunningServer]
Scrape = Any
MESSAGES = [{"role": "user", "content": "hello there"}]
PRICE = 0.25  # a power of two: sums of it are exact in floating point

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Pricer:
    """Prices every call that reported usage, as a pricing plugin would."""

    name = "pricer"
    kinds = frozenset({"chat", "messages"})

    async def admit(self, call: sluiceway.ModelCall) -> sluiceway.Settle:
        async def settle(call: sluiceway.ModelCall) -> None:
            if call.usage is not None:
                call.cost = PRICE

        return settle


class PricerPlugin:
    @sluiceway.hookimpl
    def register_call_policies(
        self, register: Callable[[sluiceway.CallPolicyType], None]
    ) -> None:
        register(sluiceway.CallPolicyType("pricer", lambda gateway: Pricer()))


def config(keys_path: Path, up: FakeOpenAI, backup: FakeOpenAI,
           flaky: FakeOpenAI) -> dict[str, Any]:
    result: dict[str, Any] = {
        "gateway": {"plugins": ["mock", "openai", "api-keys", "limits", "prometheus"]},
        "providers": [
            {"name": "mock", "type": "mock", "models": ["mock-gpt"]},
            # Never rested, whatever it does: its failures are retried and counted.
            {"name": "up", "type": "openai", "base_url": up.url, "api_key": "sk-up",
             "models": ["m"], "cooldown_failures": 100, "read_timeout": "5s"},
            {"name": "backup", "type": "openai", "base_url": backup.url, "api_key": "sk-b",
             "models": ["b"]},
            # Rested for an hour after one failure, and never retried.
            {"name": "flaky", "type": "openai", "base_url": flaky.url, "api_key": "sk-f",
             "models": ["f"], "cooldown_failures": 1, "cooldown": "1h", "max_retries": 0},
        ],
        "aliases": [{"name": "auto", "targets": [{"target": "up/m"}, {"target": "backup/b"}]}],
        "auth": {"chain": ["api-keys"], "api-keys": {"keys_file": str(keys_path)}},
        "plugin": {"limits": {}, "prometheus": {}},
    }
    # The keys created so far may read every caller's metrics.
    result["gateway"]["operator_keys"] = [r.id for r in KeyStore(keys_path).read()]
    return result


class Client:
    """Sends requests one at a time and notes what the metrics must then show."""

    def __init__(self, server: RunningServer) -> None:
        self.server = server
        self.requests: Counter[tuple[str, ...]] = Counter()
        self.durations: Counter[tuple[str, ...]] = Counter()
        self.errors: Counter[tuple[str, ...]] = Counter()
        self.tokens: Counter[tuple[str, ...]] = Counter()
        self.cost: Counter[tuple[str, ...]] = Counter()
        self.ttft: Counter[tuple[str, ...]] = Counter()
        self.overhead = 0

    def chat(self, key: str | None, key_id: str, model: str, *, stream: bool = False,
             provider: str | None = None, upstream: bool = True,
             routed: bool | None = None) -> httpx.Response:
        """POST a chat; ``provider`` is the one expected to have served (or last
        failed) it, ``None`` when no deployment was tried; ``upstream``: whether a
        call went out at all; ``routed``: whether the model was resolved (by default,
        when a call went out)."""
        headers = {"authorization": f"Bearer {key}"} if key is not None else {}
        body: dict[str, Any] = {"model": model, "messages": MESSAGES, "stream": stream}
        if stream:
            body["stream_options"] = {"include_usage": True}
        response = httpx.post(self.server.base_url + "/chat/completions", json=body,
                              headers=headers, timeout=30)
        status = response.status_code
        usage: dict[str, Any] | None = None
        error: dict[str, Any] | None = None
        if status == 200 and stream:
            for line in response.text.splitlines():
                if line.startswith("data: {"):
                    chunk = json.loads(line[len("data: "):])
                    usage = chunk.get("usage") or usage
        elif status == 200:
            usage = response.json()["usage"]
        else:
            error = response.json()["error"]
        if status == 200:
            assert response.headers["x-sluiceway-provider"] == provider
            assert usage is not None
        labelled_model = model if (upstream if routed is None else routed) else ""
        labelled_provider = provider or ""
        self.requests[("chat", labelled_model, labelled_provider, str(status), key_id)] += 1
        self.durations[("chat", labelled_model, labelled_provider)] += 1
        if error is not None:
            self.errors[("chat", str(status), error["type"], error["code"] or "")] += 1
        if usage is not None:
            for field, kind in (("prompt_tokens", "prompt"), ("completion_tokens", "completion")):
                if usage.get(field):
                    self.tokens[(kind, model, labelled_provider, key_id)] += usage[field]
            cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
            if cached:
                self.tokens[("cached", model, labelled_provider, key_id)] += cached
            reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens")
            if reasoning:
                self.tokens[("reasoning", model, labelled_provider, key_id)] += reasoning
            self.cost[(model, labelled_provider, key_id)] += PRICE
        if stream and status == 200:
            self.ttft[(model, labelled_provider)] += 1
        if upstream:
            self.overhead += 1
        return response


def test_every_counter_and_histogram_count_matches_the_traffic(
    gateway_factory: Factory, fake_openai: Callable[..., FakeOpenAI], keys: KeyStore,
    keys_path: Path, scrape: Callable[..., Scrape], settle: Callable[[RunningServer], None],
) -> None:
    up, backup, flaky = fake_openai(), fake_openai(), fake_openai()
    alpha = keys.create("alpha")
    beta = keys.create("beta", rpm=2)
    scraper = keys.create("scraper")
    server = gateway_factory(config(keys_path, up, backup, flaky),
                             plugins=[("pricer", PricerPlugin())])
    client = Client(server)
    a, b = alpha.secret, beta.secret
    a_id, b_id = alpha.record.id, beta.record.id

    # /metrics is behind the auth chain by default.
    assert httpx.get(server.url + "/metrics").status_code == 401
    # Successes, plain and streamed, on the mock.
    for _ in range(3):
        assert client.chat(a, a_id, "mock-gpt", provider="mock").status_code == 200
    for _ in range(2):
        assert client.chat(a, a_id, "mock-gpt", stream=True, provider="mock").status_code == 200
    # Refusals before any upstream: unknown model, no key, a wrong key.
    assert client.chat(a, a_id, "nope", upstream=False).status_code == 404
    assert client.chat(None, "", "mock-gpt", upstream=False).status_code == 401
    assert client.chat("sk-wrong", "", "mock-gpt", upstream=False).status_code == 401
    # Rate limited: beta may send two requests per window.
    assert client.chat(b, b_id, "mock-gpt", provider="mock").status_code == 200
    assert client.chat(b, b_id, "mock-gpt", provider="mock").status_code == 200
    # (A model call refused by a policy: its model is known, so it is labelled.)
    assert client.chat(b, b_id, "mock-gpt", upstream=False, routed=True).status_code == 429
    # An upstream failure retried on the same provider.
    up.script(Status(500))
    assert client.chat(a, a_id, "m", provider="up").status_code == 200
    # An upstream failure that falls over to the alias's other target.
    up.script(Status(500))
    assert client.chat(a, a_id, "auto", provider="backup").status_code == 200
    # Overloaded three times: two retries, then the client gets the error.
    up.script(Status(503), Status(503), Status(503))
    overloaded = client.chat(a, a_id, "m", provider="up")
    assert overloaded.status_code == 502
    # One failure rests flaky for an hour; the next request finds no deployment.
    flaky.script(Status(500))
    assert client.chat(a, a_id, "f", provider="flaky").status_code == 502
    resting = client.chat(a, a_id, "f", upstream=False, routed=True)
    assert resting.status_code == 503
    # A stream from a real upstream.
    assert client.chat(a, a_id, "m", stream=True, provider="up").status_code == 200

    settle(server)
    metrics = scrape(server.url, key=scraper.secret)

    # Requests: the failed scrape, then every chat.
    expected = Counter(client.requests)
    expected[("metrics", "", "", "401", "")] += 1
    assert metrics.series("sluiceway_requests_total",
                          "route", "model", "provider", "status", "key_id") == expected
    assert metrics.types["sluiceway_requests"] == "counter"
    # Errors by type and code, as the clients saw them.
    errors = Counter(client.errors)
    errors[("metrics", "401", "authentication_error", "missing_api_key")] += 1
    assert metrics.series("sluiceway_request_errors_total",
                          "route", "status", "type", "code") == errors
    assert ("chat", "429", "rate_limit_error", "rate_limit_exceeded") in errors
    assert ("chat", "503", "service_unavailable", "no_healthy_deployment") in errors
    assert metrics.series("sluiceway_auth_failures_total", "code") == {
        ("missing_api_key",): 2, ("invalid_api_key",): 1,
    }
    assert metrics.series("sluiceway_limit_refusals_total", "policy", "limit", "key_id") == {
        ("limits", "requests", b_id): 1,
    }
    # Histograms: one observation per request, per upstream call, per stream.
    durations = Counter(client.durations)
    durations[("metrics", "", "")] += 1
    assert metrics.series("sluiceway_request_duration_seconds_count",
                          "route", "model", "provider") == durations
    assert metrics.series("sluiceway_request_duration_seconds_bucket", "le")[("+Inf",)] == sum(
        durations.values())
    assert metrics.series("sluiceway_gateway_overhead_seconds_count") == {
        (): client.overhead}
    assert metrics.series("sluiceway_upstream_latency_seconds_count",
                          "provider", "deployment", "outcome") == {
        ("mock", "mock/mock-gpt", "ok"): 7,
        ("up", "up/m", "ok"): 2,
        ("up", "up/m", "error"): 5,
        ("backup", "backup/b", "ok"): 1,
        ("flaky", "flaky/f", "error"): 1,
    }
    assert metrics.series("sluiceway_time_to_first_token_seconds_count",
                          "model", "provider") == client.ttft == {
        ("mock-gpt", "mock"): 2, ("m", "up"): 1}
    # Upstream failures, retries, fallbacks.
    assert metrics.series("sluiceway_upstream_errors_total",
                          "provider", "deployment", "kind", "status") == {
        ("up", "up/m", "server", "502"): 5,
        ("flaky", "flaky/f", "server", "502"): 1,
    }
    assert metrics.series("sluiceway_upstream_retries_total", "provider", "reason") == {
        ("up", "server"): 3}
    assert metrics.series("sluiceway_upstream_fallbacks_total", "provider", "reason") == {
        ("up", "server"): 1}
    # Tokens and cost, exactly what the clients were told.
    assert metrics.series("sluiceway_tokens_total", "kind", "model", "provider",
                          "key_id") == client.tokens
    assert {kind for kind, *_ in client.tokens} >= {"prompt", "completion"}
    assert metrics.series("sluiceway_cost_usd_total", "model", "provider",
                          "key_id") == client.cost
    # Gauges: nothing in flight but this scrape; flaky/f is cooling down.
    assert metrics.series("sluiceway_requests_in_flight", "route")[("metrics",)] == 1
    assert metrics.value("sluiceway_requests_in_flight") == 1
    assert metrics.series("sluiceway_pool_active", "provider") == {
        (p,): 0 for p in ("mock", "up", "backup", "flaky")}
    assert metrics.series("sluiceway_pool_queued", "provider") == {
        (p,): 0 for p in ("mock", "up", "backup", "flaky")}
    assert metrics.series("sluiceway_pool_slots", "provider")[("mock",)] == 1024
    states = metrics.series("sluiceway_deployment_state", "deployment", "state")
    assert {d for (d, s), v in states.items() if v == 1 and s == "open"} == {"flaky/f"}
    assert {d for (d, s), v in states.items() if v == 1 and s == "closed"} == {
        "mock/mock-gpt", "up/m", "backup/b"}
    assert sum(states.values()) == 4  # one state per deployment

    # The scrape itself is counted once it has ended.
    settle(server)
    again = scrape(server.url, key=scraper.secret)
    assert again.value("sluiceway_requests_total", route="metrics", status="200") == 1
    # No request id, path or secret ever becomes a label.
    for text in (metrics.text, again.text):
        assert "req_" not in text and "/v1/" not in text
        assert a not in text and b not in text and "sk-" not in text
