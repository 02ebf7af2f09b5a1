"""No secret reaches the request log: a full stack (api-keys and jwt auth, limits,
an ``openai`` upstream with its own key that fails in several ways) with the
log at DEBUG, through the logging system and to a file. Every line written must
parse as JSON, and none may hold a client key, the upstream key, a token or the
JWT secret, nor a recognisable part of one."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from sluiceway_api_keys import KeyStore

from sluiceway.testing import RunningServer
from sluiceway.testing.fakes import FakeOpenAI
from sluiceway.testing.faults import Close, Garbage, Status

UPSTREAM_KEY = "sk-upstream-0123456789abcdefSECRET"
JWT_SECRET = "jwt-hmac-secret-that-is-long-enough-0123456789"
USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
Start = Callable[..., RunningServer]


def stack(upstream: str, keys_file: Path, log: dict[str, Any]) -> dict[str, Any]:
    return {
        "gateway": {"plugins": ["openai", "api-keys", "jwt", "limits", "request-log"]},
        "providers": [{
            "name": "up", "type": "openai", "base_url": upstream,
            "api_key": UPSTREAM_KEY,  # a literal key in the config, as some operators do
            "max_retries": 0, "models": [{"name": "gpt-test", "upstream": "fake-model"}],
        }],
        "auth": {"chain": ["jwt", "api-keys"],
                 "api-keys": {"keys_file": str(keys_file)}, "jwt": {"secret": JWT_SECRET}},
        "plugin": {"limits": {"default_rpm": 1000},
                   "request-log": {"slow_request": "1ms", **log}},
    }


@pytest.mark.parametrize("output", ["logging", "file"])
def test_every_line_is_json_and_none_holds_a_secret(
    output: str, gateway_factory: Start, fake_openai: Callable[..., FakeOpenAI],
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, this one included
    upstream = fake_openai(chunks=3)
    keys = KeyStore(tmp_path / "keys.toml")
    good = keys.create("crm", rpm=5)
    revoked = keys.create("old")
    keys.set_enabled(revoked.record.id, False)
    log_file = tmp_path / "requests.jsonl"
    server = gateway_factory(stack(upstream.url, tmp_path / "keys.toml",
                                   {"file": str(log_file)} if output == "file" else {}))
    token = jwt.encode({"sub": "svc", "exp": int(time.time()) + 600}, JWT_SECRET,
                       algorithm="HS256")
    forged = jwt.encode({"sub": "svc", "exp": int(time.time()) + 600}, "x" * 48,
                        algorithm="HS256")
    near_miss = good.secret[:-4] + "abcd"  # a key one typo away from a real one
    secrets = [UPSTREAM_KEY, JWT_SECRET, good.secret, revoked.secret, token, forged, near_miss]

    statuses: dict[str, int] = {}  # request id -> the status the client saw

    def seen(answer: Any) -> None:
        """Note a response (or the SDK's error, which holds one)."""
        raw = answer.response if isinstance(answer, openai.APIStatusError) else answer
        statuses[raw.headers["x-request-id"]] = raw.status_code

    client = openai.OpenAI(base_url=server.base_url, api_key=good.secret, max_retries=0)
    plain = client.chat.completions.with_raw_response.create(model="gpt-test", messages=USER)
    seen(plain.http_response)
    streamed = client.chat.completions.with_raw_response.create(model="gpt-test", messages=USER,
                                                                stream=True)
    list(streamed.parse())
    seen(streamed.http_response)
    upstream.script(Status(500), Garbage(), Close())  # the upstream fails three ways
    for _ in range(3):
        with pytest.raises(openai.InternalServerError) as failed:  # 502
            client.chat.completions.create(model="gpt-test", messages=USER)
        seen(failed.value)
    with pytest.raises(openai.RateLimitError) as limited:  # rpm = 5 was used up above
        client.chat.completions.create(model="gpt-test", messages=USER)
    seen(limited.value)
    for secret in (revoked.secret, near_miss, forged, "not-even-a-key"):
        bad = openai.OpenAI(base_url=server.base_url, api_key=secret, max_retries=0)
        with pytest.raises(openai.AuthenticationError) as refused:
            bad.models.list()
        seen(refused.value)
    as_service = openai.OpenAI(base_url=server.base_url, api_key=token, max_retries=0)
    service = as_service.chat.completions.with_raw_response.create(model="gpt-test",
                                                                   messages=USER)
    seen(service.http_response)
    for headers in ({"x-api-key": near_miss}, {"authorization": f"Bearer {token}"},
                    {"api-key": good.secret}):
        seen(httpx.post(server.base_url + "/chat/completions", content=b"{not json",
                        headers={**headers, "content-type": "application/json"}))
    server.stop()

    # The upstream saw its key: the gateway did use it.
    assert all(r.headers.get("authorization") == f"Bearer {UPSTREAM_KEY}"
               for r in upstream.requests)
    if output == "file":
        written = log_file.read_text(encoding="utf-8").splitlines()
        assert not [r for r in caplog.records if r.name == "sluiceway.requests"]
    else:
        written = [r.getMessage() for r in caplog.records if r.name == "sluiceway.requests"]
    lines = [json.loads(text) for text in written]  # every line parses
    assert all(isinstance(line, dict) for line in lines)
    requests = {line["request_id"]: line for line in lines if line["event"] == "request"}
    assert {rid: line["status"] for rid, line in requests.items()} == statuses
    assert {line["event"] for line in lines} >= {
        "request_start", "auth", "limit", "upstream_call", "upstream_response", "first_token",
        "request_end", "request", "slow_request"}
    assert requests[plain.headers["x-request-id"]]["key_id"] == good.record.id
    assert requests[service.headers["x-request-id"]]["key_id"] not in (None, token)

    everything = [*written, *(record.getMessage() for record in caplog.records)]
    for secret in secrets:
        for text in everything:
            assert secret not in text
            assert secret[-16:] not in text  # nor a recognisable tail of one
