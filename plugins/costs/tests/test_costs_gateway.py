"""The costs middleware over a real gateway: the cost of plain and streamed
answers (seen in the header and in the events), and budgets per key."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import msgspec
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from sluiceway_api_keys import KeyStore
from sluiceway_costs import format_dollars
from sluiceway_mock.text import prompt_tokens

import sluiceway
from sluiceway.testing import RunningServer

Start = Callable[..., RunningServer]
USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
ANSWER_TOKENS = 30
MOCK = {"response_tokens": ANSWER_TOKENS}
# Per million tokens: prices chosen so that a cost has many significant digits.
INPUT, OUTPUT = 3.7, 14.3
PRICES = {"mock-gpt": {"input": INPUT, "output": OUTPUT}}


def expected_cost(prompt: int, completion: int, *, cached: int = 0,
                  cached_price: float | None = None) -> float:
    cached_price = INPUT if cached_price is None else cached_price
    return ((prompt - cached) * INPUT + cached * cached_price + completion * OUTPUT) / 1e6


# The mock's usage is exact: its own rules give the tokens of a request.
PROMPT_TOKENS = prompt_tokens([dict(m) for m in USER])
COST = expected_cost(PROMPT_TOKENS, ANSWER_TOKENS)


class Recorder:
    """An event sink that keeps every event (``handle`` only appends)."""

    def __init__(self) -> None:
        self.events: list[sluiceway.events.Event] = []

    def handle(self, event: sluiceway.events.Event) -> None:
        self.events.append(event)

    def ended(self) -> list[sluiceway.events.RequestEnded]:
        return [e for e in self.events if isinstance(e, sluiceway.events.RequestEnded)]

    def end_of(self, request_id: str) -> sluiceway.events.RequestEnded:
        """The request's RequestEnded. A client has its answer as soon as the last
        byte is sent; the request's end comes a moment later, on the server's
        loop: wait for it."""
        for _ in range(1000):
            found = [e for e in self.ended() if e.request_id == request_id]
            if found:
                assert len(found) == 1
                return found[0]
            time.sleep(0.01)
        raise AssertionError(f"no RequestEnded for {request_id} after 10 s")

    def settled(self, server: RunningServer) -> list[sluiceway.events.RequestEnded]:
        """Every RequestEnded, once no request is in flight any more."""
        for _ in range(1000):
            if not server.call(lambda: len(server.gateway.inflight)):
                return self.ended()
            time.sleep(0.01)
        raise AssertionError("requests still in flight after 10 s")

    def decided(self) -> list[sluiceway.events.LimitDecided]:
        return [e for e in self.events if isinstance(e, sluiceway.events.LimitDecided)]


class RecorderPlugin:
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    @sluiceway.hookimpl
    def register_event_sinks(self, register: Callable[[sluiceway.EventSinkType], None]) -> None:
        register(sluiceway.EventSinkType("recorder", lambda gateway: self.recorder))


def sdk(server: RunningServer, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=server.base_url, max_retries=0)


def plain(client: openai.OpenAI, model: str = "mock-gpt") -> tuple[dict[str, Any], httpx.Headers]:
    raw = client.chat.completions.with_raw_response.create(model=model, messages=USER)
    completion = raw.parse()
    assert completion.usage is not None
    return completion.usage.model_dump(), raw.headers


def streamed(client: openai.OpenAI, model: str = "mock-gpt",
             include_usage: bool = True) -> tuple[dict[str, Any] | None, httpx.Headers]:
    options: Any = {"include_usage": True} if include_usage else openai.omit
    with client.chat.completions.with_streaming_response.create(
        model=model, messages=USER, stream=True, stream_options=options,
    ) as response:
        chunks = list(response.parse())
        headers = response.headers
    usage = chunks[-1].usage
    return (usage.model_dump() if usage is not None else None), headers


def error_code(response: httpx.Response) -> str:
    code: str = msgspec.json.decode(response.content)["error"]["code"]
    return code


# --------------------------------------------------------------------------
# The cost of a request
# --------------------------------------------------------------------------


def test_costs_plain_and_streamed_cost_is_price_times_usage(start: Start) -> None:
    recorder = Recorder()
    server = start(auth=False, costs={"prices": PRICES}, mock=MOCK,
                   plugins=[("recorder", RecorderPlugin(recorder))])
    with sdk(server) as client:
        usage, headers = plain(client)
        assert (usage["prompt_tokens"], usage["completion_tokens"]) == (
            PROMPT_TOKENS, ANSWER_TOKENS)
        # The header, on a whole answer: price x usage, as a plain decimal.
        assert float(headers["x-sluiceway-cost"]) == pytest.approx(COST, rel=1e-9)
        assert headers["x-sluiceway-cost"] == format_dollars(COST)
        assert "x-sluiceway-budget" not in headers and "x-sluiceway-spend" not in headers
        plain_end = recorder.end_of(headers["x-request-id"])
        assert plain_end.cost == pytest.approx(COST, rel=1e-12)
        assert plain_end.usage == {"prompt_tokens": PROMPT_TOKENS,
                                   "completion_tokens": ANSWER_TOKENS}

        stream_usage, stream_headers = streamed(client)
        assert stream_usage is not None and stream_usage["completion_tokens"] == ANSWER_TOKENS
        # A stream's headers leave before its usage is known: no cost header...
        assert "x-sluiceway-cost" not in stream_headers
        # ...but the cost reaches the request's end (events, metrics, logs).
        stream_end = recorder.end_of(stream_headers["x-request-id"])
        assert stream_end.stream and stream_end.cost == pytest.approx(COST, rel=1e-12)

        # Without include_usage the client sees no usage, but the gateway does.
        hidden, hidden_headers = streamed(client, include_usage=False)
        assert hidden is None
        assert recorder.end_of(hidden_headers["x-request-id"]).cost == pytest.approx(
            COST, rel=1e-12)
    assert recorder.decided() == []  # no budget: nothing decided


class CachedUsageProvider:
    """Answers with fixed usage that has cached prompt tokens and reasoning tokens."""

    USAGE: dict[str, Any] = {
        "prompt_tokens": 2000, "completion_tokens": 900, "total_tokens": 2900,
        "prompt_tokens_details": {"cached_tokens": 1500},
        "completion_tokens_details": {"reasoning_tokens": 700},
    }

    async def chat(self, request: sluiceway.ChatRequest) -> dict[str, Any]:
        return {
            "id": "chatcmpl-fixed", "object": "chat.completion", "created": 0,
            "model": request.upstream_model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "ok"}}],
            "usage": self.USAGE,
        }

    async def stream(self, request: sluiceway.ChatRequest) -> AsyncIterator[dict[str, Any]]:
        base = {"id": "chatcmpl-fixed", "object": "chat.completion.chunk", "created": 0,
                "model": request.upstream_model}
        yield {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "ok"},
                                    "finish_reason": None}]}
        yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        yield {**base, "choices": [], "usage": self.USAGE}

    async def aclose(self) -> None:
        pass


class FixedPlugin:
    @sluiceway.hookimpl
    def register_provider_types(self, register: Callable[[sluiceway.ProviderType], None]) -> None:
        register(sluiceway.ProviderType("fixed", lambda ctx: CachedUsageProvider()))


def test_costs_cached_tokens_are_cheaper_and_reasoning_is_output(start: Start) -> None:
    recorder = Recorder()
    server = start(
        auth=False, plugins=[("fixed", FixedPlugin()), ("recorder", RecorderPlugin(recorder))],
        costs={"prices": {
            # Found through the upstream id "fancy-2025-06-01" without its date.
            "fancy": {"input": INPUT, "output": OUTPUT, "cached_input": 0.37},
            # The alias's own name is only the fallback: never used here.
            "public": {"input": 100.0, "output": 100.0},
            "cheap-alias": {"input": INPUT, "output": OUTPUT},
        }},
        config={"providers": [{
            "name": "fixed", "type": "fixed",
            "models": [{"name": "public", "upstream": "fancy-2025-06-01"},
                       {"name": "cheap-alias", "upstream": "unpriced-upstream"}],
        }], "gateway": {"plugins": ["costs"]}},
    )
    cost = expected_cost(2000, 900, cached=1500, cached_price=0.37)
    # 500 fresh prompt tokens at input, 1500 cached at cached_input, and the 900
    # completion tokens (700 of them reasoning) at output, once.
    assert cost == pytest.approx((500 * INPUT + 1500 * 0.37 + 900 * OUTPUT) / 1e6)
    with sdk(server) as client:
        _, headers = plain(client, "public")
        assert float(headers["x-sluiceway-cost"]) == pytest.approx(cost, rel=1e-9)
        _, stream_headers = streamed(client, "public")
        assert recorder.end_of(stream_headers["x-request-id"]).cost == pytest.approx(
            cost, rel=1e-12)
        # An upstream id with no price: the requested name's price applies.
        _, alias_headers = plain(client, "cheap-alias")
        assert float(alias_headers["x-sluiceway-cost"]) == pytest.approx(
            expected_cost(2000, 900), rel=1e-9)
    ended = recorder.settled(server)
    assert [e.usage for e in ended] == [
        {"prompt_tokens": 2000, "completion_tokens": 900, "cached_tokens": 1500,
         "reasoning_tokens": 700}] * 3


def test_costs_dataset_prices_models_nobody_configured(start: Start) -> None:
    """With no prices configured at all, the pinned dataset prices real model
    ids: cache reads at their own price, and reasoning tokens at a reasoning
    price where the dataset has one."""
    recorder = Recorder()
    server = start(
        auth=False, plugins=[("fixed", FixedPlugin()), ("recorder", RecorderPlugin(recorder))],
        costs={},
        config={"providers": [{
            "name": "fixed", "type": "fixed",
            "models": [{"name": "fast", "upstream": "gpt-4o-2024-08-06"},
                       {"name": "thinking", "upstream": "gemini-2.5-flash"}],
        }], "gateway": {"plugins": ["costs"]}},
    )
    with sdk(server) as client:
        _, headers = plain(client, "fast")
        # gpt-4o: $2.50 input, $1.25 cached input, $10 output per million.
        assert float(headers["x-sluiceway-cost"]) == pytest.approx(
            (500 * 2.5 + 1500 * 1.25 + 900 * 10.0) / 1e6, rel=1e-9)
        _, stream_headers = streamed(client, "thinking")
        # gemini-2.5-flash: $0.30 input, $0.03 cached, $2.50 output and reasoning.
        assert recorder.end_of(stream_headers["x-request-id"]).cost == pytest.approx(
            (500 * 0.3 + 1500 * 0.03 + 200 * 2.5 + 700 * 2.5) / 1e6, rel=1e-9)
    assert server.gateway.calls.policies[0].unpriced == set()


def test_costs_unknown_model_has_no_cost(
    start: Start, store: KeyStore, caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = Recorder()
    capped = store.create("capped")
    server = start(costs={"budgets": {capped.record.id: 0.000001}}, mock=MOCK,
                   plugins=[("recorder", RecorderPlugin(recorder))])
    with caplog.at_level(logging.DEBUG, logger="sluiceway.costs"), sdk(
            server, capped.secret) as client:
        results = [plain(client) for _ in range(3)]
        stream_usage, stream_headers = streamed(client)
    for usage, headers in results:
        assert usage["completion_tokens"] == ANSWER_TOKENS
        assert "x-sluiceway-cost" not in headers
        # Nothing priced, nothing spent: the tiny budget is never reached.
        assert headers["x-sluiceway-spend"] == "0"
    assert stream_usage is not None
    # Unknown, not free: the events say None, never 0.
    ended = recorder.settled(server)
    assert [e.cost for e in ended] == [None] * 4
    assert all(e.status == 200 for e in ended)
    messages = [r.getMessage() for r in caplog.records if r.name == "sluiceway.costs"]
    # Reported once, as a warning naming the model and what to do; not once a request.
    unpriced = [r for r in caplog.records if r.name == "sluiceway.costs"
                and "no price for model 'mock-gpt'" in r.getMessage()]
    assert len(unpriced) == 1 and unpriced[0].levelno == logging.WARNING
    assert "prices_file" in unpriced[0].getMessage()
    assert len(messages) == 1
    assert server.gateway.calls.policies[0].unpriced == {"mock-gpt"}
    assert stream_headers["x-sluiceway-spend"] == "0"


def test_costs_anthropic_messages_are_priced(start: Start) -> None:
    recorder = Recorder()
    server = start(auth=False, costs={"prices": PRICES}, mock=MOCK,
                   plugins=[("recorder", RecorderPlugin(recorder))])
    body = {"model": "mock-gpt", "max_tokens": 100, "messages": [{"role": "user",
                                                                   "content": "hi"}]}
    response = httpx.post(server.url + "/v1/messages", json=body,
                          headers={"anthropic-version": "2023-06-01"}, timeout=30)
    assert response.status_code == 200, response.text
    usage = response.json()["usage"]
    cost = expected_cost(usage["input_tokens"], usage["output_tokens"])
    assert usage["output_tokens"] == ANSWER_TOKENS
    assert float(response.headers["x-sluiceway-cost"]) == pytest.approx(cost, rel=1e-9)
    with httpx.stream("POST", server.url + "/v1/messages", json={**body, "stream": True},
                      headers={"anthropic-version": "2023-06-01"}, timeout=30) as stream:
        assert stream.status_code == 200
        assert "x-sluiceway-cost" not in stream.headers
        request_id = stream.headers["x-request-id"]
        stream.read()
    assert recorder.end_of(request_id).cost == pytest.approx(cost, rel=1e-12)


# --------------------------------------------------------------------------
# Budgets
# --------------------------------------------------------------------------


def check_refusal(response: httpx.Response, key_id: str) -> None:
    """A 429 budget_exceeded in the OpenAI shape, with a retry-after as long as
    the period's remaining time allows, and x-should-retry: false beyond 120 s."""
    assert response.status_code == 429
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("rate_limit_error", "budget_exceeded")
    assert key_id in error["message"] and "resets in" in error["message"]
    headers = response.headers
    reset = seconds(headers["x-sluiceway-budget-reset"])
    assert 0 < reset <= 86400
    if reset > 120:
        assert headers["retry-after"] == "120" and headers["x-should-retry"] == "false"
    else:  # the last two minutes of the period: worth retrying
        assert int(headers["retry-after"]) == math.ceil(reset)
        assert "x-should-retry" not in headers


