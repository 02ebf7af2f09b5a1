"""The guard in a real gateway (mock, api-keys, guard) on a socket, seen through
the openai SDK and httpx. Distinct clients are simulated with X-Forwarded-For
from the trusted proxy 127.0.0.1 (the tests' own address)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from sluiceway_api_keys import KeyStore

import sluiceway
from sluiceway.testing import RunningServer

Start = Callable[..., RunningServer]
USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
BODY: dict[str, Any] = {"model": "mock-gpt", "messages": USER}
BAD_KEY = "sk-not-a-real-key-0123456789abcdef"


def client_headers(forwarded_for: str | None = None) -> dict[str, str]:
    # A refusal is sent before the request body is read; hypercorn then closes the
    # connection without saying so, and a pooled connection reused at that moment
    # fails with a connection error. One connection per request avoids the race.
    headers = {"connection": "close"}
    if forwarded_for is not None:
        headers["x-forwarded-for"] = forwarded_for
    return headers


def sdk(server: RunningServer, key: str, forwarded_for: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=server.base_url, max_retries=0,
                         default_headers=client_headers(forwarded_for))


def chat(client: openai.OpenAI) -> str:
    answer = client.chat.completions.create(model="mock-gpt", messages=USER)
    return answer.choices[0].message.content or ""


def fail_auth(server: RunningServer, times: int, forwarded_for: str | None = None) -> None:
    with sdk(server, BAD_KEY, forwarded_for) as client:
        for _ in range(times):
            with pytest.raises(openai.AuthenticationError):
                chat(client)


def post(server: RunningServer, key: str | None, forwarded_for: str | None = None,
         path: str = "/chat/completions") -> httpx.Response:
    headers = {}
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    if forwarded_for is not None:
        headers["x-forwarded-for"] = forwarded_for
    return httpx.post(server.base_url + path, json=BODY, headers=headers, timeout=30)


# --------------------------------------------------------------------------
# IP bans
# --------------------------------------------------------------------------


def test_guard_bans_an_address_after_failed_auth_even_with_a_valid_key(
    start: Start, keys: KeyStore, caplog: pytest.LogCaptureFixture
) -> None:
    good = keys.create("crm")
    server = start(max_failed_auth=3, trusted_proxies=["127.0.0.1"])
    attacker, neighbour = "203.0.113.7", "203.0.113.8"
    with caplog.at_level(logging.WARNING, logger="sluiceway.guard"):
        fail_auth(server, 3, attacker)
    with sdk(server, good.secret, attacker) as client, pytest.raises(
        openai.PermissionDeniedError
    ) as banned:
        chat(client)
    error = banned.value
    assert (error.status_code, error.code) == (403, "ip_banned")
    body = error.response.json()["error"]
    assert (body["type"], body["code"], body["param"]) == ("permission_error", "ip_banned", None)
    # The seconds left of a 15-minute ban, not capped like a 429's.
    assert 890 <= int(error.response.headers["retry-after"]) <= 900
    assert error.response.headers["x-request-id"]
    # Another client of the same proxy is not banned.
    with sdk(server, good.secret, neighbour) as client:
        assert chat(client)
    # Health routes are never refused.
    health = httpx.get(server.url + "/healthz", headers={"x-forwarded-for": attacker})
    assert health.status_code == 200
    # Only the right-most address that is not a trusted proxy counts: what the
    # client writes to the left of it cannot make it someone else.
    assert post(server, good.secret, f"{neighbour}, {attacker}").status_code == 403
    assert post(server, good.secret, f"{attacker}, {neighbour}").status_code == 200
    assert post(server, good.secret, f"{attacker}, 127.0.0.1").status_code == 403
    # Malformed where it matters: the peer (127.0.0.1, not banned).
    assert post(server, good.secret, f"{attacker}, nonsense").status_code == 200
    warnings = [r.getMessage() for r in caplog.records if r.name == "sluiceway.guard"]
    assert warnings == [
        f"guard: banned {attacker} for 900s after 3 failed authentications within 300s"
    ]


def test_guard_counts_missing_credentials_and_unknown_paths(start: Start, keys: KeyStore) -> None:
    good = keys.create("crm")
    server = start(max_failed_auth=3, trusted_proxies=["127.0.0.1"])
    scanner = "198.51.100.20"
    assert post(server, None, scanner).status_code == 401  # no key
    assert post(server, None, scanner, path="/admin").status_code == 401  # probing
    assert post(server, BAD_KEY, scanner, path="/models").status_code == 401
    refused = post(server, good.secret, scanner)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "ip_banned"


def test_guard_ignores_forwarded_for_from_an_untrusted_peer(start: Start, keys: KeyStore) -> None:
    good = keys.create("crm")
    # The tests connect from 127.0.0.1, which is not in the trusted network.
    server = start(max_failed_auth=3, trusted_proxies=["10.0.0.0/8"])
    for n in range(3):  # three "different" clients, all the same peer
        fail_auth(server, 1, f"203.0.113.{n}")
    for forwarded_for in ("203.0.113.99", None):
        with sdk(server, good.secret, forwarded_for) as client, pytest.raises(
            openai.PermissionDeniedError
        ) as banned:
            chat(client)
        assert banned.value.code == "ip_banned"


def test_guard_ban_expires(start: Start, keys: KeyStore) -> None:
    good = keys.create("crm")
    server = start(max_failed_auth=2, ban_for="1s")
    fail_auth(server, 2)
    refused = post(server, good.secret)
    assert refused.status_code == 403
    assert refused.headers["retry-after"] == "1"
    time.sleep(1.2)
    assert post(server, good.secret).status_code == 200
    # A new ban needs max_failed_auth new failures.
    fail_auth(server, 1)
    assert post(server, good.secret).status_code == 200


def test_guard_successful_auth_is_not_counted(start: Start, keys: KeyStore) -> None:
    good = keys.create("crm")
    server = start(max_failed_auth=2)
    with sdk(server, good.secret) as client:
        for _ in range(5):
            assert chat(client)
        # Errors after auth (an unknown model) are not failed authentications.
        for _ in range(3):
            with pytest.raises(openai.NotFoundError):
                client.chat.completions.create(model="nope", messages=USER)
        fail_auth(server, 1)
        assert chat(client)


# --------------------------------------------------------------------------
# Key bursts
# --------------------------------------------------------------------------


def test_guard_blocks_a_bursting_key_with_retry_headers(
    start: Start, keys: KeyStore, caplog: pytest.LogCaptureFixture
) -> None:
    noisy, quiet = keys.create("noisy"), keys.create("quiet")
    # 0.5 requests per second over 10 s: 5 requests per 10 s.
    server = start(burst_rps=0.5, burst_window="10s", block_for="5m")
    with caplog.at_level(logging.WARNING, logger="sluiceway.guard"), sdk(
        server, noisy.secret
    ) as client:
        for _ in range(5):
            assert chat(client)
        with pytest.raises(openai.RateLimitError) as blocked:
            chat(client)
        with pytest.raises(openai.RateLimitError) as still:
            chat(client)
    for error in (blocked.value, still.value):
        assert (error.status_code, error.code) == (429, "burst_limit_exceeded")
        assert noisy.record.id in error.message
        headers = error.response.headers
        # Capped at 120 s for the SDKs; the block is longer, so: do not retry.
        assert headers["retry-after"] == "120"
        assert headers["retry-after-ms"] == "120000"
        assert headers["x-should-retry"] == "false"
    with sdk(server, quiet.secret) as client:  # other keys are not affected
        assert chat(client)
    assert httpx.get(server.url + "/healthz").status_code == 200
    warnings = [r.getMessage() for r in caplog.records if r.name == "sluiceway.guard"]
    assert warnings == [
        f"guard: blocked key {noisy.record.id} for 300s: more than 5 requests within 10s"
    ]


def test_guard_short_block_says_when_and_may_be_retried(start: Start, keys: KeyStore) -> None:
    noisy = keys.create("noisy")
    server = start(burst_rps=0.2, burst_window="10s", block_for="30s")
    for _ in range(2):
        assert post(server, noisy.secret).status_code == 200
    refused = post(server, noisy.secret)
    assert refused.status_code == 429
    assert refused.json()["error"] == {
        "message": refused.json()["error"]["message"], "type": "rate_limit_error",
        "code": "burst_limit_exceeded", "param": None,
    }
    assert 25 <= int(refused.headers["retry-after"]) <= 30
    assert "x-should-retry" not in refused.headers


async def test_guard_burst_of_concurrent_requests_admits_the_limit(
    start: Start, keys: KeyStore
) -> None:
    noisy = keys.create("noisy")
    server = start(burst_rps=1, burst_window="30s", block_for="1m")
    client = openai.AsyncOpenAI(api_key=noisy.secret, base_url=server.base_url, max_retries=0,
                                default_headers=client_headers())
    async with client:
        results = await asyncio.gather(
            *(client.chat.completions.create(model="mock-gpt", messages=USER)
              for _ in range(50)),
            return_exceptions=True,
        )
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(results) - len(refused) == 30
    assert all(isinstance(r, openai.RateLimitError) and r.code == "burst_limit_exceeded"
               for r in refused)


# --------------------------------------------------------------------------
# Secrets and configuration
# --------------------------------------------------------------------------


def test_guard_logs_never_contain_a_secret(
    start: Start, keys: KeyStore, caplog: pytest.LogCaptureFixture
) -> None:
    good = keys.create("crm")
    server = start(max_failed_auth=2, burst_rps=0.2, burst_window="10s",
                   trusted_proxies=["127.0.0.1"])
    with caplog.at_level(logging.DEBUG):
        fail_auth(server, 2, "203.0.113.50")
        assert post(server, good.secret, "203.0.113.50").status_code == 403
        assert [post(server, good.secret).status_code for _ in range(3)] == [200, 200, 429]
    messages = [r.getMessage() for r in caplog.records if r.name == "sluiceway.guard"]
    assert any("banned 203.0.113.50" in m for m in messages)
    assert any(f"blocked key {good.record.id}" in m for m in messages)
    for secret in (good.secret, BAD_KEY, good.secret[8:], BAD_KEY[8:]):
        assert secret not in caplog.text


def test_guard_bad_options_stop_the_gateway(start: Start) -> None:
    for guard, key in (({"bna_for": "1m"}, "plugin.guard.bna_for"),
                       ({"ban_for": "0s"}, "plugin.guard"),
                       ({"trusted_proxies": ["not-an-ip"]}, "plugin.guard")):
        with pytest.raises(sluiceway.ConfigError) as failed:
            start(**guard)
        assert key in str(failed.value), failed.value


def test_guard_with_everything_off_passes_through(start: Start, keys: KeyStore) -> None:
    good = keys.create("crm")
    server = start(max_failed_auth=0, burst_rps=0)
    fail_auth(server, 20)
    assert [post(server, good.secret).status_code for _ in range(5)] == [200] * 5
