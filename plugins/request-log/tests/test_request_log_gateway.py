"""The request log in a real gateway on a socket, through the logging system:
the fields of each request's line, the DEBUG trace, the slow-request warning."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from sluiceway.testing import RunningServer
from sluiceway.testing.fakes import FakeOpenAI
from sluiceway.testing.faults import Status

Line = dict[str, Any]
Start = Callable[..., RunningServer]
Logged = Callable[[], list[Line]]
USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]

# Every request line has exactly these keys (and "client" unless turned off).
REQUEST_KEYS = {
    "ts", "level", "event", "request_id", "key_id", "method", "path", "route", "model",
    "provider", "deployment", "status", "error_type", "error_code", "duration_ms", "ttft_ms",
    "upstream_ms", "overhead_ms", "attempts", "retries", "fallbacks", "prompt_tokens",
    "completion_tokens", "cached_tokens", "reasoning_tokens", "cost", "stream", "disconnected",
    "answered_by",
}


def sdk(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(api_key="unused", base_url=server.base_url, max_retries=0)


def requests(lines: list[Line], event: str = "request") -> dict[str, Line]:
    """The lines of one kind, by request id (each id at most once)."""
    chosen = [line for line in lines if line["event"] == event]
    by_id = {line["request_id"]: line for line in chosen}
    assert len(by_id) == len(chosen), f"two {event} lines for one request"
    return by_id


def test_a_plain_request_is_one_line_with_the_usage_the_client_saw(
    start: Start, logged: Logged
) -> None:
    server = start()
    with sdk(server) as client:
        raw = client.chat.completions.with_raw_response.create(model="mock-gpt", messages=USER)
        answer = raw.parse()
    server.stop()

    (line,) = logged()
    assert set(line) == REQUEST_KEYS | {"client"}
    assert line["request_id"] == raw.headers["x-request-id"]
    assert line["ts"].endswith("Z") and "T" in line["ts"]
    assert (line["level"], line["event"]) == ("info", "request")
    assert (line["method"], line["path"], line["route"]) == ("POST", "/v1/chat/completions", "chat")
    assert (line["model"], line["provider"], line["deployment"]) == ("mock-gpt", "mock",
                                                                   "mock/mock-gpt")
    assert (line["status"], line["error_type"], line["error_code"]) == (200, None, None)
    assert answer.usage is not None
    assert line["prompt_tokens"] == answer.usage.prompt_tokens
    assert line["completion_tokens"] == answer.usage.completion_tokens
    assert line["reasoning_tokens"] is None
    assert (line["attempts"], line["retries"], line["fallbacks"]) == (1, 0, 0)
    assert line["stream"] is False and line["disconnected"] is False
    assert line["ttft_ms"] is None  # only streams have a first token
    assert line["duration_ms"] > 0 and line["upstream_ms"] > 0
    assert line["overhead_ms"] == pytest.approx(line["duration_ms"] - line["upstream_ms"], abs=0.01)
    assert line["key_id"] is None  # auth is off
    assert line["client"] == "127.0.0.1"


def test_a_stream_has_its_time_to_first_token_and_its_usage(start: Start, logged: Logged) -> None:
    server = start()
    with sdk(server) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="mock-reasoner", messages=USER, stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(raw.parse())
    server.stop()

    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens_details is not None
    (line,) = logged()
    assert line["request_id"] == raw.headers["x-request-id"]
    assert line["stream"] is True and line["status"] == 200
    assert (line["model"], line["provider"]) == ("mock-reasoner", "mock")
    assert line["prompt_tokens"] == usage.prompt_tokens
    assert line["completion_tokens"] == usage.completion_tokens
    assert line["reasoning_tokens"] == usage.completion_tokens_details.reasoning_tokens > 0
    assert line["ttft_ms"] is not None
    assert 0 < line["ttft_ms"] <= line["duration_ms"]


def test_errors_are_logged_with_their_status_type_and_code(start: Start, logged: Logged) -> None:
    server = start(mock={"max_retries": 0})
    url = server.base_url + "/chat/completions"
    sent = {
        "unknown model": httpx.post(url, json={"model": "nope", "messages": USER}),
        "not json": httpx.post(url, content=b"{nope", headers={"content-type": "application/json"}),
        "no route": httpx.get(server.url + "/v1/nowhere"),
        "upstream": httpx.post(url, json={"model": "mock-gpt", "messages": USER,
                                          "metadata": {"mock_fault": "error"}}),
        "rate limited upstream": httpx.post(url, json={"model": "mock-gpt", "messages": USER,
                                                       "metadata": {"mock_fault": "rate_limit"}}),
    }
    server.stop()

    by_id = requests(logged())
    assert len(by_id) == len(sent)
    line = {what: by_id[response.headers["x-request-id"]] for what, response in sent.items()}
    for what, response in sent.items():
        assert line[what]["status"] == response.status_code, what
        assert line[what]["error_type"] == response.json()["error"]["type"], what
        assert line[what]["error_code"] == response.json()["error"]["code"], what
    assert line["unknown model"]["status"] == 404
    assert line["unknown model"]["error_code"] == "model_not_found"
    assert line["unknown model"]["attempts"] == 0
    assert line["not json"]["status"] == 400
    assert line["no route"]["route"] is None and line["no route"]["path"] == "/v1/nowhere"
    upstream = line["upstream"]
    assert (upstream["status"], upstream["provider"], upstream["model"]) == (502, "mock",
                                                                           "mock-gpt")
    assert (upstream["attempts"], upstream["retries"]) == (1, 0)
    assert upstream["prompt_tokens"] is None and upstream["upstream_ms"] is not None
    assert line["rate limited upstream"]["status"] == 429


def test_retries_and_fallbacks_are_counted(
    gateway_factory: Start, fake_openai: Callable[..., FakeOpenAI], logged: Logged
) -> None:
    upstream = fake_openai(chunks=3)
    server = gateway_factory({
        "gateway": {"plugins": ["mock", "openai", "request-log"]},
        "providers": [
            {"name": "up", "type": "openai", "base_url": upstream.url, "api_key": "sk-up-secret",
             "max_retries": 1, "models": [{"name": "gpt-test", "upstream": "fake-model"}]},
            {"name": "mock", "type": "mock", "models": ["mock-gpt"]},
        ],
        "aliases": [{"name": "smart", "targets": ["up/gpt-test", "mock/mock-gpt"],
                     "max_retries": 0}],
    })
    with sdk(server) as client:
        upstream.script(Status(500))  # fails once, then answers
        retried = client.chat.completions.with_raw_response.create(model="gpt-test",
                                                                   messages=USER)
        upstream.script(Status(503))  # the alias falls over to the mock
        fell_over = client.chat.completions.with_raw_response.create(model="smart",
                                                                     messages=USER)
        upstream.script(Status(500), Status(500))  # both tries fail
        with pytest.raises(openai.InternalServerError) as gave_up:
            client.chat.completions.create(model="gpt-test", messages=USER, stream=True)
    server.stop()

    by_id = requests(logged())
    line = by_id[retried.headers["x-request-id"]]
    assert (line["status"], line["provider"], line["deployment"]) == (200, "up", "up/fake-model")
    assert (line["attempts"], line["retries"], line["fallbacks"]) == (2, 1, 0)
    assert line["prompt_tokens"] == retried.parse().usage.prompt_tokens  # type: ignore[union-attr]
    line = by_id[fell_over.headers["x-request-id"]]
    assert (line["status"], line["model"], line["provider"]) == (200, "smart", "mock")
    assert line["deployment"] == "mock/mock-gpt"
    assert (line["attempts"], line["retries"], line["fallbacks"]) == (2, 0, 1)
    line = by_id[gave_up.value.response.headers["x-request-id"]]
    assert (line["status"], line["error_type"], line["stream"]) == (502, "upstream_error", True)
    assert (line["attempts"], line["retries"], line["fallbacks"]) == (2, 1, 0)
    assert line["ttft_ms"] is None  # nothing reached the client


def test_debug_lines_trace_each_step_only_when_the_logger_is_at_debug(
    start: Start, logged: Logged, caplog: pytest.LogCaptureFixture
) -> None:
    server = start()
    with sdk(server) as client:
        quiet = client.chat.completions.with_raw_response.create(model="mock-gpt", messages=USER)
        caplog.set_level(logging.DEBUG, logger="sluiceway.requests")
        traced = client.chat.completions.with_raw_response.create(
            model="mock-gpt", messages=USER, stream=True)
        list(traced.parse())
    server.stop()

    lines = logged()
    quiet_lines = [line for line in lines if line["request_id"] == quiet.headers["x-request-id"]]
    assert [line["event"] for line in quiet_lines] == ["request"]
    trace = [line for line in lines if line["request_id"] == traced.headers["x-request-id"]]
    assert [line["event"] for line in trace] == [
        "request_start", "upstream_call", "upstream_response", "first_token", "request_end",
        "request",
    ]
    assert [line["level"] for line in trace] == ["debug"] * 5 + ["info"]
    start_line, call, response, first, end, _ = trace
    assert (start_line["method"], start_line["route"]) == ("POST", "chat")
    assert start_line["client"] == "127.0.0.1"
    assert (call["provider"], call["deployment"], call["attempt"], call["stream"]) == (
        "mock", "mock/mock-gpt", 1, True)
    assert (response["status"], response["next"], response["error"]) == (200, "done", None)
    assert response["latency_ms"] >= 0
    assert first["ttft_ms"] > 0
    assert end["status"] == 200


def test_debug_lines_show_auth_and_policy_decisions(
    gateway_factory: Start, logged: Logged, caplog: pytest.LogCaptureFixture, tmp_path: Any
) -> None:
    from sluiceway_api_keys import KeyStore

    keys = KeyStore(tmp_path / "keys.toml")
    good = keys.create("crm", rpm=1)
    server = gateway_factory({
        "gateway": {"plugins": ["mock", "api-keys", "limits", "request-log"]},
        "providers": [{"name": "mock", "type": "mock", "models": ["mock-gpt"]}],
        "auth": {"chain": ["api-keys"], "api-keys": {"keys_file": str(tmp_path / "keys.toml")}},
    })
    caplog.set_level(logging.DEBUG, logger="sluiceway.requests")
    response = httpx.post(server.base_url + "/chat/completions",
                          json={"model": "mock-gpt", "messages": USER},
                          headers={"authorization": f"Bearer {good.secret}"})
    limited = httpx.post(server.base_url + "/chat/completions",
                         json={"model": "mock-gpt", "messages": USER},
                         headers={"authorization": f"Bearer {good.secret}"})
    refused = httpx.get(server.base_url + "/models", headers={"authorization": "Bearer sk-nope"})
    server.stop()

    lines = logged()
    trace = [line for line in lines if line["request_id"] == response.headers["x-request-id"]]
    auth = next(line for line in trace if line["event"] == "auth")
    assert (auth["allowed"], auth["key_id"]) == (True, good.record.id)
    limit = next(line for line in trace if line["event"] == "limit")
    assert (limit["policy"], limit["allowed"], limit["key_id"]) == ("limits", True, good.record.id)
    assert trace[-1]["key_id"] == good.record.id
    trace = [line for line in lines if line["request_id"] == limited.headers["x-request-id"]]
    limit = next(line for line in trace if line["event"] == "limit")
    assert (limit["policy"], limit["allowed"], limit["limit"]) == ("limits", False, "requests")
    assert (trace[-1]["status"], trace[-1]["error_code"]) == (429, "rate_limit_exceeded")
    assert "upstream_call" not in [line["event"] for line in trace]
    trace = [line for line in lines if line["request_id"] == refused.headers["x-request-id"]]
    auth = next(line for line in trace if line["event"] == "auth")
    assert (auth["allowed"], auth["code"]) == (False, "invalid_api_key")
    assert (trace[-1]["status"], trace[-1]["error_code"]) == (401, "invalid_api_key")


def test_a_slow_request_also_gets_a_warning(start: Start, logged: Logged) -> None:
    server = start({"slow_request": "20ms"}, mock={"ttft": "100ms"})
    with sdk(server) as client:
        raw = client.chat.completions.with_raw_response.create(model="mock-gpt", messages=USER)
    server.stop()

    request, warning = logged()
    assert request["event"] == "request"
    assert (warning["event"], warning["level"]) == ("slow_request", "warning")
    assert warning["request_id"] == request["request_id"] == raw.headers["x-request-id"]
    assert warning["slow_request_ms"] == 20.0
    assert warning["duration_ms"] == request["duration_ms"] >= 100
    assert set(warning) == set(request) | {"slow_request_ms"}


def test_with_the_logger_at_warning_only_slow_requests_are_written(
    start: Start, logged: Logged, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sluiceway.requests")
    slow = start({"slow_request": "20ms"}, mock={"ttft": "100ms"})
    fast = start()  # the default threshold, 30 s
    for server in (slow, fast):
        with sdk(server) as client:
            client.chat.completions.create(model="mock-gpt", messages=USER)
        server.stop()

    assert [(line["event"], line["level"]) for line in logged()] == [("slow_request", "warning")]


def test_the_client_address_can_be_left_out(
    start: Start, logged: Logged, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="sluiceway.requests")
    server = start({"log_client_address": False})
    with sdk(server) as client:
        client.chat.completions.create(model="mock-gpt", messages=USER)
    server.stop()

    lines = logged()
    assert {line["event"] for line in lines} >= {"request_start", "request"}
    assert all("client" not in line for line in lines)
    assert all("127.0.0.1" not in str(line) for line in lines)


def test_a_client_that_hangs_up_mid_stream_is_logged_as_disconnected(
    start: Start, logged: Logged
) -> None:
    server = start(mock={"token_delay": "20ms", "response_tokens": 200})
    with httpx.stream("POST", server.base_url + "/chat/completions",
                      json={"model": "mock-gpt", "messages": USER, "stream": True}) as response:
        request_id = response.headers["x-request-id"]
        next(response.iter_lines())  # the first event, then hang up
    server.stop()

    (line,) = logged()
    assert line["request_id"] == request_id
    assert (line["status"], line["stream"], line["disconnected"]) == (200, True, True)
    assert line["ttft_ms"] is not None


def test_anthropic_messages_are_logged_like_chat(start: Start, logged: Logged) -> None:
    server = start()
    response = httpx.post(server.url + "/v1/messages", json={
        "model": "mock-gpt", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]})
    server.stop()

    (line,) = logged()
    assert (line["status"], line["route"], line["path"]) == (200, "messages", "/v1/messages")
    assert line["request_id"] == response.headers["x-request-id"]
    usage = response.json()["usage"]
    assert (line["prompt_tokens"], line["completion_tokens"]) == (usage["input_tokens"],
                                                                  usage["output_tokens"])


def test_a_stream_that_fails_after_it_started_keeps_its_200(start: Start, logged: Logged) -> None:
    server = start()
    with sdk(server) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="mock-gpt", messages=USER, stream=True, metadata={"mock_fault": "drop"})
        with pytest.raises(openai.APIError):
            list(raw.parse())
    server.stop()

    (line,) = logged()
    assert line["request_id"] == raw.headers["x-request-id"]
    assert (line["status"], line["stream"], line["disconnected"]) == (200, True, False)
    assert line["ttft_ms"] is not None
    # ... and says it failed, and how.
    assert line["error_type"] is not None and line["error_code"] is not None