def seconds(duration: str) -> float:
    """``1h2m3.5s``, ``20ms`` -> seconds."""
    if duration.endswith("ms"):
        return float(duration[:-2]) / 1000
    total, number = 0.0, ""
    for char in duration:
        if char.isdigit() or char == ".":
            number += char
        else:
            total += float(number) * {"h": 3600, "m": 60, "s": 1}[char]
            number = ""
    return total


def test_costs_budget_stops_a_key_at_the_right_request(start: Start, store: KeyStore) -> None:
    recorder = Recorder()
    capped = store.create("capped")
    free = store.create("free")
    # Two and a half requests' worth: the third starts under budget (and overshoots).
    budget = 2.5 * COST
    server = start(costs={"prices": PRICES, "budgets": {capped.record.id: budget}},
                   mock=MOCK, plugins=[("recorder", RecorderPlugin(recorder))])
    headers = {"authorization": f"Bearer {capped.secret}"}
    url = server.base_url + "/chat/completions"
    body = {"model": "mock-gpt", "messages": USER}
    with httpx.Client(timeout=30, headers=headers) as client:
        responses = [client.post(url, json=body) for _ in range(5)]
        assert [r.status_code for r in responses] == [200, 200, 200, 429, 429]
        for n, response in enumerate(responses[:3], start=1):
            assert float(response.headers["x-sluiceway-spend"]) == pytest.approx(n * COST)
            assert response.headers["x-sluiceway-budget"] == format_dollars(budget)
            assert seconds(response.headers["x-sluiceway-budget-reset"]) > 0
        for response in responses[3:]:
            check_refusal(response, capped.record.id)
            assert float(response.headers["x-sluiceway-spend"]) == pytest.approx(3 * COST)
        # Other routes are not budgeted; errors inside carry the budget headers.
        assert client.get(server.base_url + "/models").status_code == 200
    with sdk(server, free.secret) as other:  # another key has no budget
        assert all("x-sluiceway-budget" not in plain(other)[1] for _ in range(4))
    decided = [(e.policy, e.limit, e.allowed, e.key_id) for e in recorder.decided()]
    assert decided == [("costs", "budget", True, capped.record.id)] * 3 + [
        ("costs", "budget", False, capped.record.id)] * 2
    refused = [e for e in recorder.settled(server) if e.status == 429]
    assert len(refused) == 2 and all(e.cost is None for e in refused)
    assert all(e.error_code == "budget_exceeded" for e in refused)


