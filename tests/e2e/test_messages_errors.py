"""Every error class of POST /v1/messages, as the anthropic SDK raises it: auth
(x-api-key and Bearer, through the api-keys plugin), limits (the limits plugin
applies to /v1/messages as to chat completions, and not to count_tokens),
malformed and oversized bodies, unknown models, and a gateway with no capacity.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from sluiceway_api_keys import KeyStore

from sluiceway.testing import RunningServer

HI: list[Any] = [{"role": "user", "content": "hi"}]
Start = Callable[..., RunningServer]


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    key_store = KeyStore(tmp_path / "keys.toml")
    key_store.create("bootstrap")
    return key_store


@pytest.fixture
def start(gateway_factory: Start, store: KeyStore) -> Start:
    """A gateway with mock, api-keys and limits (``limits`` is its table)."""

    def run(**limits: Any) -> RunningServer:
        return gateway_factory({
            "gateway": {"plugins": ["mock", "api-keys", "limits"], "max_body_size": 4096},
            "providers": [{"name": "mock", "type": "mock", "models": ["mock-gpt", "mock-secret"],
                           "max_retries": 0}],
            "auth": {"chain": ["api-keys"],
                     "api-keys": {"keys_file": str(store.path), "reload_interval": "50ms"}},
            "plugin": {"limits": limits},
        })

    return run


def sdk(server: RunningServer, **credentials: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, max_retries=0, **credentials)


def ask(client: anthropic.Anthropic, **kwargs: Any) -> Any:
    kwargs.setdefault("model", "mock-gpt")
    kwargs.setdefault("max_tokens", 20)
    kwargs.setdefault("messages", HI)
    return client.messages.create(**kwargs)


def error_of(caught: pytest.ExceptionInfo[anthropic.APIStatusError]) -> dict[str, Any]:
    """The inner error, after checking the Anthropic shape around it."""
    body = caught.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["request_id"] == caught.value.response.headers["request-id"]
    error: dict[str, Any] = body["error"]
    assert set(error) == {"type", "message"}
    return error


def test_x_api_key_and_bearer_are_accepted(start: Start, store: KeyStore) -> None:
    secret = store.create("app").secret
    server = start()
    with sdk(server, api_key=secret) as by_header, sdk(server, auth_token=secret) as by_bearer:
        assert ask(by_header).content[0].type == "text"
        assert by_bearer.messages.count_tokens(model="mock-gpt", messages=HI).input_tokens > 0
        with by_bearer.messages.stream(model="mock-gpt", max_tokens=5, messages=HI) as stream:
            assert stream.get_final_message().stop_reason == "max_tokens"


def test_bad_or_missing_key_is_401_authentication_error(start: Start) -> None:
    server = start()
    with sdk(server, api_key="sk-wrong") as client, pytest.raises(
        anthropic.AuthenticationError
    ) as caught:
        ask(client)
    assert caught.value.status_code == 401
    assert error_of(caught)["type"] == "authentication_error"
    for path in ("/v1/messages", "/v1/messages/count_tokens"):
        response = httpx.post(server.url + path, json={"model": "mock-gpt", "messages": HI})
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "authentication_error"


def test_model_not_allowed_is_403_permission_error(start: Start, store: KeyStore) -> None:
    secret = store.create("narrow", models=["mock-gpt"]).secret
    server = start()
    with sdk(server, api_key=secret) as client:
        with pytest.raises(anthropic.PermissionDeniedError) as caught:
            ask(client, model="mock-secret")
        assert error_of(caught)["type"] == "permission_error"
        with pytest.raises(anthropic.PermissionDeniedError):
            client.messages.count_tokens(model="mock-secret", messages=HI)


def test_unknown_model_is_404_not_found_error(start: Start, store: KeyStore) -> None:
    secret = store.create("app").secret
    server = start()
    with sdk(server, api_key=secret) as client:
        with pytest.raises(anthropic.NotFoundError) as caught:
            ask(client, model="claude-nope")
        error = error_of(caught)
        assert error == {"type": "not_found_error", "message":
                         "The model 'claude-nope' does not exist or you do not have access to it."}
        with pytest.raises(anthropic.NotFoundError):
            client.messages.count_tokens(model="claude-nope", messages=HI)


def test_malformed_or_invalid_body_is_400_invalid_request_error(
    start: Start, store: KeyStore
) -> None:
    secret = store.create("app").secret
    server = start()
    with sdk(server, api_key=secret) as client:
        with pytest.raises(anthropic.BadRequestError) as caught:
            client.post("/v1/messages", cast_to=object, content=b'{"model": "mock-gpt", ',
                         options={"headers": {"content-type": "application/json"}})
        error = error_of(caught)
        assert error["type"] == "invalid_request_error"
        assert error["message"].startswith("We could not parse the JSON body")
        with pytest.raises(anthropic.BadRequestError) as caught:
            ask(client, extra_body={"temperature": 1.5})
        assert error_of(caught)["message"] == "temperature: Expected `float` <= 1.0"
        with pytest.raises(anthropic.BadRequestError) as caught:
            ask(client, messages=[{"role": "user", "content": "hi"},
                                  {"role": "robot", "content": "beep"}])
        assert error_of(caught)["message"].startswith("messages.1.role: Invalid enum value")
        with pytest.raises(anthropic.BadRequestError) as caught:
            client.post("/v1/messages", cast_to=object, body={"model": "mock-gpt", "messages": HI})
        assert error_of(caught) == {"type": "invalid_request_error",
                                    "message": "max_tokens: Field required"}


def test_oversized_body_is_413_request_too_large(start: Start, store: KeyStore) -> None:
    secret = store.create("app").secret
    server = start()
    with sdk(server, api_key=secret) as client, pytest.raises(
        anthropic.ContentTooLargeError
    ) as caught:
        ask(client, messages=[{"role": "user", "content": "x" * 5000}])
    assert caught.value.status_code == 413
    assert error_of(caught)["type"] == "request_too_large"


@pytest.mark.parametrize(("window", "retry_after", "should_retry"), [
    ("10m", "60", "false"),  # the real wait is longer than the SDK may be told
    ("5s", None, None),
])
def test_rate_limited_is_429_with_a_short_retry_after(
    start: Start, store: KeyStore, window: str, retry_after: str | None,
    should_retry: str | None,
) -> None:
    secret = store.create("one-a-window", rpm=1).secret
    server = start(window=window)
    with sdk(server, api_key=secret) as client:
        ask(client)
        with pytest.raises(anthropic.RateLimitError) as caught:
            ask(client)
    assert error_of(caught)["type"] == "rate_limit_error"
    headers = caught.value.response.headers
    assert 0 < float(headers["retry-after"]) <= 60
    assert 0 < int(headers["retry-after-ms"]) <= 60_000
    if retry_after is not None:
        assert headers["retry-after"] == retry_after
    assert headers.get("x-should-retry") == should_retry
    assert headers["x-ratelimit-remaining-requests"] == "0"


def test_count_tokens_is_not_a_model_call(start: Start, store: KeyStore) -> None:
    secret = store.create("one", rpm=1).secret
    server = start(window="10m")
    with sdk(server, api_key=secret) as client:
        for _ in range(3):
            client.messages.count_tokens(model="mock-gpt", messages=HI)
        ask(client)
        with pytest.raises(anthropic.RateLimitError):
            ask(client)
        with pytest.raises(anthropic.RateLimitError), client.messages.stream(
            model="mock-gpt", max_tokens=5, messages=HI
        ) as stream:
            stream.until_done()
        assert client.messages.count_tokens(model="mock-gpt", messages=HI).input_tokens > 0


def test_no_capacity_is_529_overloaded_error(gateway_factory: Start) -> None:
    server = gateway_factory({
        "gateway": {"plugins": ["mock"]},
        "providers": [{"name": "mock", "type": "mock", "models": ["mock-gpt"], "max_retries": 0,
                       "error_rate": 1.0, "cooldown_failures": 1, "cooldown": "10m"}],
    })
    with sdk(server, api_key="x") as client:
        with pytest.raises(anthropic.InternalServerError) as failed:
            ask(client)
        assert (failed.value.status_code, error_of(failed)["type"]) == (502, "api_error")
        # The only deployment is resting now: no capacity, which Anthropic calls overloaded.
        for stream in (False, True):
            with pytest.raises(anthropic.OverloadedError) as caught:
                ask(client, stream=stream)
            assert caught.value.status_code == 529
            assert error_of(caught)["type"] == "overloaded_error"
            headers = caught.value.response.headers
            assert headers["retry-after"] == "60"
            assert headers["x-should-retry"] == "false"


def test_wrong_method_is_405_in_anthropic_shape(gateway_factory: Start) -> None:
    server = gateway_factory({"gateway": {"plugins": ["mock"]},
                              "providers": [{"name": "mock", "type": "mock"}]})
    response = httpx.get(server.url + "/v1/messages")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert response.headers["request-id"] == response.headers["x-request-id"]


def test_untranslatable_content_is_a_400_not_a_500(start: Start, store: KeyStore) -> None:
    created = store.create("crm")
    server = start()
    for content in ([{"type": "text", "text": 1}], [{"type": "text", "text": None}]):
        for path in ("/v1/messages", "/v1/messages/count_tokens"):
            response = httpx.post(
                server.url + path,
                headers={"x-api-key": created.secret, "anthropic-version": "2023-06-01"},
                json={"model": "mock-gpt", "max_tokens": 10,
                      "messages": [{"role": "user", "content": content}]},
            )
            assert response.status_code == 400, response.text
            error = response.json()
            assert (error["type"], error["error"]["type"]) == ("error", "invalid_request_error")
