"""Injected faults (by rate and by request) and the validation of the options."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest
from sluiceway_mock import MockOptions

import sluiceway
from sluiceway.config import validate_options
from sluiceway.testing import RunningServer

MockGateway = Callable[..., RunningServer]

HELLO: list[dict[str, Any]] = [{"role": "user", "content": "Hello."}]


def _ask(client: openai.OpenAI, **kwargs: Any) -> Any:
    kwargs.setdefault("model", "mock-gpt")
    kwargs.setdefault("messages", HELLO)
    return client.chat.completions.create(**kwargs)


def _sdk(server: RunningServer, **kwargs: Any) -> openai.OpenAI:
    return openai.OpenAI(api_key="x", base_url=server.base_url, max_retries=0, **kwargs)


def _drain(stream: Iterator[Any]) -> list[str]:
    """Read a stream until it ends or fails; return the content seen."""
    seen: list[str] = []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            seen.append(chunk.choices[0].delta.content)
    return seen


# -- by rate ------------------------------------------------------------------


def test_error_rate_fails_before_any_output(mock_gateway: MockGateway) -> None:
    with _sdk(mock_gateway(error_rate=1.0)) as client:
        with pytest.raises(openai.InternalServerError) as caught:
            _ask(client)
        assert caught.value.status_code == 502
        with pytest.raises(openai.InternalServerError):
            _ask(client, stream=True)


def test_rate_limit_rate_refuses_with_retry_after(mock_gateway: MockGateway) -> None:
    with _sdk(mock_gateway(rate_limit_rate=1, rate_limit_retry_after="3s")) as client:
        for stream in (False, True):
            with pytest.raises(openai.RateLimitError) as caught:
                _ask(client, stream=stream)
            assert caught.value.response.headers["retry-after"] == "3"
            assert caught.value.code == "rate_limit_exceeded"


def test_stall_rate_delays_the_first_token(mock_gateway: MockGateway) -> None:
    with _sdk(mock_gateway(stall_rate=1, stall="30s"), timeout=0.5) as client:
        with pytest.raises(openai.APITimeoutError):
            _ask(client)
        with pytest.raises(openai.APITimeoutError):
            _drain(_ask(client, stream=True))
    with _sdk(mock_gateway(stall_rate=1, stall="10ms")) as client:
        assert _ask(client).choices[0].message.content


def test_drop_rate_fails_a_stream_halfway_not_silently(mock_gateway: MockGateway) -> None:
    with _sdk(mock_gateway(drop_rate=1.0)) as client:
        seen: list[str] = []
        with pytest.raises(openai.APIError) as caught:
            for chunk in _ask(client, stream=True):
                if chunk.choices and chunk.choices[0].delta.content:
                    seen.append(chunk.choices[0].delta.content)
        assert len(seen) == 12  # half of the natural 24 tokens arrived first
        assert "dropped" in caught.value.message
        with pytest.raises(openai.InternalServerError):
            _ask(client)


def test_fault_draws_are_seeded_and_repeatable(mock_gateway: MockGateway) -> None:
    def outcomes(seed: int) -> list[bool]:
        with _sdk(mock_gateway(error_rate=0.5, seed=seed)) as client:
            results = []
            for _ in range(24):
                try:
                    _ask(client)
                    results.append(True)
                except openai.InternalServerError:
                    results.append(False)
            return results

    first = outcomes(3)
    assert first == outcomes(3)
    assert True in first and False in first
    assert first != outcomes(4)


def test_zero_rates_never_fail(mock_gateway: MockGateway) -> None:
    with _sdk(mock_gateway(error_rate=0, drop_rate=0.0)) as client:
        for _ in range(20):
            assert _ask(client).choices[0].finish_reason == "stop"


# -- by request -----------------------------------------------------------------


@pytest.mark.parametrize("via", ["metadata", "extra_body"])
@pytest.mark.parametrize("stream", [False, True])
def test_mock_fault_forces_error_and_rate_limit(
    server: RunningServer, via: str, stream: bool
) -> None:
    def force(fault: str) -> dict[str, Any]:
        if via == "metadata":
            return {"metadata": {"mock_fault": fault}}
        return {"extra_body": {"metadata": {"mock_fault": fault}}}

    with _sdk(server) as client:
        with pytest.raises(openai.InternalServerError) as failed:
            _drain(_ask(client, stream=stream, **force("error")))
        assert failed.value.status_code == 502
        with pytest.raises(openai.RateLimitError):
            _drain(_ask(client, stream=stream, **force("rate_limit")))
        assert _ask(client).choices[0].message.content  # no fault unless asked


def test_mock_fault_forces_a_drop(server: RunningServer) -> None:
    with _sdk(server) as client:
        with pytest.raises(openai.APIError) as caught:
            _drain(_ask(client, stream=True, metadata={"mock_fault": "drop"}))
        assert not isinstance(caught.value, openai.APIStatusError)  # failed mid-stream, after 200
        with pytest.raises(openai.InternalServerError):
            _ask(client, metadata={"mock_fault": "drop"})


def test_mock_fault_forces_a_stall(mock_gateway: MockGateway) -> None:
    server = mock_gateway(allow_request_faults=True, stall="30s")
    with _sdk(server, timeout=0.5) as client:
        with pytest.raises(openai.APITimeoutError):
            _ask(client, metadata={"mock_fault": "stall"})
        assert _ask(client).choices[0].message.content


def test_mock_fault_is_ignored_unless_allowed(mock_gateway: MockGateway) -> None:
    with _sdk(mock_gateway()) as client:
        assert _ask(client, metadata={"mock_fault": "error"}).choices[0].message.content


def test_unknown_mock_fault_is_a_400(server: RunningServer) -> None:
    with _sdk(server) as client, pytest.raises(openai.BadRequestError) as caught:
        _ask(client, metadata={"mock_fault": "meteor"})
    assert caught.value.param == "metadata.mock_fault"


# -- configuration --------------------------------------------------------------


def _build(**options: Any) -> sluiceway.Gateway:
    table = {"name": "mock", "type": "mock", "models": ["m"], **options}
    return sluiceway.create_app({"gateway": {"plugins": ["mock"]}, "providers": [table]})


@pytest.mark.parametrize(
    ("options", "key", "message"),
    [
        ({"error_rate": 2}, "providers[0].error_rate", "<= 1.0"),
        ({"drop_rate": -0.1}, "providers[0].drop_rate", ">= 0.0"),
        ({"stall_rate": "often"}, "providers[0].stall_rate", "expected `float`"),
        ({"ttft": "soon"}, "providers[0].ttft", "duration"),
        ({"response_tokens": -1}, "providers[0].response_tokens", ">= 0"),
        ({"reasoning_models": "mock-reasoner"}, "providers[0].reasoning_models", "array"),
        ({"latency": "5ms"}, "providers[0].latency", "unknown key"),
    ],
)
def test_bad_options_are_config_errors(options: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(sluiceway.ConfigError) as caught:
        _build(**options)
    assert caught.value.key == key
    assert key in str(caught.value) and message in str(caught.value)


def test_unknown_key_error_lists_the_options() -> None:
    with pytest.raises(sluiceway.ConfigError, match="error_rate") as caught:
        _build(eror_rate=0.5)
    assert caught.value.key == "providers[0].eror_rate"


def test_options_parse_durations_and_defaults() -> None:
    options = validate_options(
        {"ttft": "250ms", "token_delay": 0.01, "stall": "2m", "rate_limit_retry_after": "1h"},
        MockOptions, source="plugins.toml", key="providers[0]",
    )
    parsed = [options.ttft, options.token_delay, options.stall, options.rate_limit_retry_after]
    assert [float(value) for value in parsed] == [0.25, 0.01, 120.0, 3600.0]
    defaults = MockOptions()
    assert defaults.response_tokens == 24
    assert [float(defaults.stall), float(defaults.rate_limit_retry_after)] == [30.0, 1.0]
    assert not defaults.allow_request_faults and defaults.reasoning_models == []
    assert _build(ttft="5ms").registry.provider_types["mock"].plugin == "mock"