def test_costs_budget_headers_ride_on_errors_inside(start: Start, store: KeyStore) -> None:
    capped = store.create("capped")
    server = start(costs={"prices": PRICES, "budgets": {capped.record.id: 1.0}},
                   mock={**MOCK, "allow_request_faults": True})
    auth = {"authorization": f"Bearer {capped.secret}"}
    # Refused by the provider after the budget admitted it: the headers ride along.
    response = httpx.post(server.base_url + "/chat/completions",
                          json={"model": "mock-gpt", "messages": USER,
                                "metadata": {"mock_fault": "no-such-fault"}},
                          headers=auth, timeout=30)
    assert response.status_code == 400
    assert response.headers["x-sluiceway-budget"] == "1"
    assert response.headers["x-sluiceway-spend"] == "0"
    # An unknown model is no model call: nothing is read or charged for it.
    response = httpx.post(server.base_url + "/chat/completions",
                          json={"model": "no-such-model", "messages": USER},
                          headers=auth, timeout=30)
    assert (response.status_code, error_code(response)) == (404, "model_not_found")
    assert "x-sluiceway-budget" not in response.headers


def test_costs_streams_are_charged_before_they_end(start: Start) -> None:
    # Auth off: every request is "anonymous", budgeted by default_budget.
    server = start(auth=False, mock=MOCK,
                   costs={"prices": PRICES, "default_budget": 1.5 * COST, "budget_period": "30d"})
    with sdk(server) as client:
        first_usage, first = streamed(client)
        assert first_usage is not None
        assert first["x-sluiceway-spend"] == "0"  # as the stream started
        _, second = streamed(client)
        # Charged before [DONE] reached the client: the next request already sees it.
        assert float(second["x-sluiceway-spend"]) == pytest.approx(COST)
        with pytest.raises(openai.RateLimitError) as refused:
            streamed(client)
        assert refused.value.code == "budget_exceeded"
        assert "anonymous" in refused.value.message
        assert float(refused.value.response.headers["x-sluiceway-spend"]) == pytest.approx(
            2 * COST)
        with pytest.raises(openai.RateLimitError):  # plain answers too
            plain(client)


