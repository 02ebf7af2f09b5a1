"""Extra headers and query parameters, per provider and per key, as OpenAI-compatible
servers need them (OpenRouter's attribution headers, an organisation per key, a
gateway in front of vLLM that wants a query token). The real openai SDK -> a real
gateway -> FakeOpenAI, which records each request's headers and query."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai
import pytest

from sluiceway import ConfigError, create_app
from sluiceway.plugins.info import describe
from sluiceway.testing import RunningServer
from sluiceway.testing.fakes import FakeOpenAI

StartFake = Callable[..., FakeOpenAI]
StartGateway = Callable[..., RunningServer]


def _config(fake: FakeOpenAI, **options: Any) -> dict[str, Any]:
    provider = {"name": "up", "type": "openai", "base_url": fake.url, "max_retries": 0,
                "models": ["m"], **options}
    return {"gateway": {"plugins": ["openai"]}, "providers": [provider]}


def _client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="client-key", max_retries=0)


def test_provider_headers_and_query_go_with_every_request(
    fake_openai: StartFake, gateway_factory: StartGateway, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLUICEWAY_TEST_QUERY_TOKEN", "qt-secret")
    fake = fake_openai()
    server = gateway_factory(_config(
        fake, api_key="sk-up",
        headers={"HTTP-Referer": "https://app.example", "X-Title": "My app"},
        query={"token": "env:SLUICEWAY_TEST_QUERY_TOKEN", "tier": "free"},
    ))
    with _client(server) as client:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        list(client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True))
    whole, streamed = fake.requests
    for request in (whole, streamed):
        assert request.headers["http-referer"] == "https://app.example"
        assert request.headers["x-title"] == "My app"
        assert request.headers["authorization"] == "Bearer sk-up"
        assert request.query == {"token": "qt-secret", "tier": "free"}
        assert request.path == "/v1/chat/completions"
    assert streamed.headers["accept"] == "text/event-stream"


def test_each_key_sends_its_own_headers_and_query_over_the_providers(
    fake_openai: StartFake, gateway_factory: StartGateway,
) -> None:
    fake = fake_openai()
    server = gateway_factory(_config(
        fake, headers={"OpenAI-Organization": "org-shared", "X-Title": "app"},
        query={"region": "eu"},
        api_keys=[
            {"key": "sk-a", "name": "a", "models": ["m"],
             "headers": {"OpenAI-Organization": "org-a", "OpenAI-Project": "proj-a"},
             "query": {"region": "us"}},
        ],
    ))
    with _client(server) as client:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    (request,) = fake.requests
    assert request.headers["openai-organization"] == "org-a"
    assert request.headers["openai-project"] == "proj-a"
    assert request.headers["x-title"] == "app"
    assert request.headers["authorization"] == "Bearer sk-a"
    assert request.query == {"region": "us"}


def test_header_values_never_show_and_bad_headers_are_config_errors(
    fake_openai: StartFake, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLUICEWAY_TEST_HEADER_SECRET", "hs-secret")
    fake = fake_openai()
    app = create_app(_config(fake, headers={"X-Api-Token": "env:SLUICEWAY_TEST_HEADER_SECRET",
                                            "X-Plain": "literal-secret"}))
    shown = repr(describe(app))
    assert "hs-secret" not in shown and "literal-secret" not in shown
    with pytest.raises(ConfigError, match="not a valid header name"):
        create_app(_config(fake, headers={"Bad Header": "x"}))
    with pytest.raises(ConfigError, match="spans lines"):
        create_app(_config(fake, headers={"X-Injected": "a\r\nX-Evil: 1"}))
    with pytest.raises(ConfigError, match="not a valid header name"):
        create_app(_config(fake, api_keys=[{"key": "sk", "headers": {"a:b": "x"}}]))
