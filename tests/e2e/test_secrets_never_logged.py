"""No secret reaches a log, across the whole stack: a real ``sluiceway serve``
process at debug level, logging JSON lines, with its access log and request log
on, api-keys and jwt auth, limits, an upstream that needs its own key and fails
in every way it can; then every line it wrote is searched for every secret it
was given or shown."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import jwt
import msgspec
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from sluiceway_api_keys import KeyStore

from sluiceway.testing import GatewayProcess
from sluiceway.testing.fakes import FakeOpenAI
from sluiceway.testing.faults import Close, Garbage, Status

UPSTREAM_KEY = "sk-upstream-0123456789abcdefSECRET"
JWT_SECRET = "jwt-hmac-secret-that-is-long-enough-0123456789"
Processes = Callable[..., list[GatewayProcess]]


def config_text(upstream: str, keys_file: Path) -> str:
    return f"""
[gateway]
plugins = ["openai", "api-keys", "jwt", "limits", "request-log"]

[server]
access_log = true

[[providers]]
name = "up"
type = "openai"
base_url = "{upstream}"
api_key = "env:SLUICEWAY_TEST_UPSTREAM_KEY"
max_retries = 0
models = [{{ name = "gpt-test", upstream = "fake-model" }}]

[auth]
chain = ["jwt", "api-keys"]  # jwt claims only JWT-shaped tokens

[auth.api-keys]
keys_file = "{keys_file}"

[auth.jwt]
secret = "env:SLUICEWAY_TEST_JWT_SECRET"

[plugin.limits]
default_rpm = 1000
"""


def test_no_secret_in_any_log_line(
    tmp_path: Path, fake_openai: Callable[..., FakeOpenAI], gateway_processes: Processes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLUICEWAY_TEST_UPSTREAM_KEY", UPSTREAM_KEY)
    monkeypatch.setenv("SLUICEWAY_TEST_JWT_SECRET", JWT_SECRET)
    upstream = fake_openai(chunks=3)
    keys = KeyStore(tmp_path / "keys.toml")
    good = keys.create("crm", rpm=5)
    revoked = keys.create("old")
    keys.set_enabled(revoked.record.id, False)
    config = tmp_path / "plugins.toml"
    config.write_text(config_text(upstream.url, tmp_path / "keys.toml"), encoding="utf-8")
    (gateway,) = gateway_processes(config, 1, args=["--debug", "--log-format", "json"])

    token = jwt.encode({"sub": "svc", "exp": int(time.time()) + 600}, JWT_SECRET,
                       algorithm="HS256")
    forged = jwt.encode({"sub": "svc", "exp": int(time.time()) + 600}, "x" * 48,
                        algorithm="HS256")
    near_miss = good.secret[:-4] + "abcd"  # a key one typo away from a real one
    secrets = [UPSTREAM_KEY, JWT_SECRET, good.secret, revoked.secret, token, forged, near_miss]

    client = openai.OpenAI(base_url=gateway.base_url, api_key=good.secret, max_retries=0)
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
    assert client.chat.completions.create(model="gpt-test", messages=messages).choices
    assert list(client.chat.completions.create(model="gpt-test", messages=messages,
                                               stream=True))
    upstream.script(Status(500), Garbage(), Close())  # the upstream fails three ways
    for _ in range(3):
        with pytest.raises(openai.InternalServerError):  # 502
            client.chat.completions.create(model="gpt-test", messages=messages)
    with pytest.raises(openai.RateLimitError):  # rpm = 5 was used up above
        client.chat.completions.create(model="gpt-test", messages=messages)
    for secret in (revoked.secret, near_miss, forged, "not-even-a-key"):
        bad = openai.OpenAI(base_url=gateway.base_url, api_key=secret, max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
    as_service = openai.OpenAI(base_url=gateway.base_url, api_key=token, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        as_service.chat.completions.create(model="no-such-model", messages=messages)
    # A body that is not JSON is refused before it is a model call, so even the
    # rate-limited key gets the 400 that says what is wrong.
    for headers, status in (({"x-api-key": near_miss}, 401),
                            ({"authorization": f"Bearer {token}"}, 400),
                            ({"api-key": good.secret}, 400)):
        response = httpx.post(gateway.base_url + "/chat/completions", content=b"{not json",
                              headers={**headers, "content-type": "application/json"})
        assert response.status_code == status

    # The upstream saw its key: the gateway did use it.
    assert all(r.headers.get("authorization") == f"Bearer {UPSTREAM_KEY}"
               for r in upstream.requests)
    assert gateway.stop() == 0
    log = gateway.log.read_text()
    lines = [msgspec.json.decode(line) for line in log.splitlines()]  # every one is JSON
    assert {line["level"] for line in lines} >= {"DEBUG", "INFO"}  # debug really was on
    assert any("/v1/chat/completions" in line.get("message", "") for line in lines)  # access
    requests = [line for line in lines if line.get("event") == "request"]  # request-log
    assert len(requests) >= 10 and {r["status"] for r in requests} >= {200, 401, 429, 502}
    for secret in secrets:
        assert secret not in log
        assert secret[-16:] not in log  # nor a recognisable tail of one