class BudgetedStrategy:
    """Authenticates ``x-user: <name>=<budget>`` with a ``budget`` attribute."""

    async def authenticate(self, ctx: sluiceway.RequestContext) -> sluiceway.Principal | None:
        value = ctx.header(b"x-user")
        if value is None:
            return None
        name, _, budget = value.partition("=")
        attributes = {"budget": float(budget)} if budget else {}
        return sluiceway.Principal(key_id=name, attributes=attributes)


class BudgetedAuthPlugin:
    @sluiceway.hookimpl
    def register_auth_strategies(
        self, register: Callable[[sluiceway.AuthStrategyType], None]
    ) -> None:
        register(sluiceway.AuthStrategyType("budgeted", lambda options, gateway:
                                            BudgetedStrategy()))


def test_costs_budget_from_the_principal_beats_the_options(start: Start) -> None:
    server = start(
        auth=False, mock=MOCK, plugins=[("budgeted", BudgetedAuthPlugin())],
        costs={"prices": PRICES, "default_budget": 100.0, "budgets": {"ann": 100.0}},
        config={"auth": {"chain": ["budgeted"]}},
    )

    def post(user: str) -> httpx.Response:
        return httpx.post(server.base_url + "/chat/completions",
                          json={"model": "mock-gpt", "messages": USER},
                          headers={"x-user": user}, timeout=30)

    # Her own budget (1.5 requests' worth) wins over the table's 100.
    own = f"ann={1.5 * COST!r}"
    assert [post(own).status_code for _ in range(3)] == [200, 200, 429]
    # Without the attribute, the table's 100 applies to the same spend.
    ann = post("ann")
    assert ann.status_code == 200 and ann.headers["x-sluiceway-budget"] == "100"
    assert float(ann.headers["x-sluiceway-spend"]) == pytest.approx(3 * COST)
    # A budget of 0 refuses at once; a key with no attribute and no entry gets the default.
    zero = post("bob=0")
    assert (zero.status_code, error_code(zero)) == (429, "budget_exceeded")
    assert post("carol").headers["x-sluiceway-budget"] == "100"


