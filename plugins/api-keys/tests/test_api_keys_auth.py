"""The api-keys strategy over a real gateway: headers, refusals, models, limits, secrecy."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from sluiceway_api_keys import KeyStore

from sluiceway.testing import RunningServer

Start = Callable[..., RunningServer]
USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


def sdk(server: RunningServer, key: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=server.base_url, max_retries=0)


def test_api_keys_accepts_bearer_x_api_key_and_api_key_headers(
    start: Start, store: KeyStore
) -> None:
    created = store.create("crm", rpm=100, tpm=50000, max_concurrent=5)
    server = start()
    with sdk(server, created.secret) as client:
        answer = client.chat.completions.create(model="mock-gpt", messages=USER)
        assert answer.choices[0].message.content
        assert {m.id for m in client.models.list()} == {"mock-gpt", "mock-gpt-mini", "other-model"}
        for header in ("x-api-key", "api-key"):  # the SDK without its Bearer header
            only: dict[str, str | openai.Omit] = {
                "Authorization": openai.Omit(), header: created.secret
            }
            answer = client.chat.completions.create(
                model="mock-gpt", messages=USER, extra_headers=only
            )
            assert answer.choices[0].message.content
    expected = {
        "key_id": created.record.id, "name": "crm", "allowed_models": None,
        "attributes": {"rpm": 100, "tpm": 50000, "max_concurrent": 5},
    }
    with httpx.Client(base_url=server.url) as http:
        for headers in (
            {"authorization": f"Bearer {created.secret}"},
            {"authorization": f"bearer {created.secret}"},
            {"x-api-key": created.secret},
            {"api-key": created.secret},
        ):
            response = http.get("/whoami", headers=headers)
            assert (response.status_code, response.json()) == (200, expected), headers


def test_api_keys_missing_key_is_missing_api_key(start: Start) -> None:
    server = start()
    with sdk(server, "unused") as client, pytest.raises(openai.AuthenticationError) as refused:
        client.models.list(extra_headers={"Authorization": openai.Omit()})
    assert (refused.value.status_code, refused.value.code) == (401, "missing_api_key")
    with httpx.Client(base_url=server.url) as http:
        for headers in ({}, {"authorization": "Bearer"}, {"authorization": "Basic abc"}):
            response = http.get("/v1/models", headers=headers)
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "missing_api_key"
        assert http.get("/healthz").status_code == 200  # public routes skip the chain


def test_api_keys_unknown_key_is_invalid_api_key(start: Start) -> None:
    server = start()
    unknown = "sk-sw-" + "A" * 43
    with sdk(server, unknown) as client, pytest.raises(openai.AuthenticationError) as refused:
        client.models.list()
    assert refused.value.status_code == 401
    assert refused.value.code == "invalid_api_key"
    # At most the first characters of the presented key are echoed, never the key.
    assert unknown not in refused.value.message
    assert "sk-sw-AA****" in refused.value.message
    with httpx.Client(base_url=server.url) as http:
        short = http.get("/v1/models", headers={"x-api-key": "hunter2"})
    assert short.json()["error"]["code"] == "invalid_api_key"
    assert "hunter" not in short.text


def test_api_keys_revoked_key_is_api_key_revoked(start: Start, store: KeyStore) -> None:
    created = store.create("crm")
    store.set_enabled(created.record.id, False)
    server = start()
    with sdk(server, created.secret) as client:
        with pytest.raises(openai.AuthenticationError) as refused:
            client.models.list()
    assert refused.value.code == "api_key_revoked"
    assert created.record.id in refused.value.message
    assert created.secret not in refused.value.message


def test_api_keys_expired_key_is_api_key_expired(start: Start, store: KeyStore) -> None:
    expired = store.create("old", expires_at=datetime.now(UTC) - timedelta(seconds=1))
    valid = store.create("new", expires_at=datetime.now(UTC) + timedelta(days=1))
    server = start()
    with sdk(server, expired.secret) as client:
        with pytest.raises(openai.AuthenticationError) as refused:
            client.models.list()
    assert refused.value.code == "api_key_expired"
    with sdk(server, valid.secret) as client:
        assert len(list(client.models.list())) == 3


def test_api_keys_model_globs_limit_models(start: Start, store: KeyStore) -> None:
    created = store.create("crm", models=["mock-gpt*"])
    server = start()
    with sdk(server, created.secret) as client:
        assert sorted(m.id for m in client.models.list()) == ["mock-gpt", "mock-gpt-mini"]
        client.chat.completions.create(model="mock-gpt-mini", messages=USER)
        with pytest.raises(openai.PermissionDeniedError) as denied:
            client.chat.completions.create(model="other-model", messages=USER)
    assert denied.value.status_code == 403
    assert denied.value.code == "model_not_allowed"


def test_api_keys_empty_model_list_allows_no_model(start: Start, store: KeyStore) -> None:
    created = store.create("nothing", models=[])
    server = start()
    with sdk(server, created.secret) as client:
        assert list(client.models.list()) == []
        with pytest.raises(openai.PermissionDeniedError):
            client.chat.completions.create(model="mock-gpt", messages=USER)


def test_api_keys_file_and_logs_never_hold_a_secret(
    start: Start, store: KeyStore, keys_path: Path, caplog: pytest.LogCaptureFixture,
    wait_for: Callable[..., int],
) -> None:
    caplog.set_level(logging.DEBUG)
    created = store.create("crm")
    server = start()
    with sdk(server, created.secret) as client:
        client.chat.completions.create(model="mock-gpt", messages=USER)
    rotated = store.rotate(created.record.id)
    assert wait_for(server, created.secret, 401) == 401
    assert wait_for(server, rotated.secret, 200) == 200
    store.set_enabled(created.record.id, False)
    assert wait_for(server, rotated.secret, 401) == 401
    text = keys_path.read_text()
    logs = caplog.text + "".join(str(record.args) for record in caplog.records)
    assert created.record.id in logs  # key ids are logged...
    for secret in (created.secret, rotated.secret):
        assert secret not in text  # ...secrets never, and the file holds only hashes
        assert secret not in logs
        assert secret[8:20] not in logs