def test_costs_budget_refusal_speaks_anthropic_on_messages(start: Start) -> None:
    server = start(auth=False, mock=MOCK, costs={"prices": PRICES, "default_budget": 0})
    response = httpx.post(
        server.url + "/v1/messages", headers={"anthropic-version": "2023-06-01"}, timeout=30,
        json={"model": "mock-gpt", "max_tokens": 100,
              "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 429
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
    assert "Budget exceeded for anonymous" in body["error"]["message"]
    reset = seconds(response.headers["x-sluiceway-budget-reset"])
    # Anthropic's SDK sleeps for any retry-after: at most 60 s, and no retry beyond.
    assert int(response.headers["retry-after"]) <= 60
    if reset > 60:
        assert response.headers["x-should-retry"] == "false"


def test_costs_record_spend_all_keeps_every_keys_total(start: Start, store: KeyStore) -> None:
    first, second = store.create("first"), store.create("second")
    server = start(mock=MOCK, costs={"prices": PRICES, "record_spend": "all"})
    spends = {}
    for created in (first, second, first):
        with sdk(server, created.secret) as client:
            _, headers = plain(client)
        assert "x-sluiceway-budget" not in headers  # kept, not budgeted
        spends.setdefault(created.record.id, []).append(float(headers["x-sluiceway-spend"]))
    assert spends == {first.record.id: pytest.approx([COST, 2 * COST]),
                      second.record.id: pytest.approx([COST])}
