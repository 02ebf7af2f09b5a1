"""The limits middleware over a real gateway, seen through the openai SDK."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Mapping

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from sluiceway_api_keys import KeyStore

import sluiceway
from sluiceway.api import estimate_tokens
from sluiceway.testing import RunningServer

Start = Callable[..., RunningServer]
USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
KINDS = ("requests", "tokens")
DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+)ms)?$")


def sdk(server: RunningServer, key: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=server.base_url, max_retries=0)


def async_sdk(server: RunningServer, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key=key, base_url=server.base_url, max_retries=0)


def seconds(text: str) -> float:
    """Parse OpenAI's ``x-ratelimit-reset-*`` format (``20ms``, ``1.5s``, ``6m0s``)."""
    match = DURATION.match(text)
    if not text or match is None:
        raise ValueError(f"not an OpenAI reset value: {text!r}")
    hours, minutes, secs, millis = (float(group or 0) for group in match.groups())
    return hours * 3600 + minutes * 60 + secs + millis / 1000


def limit_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {name: value for name, value in headers.items() if name.startswith("x-ratelimit-")}


def chat(client: openai.OpenAI, max_tokens: int | openai.Omit = openai.omit) -> Mapping[str, str]:
    """A chat request; the response headers."""
    raw = client.chat.completions.with_raw_response.create(
        model="mock-gpt", messages=USER, max_tokens=max_tokens
    )
    raw.parse()
    headers: Mapping[str, str] = raw.headers
    return headers


def test_limits_rpm_refuses_the_fourth_request_with_headers(start: Start, store: KeyStore) -> None:
    created = store.create("crm", rpm=3)
    server = start()
    with sdk(server, created.secret) as client:
        seen = [chat(client) for _ in range(3)]
        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(model="mock-gpt", messages=USER)
    assert [h["x-ratelimit-remaining-requests"] for h in seen] == ["2", "1", "0"]
    for headers in seen:
        assert headers["x-ratelimit-limit-requests"] == "3"
        assert 0 < seconds(headers["x-ratelimit-reset-requests"]) <= 120
        assert "x-ratelimit-limit-tokens" not in headers  # no tpm for this key
    error = refused.value
    assert (error.status_code, error.code) == (429, "rate_limit_exceeded")
    assert created.record.id in error.message
    headers = error.response.headers
    assert 0 < int(headers["retry-after"]) <= 120
    assert 0 < int(headers["retry-after-ms"]) <= 120_000
    assert headers["x-ratelimit-limit-requests"] == "3"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert 0 < seconds(headers["x-ratelimit-reset-requests"]) <= 120
    assert "x-should-retry" not in headers


def test_limits_admits_again_after_the_window(start: Start, store: KeyStore) -> None:
    created = store.create("crm", rpm=1)
    server = start(limits={"window": "1s"})
    with sdk(server, created.secret) as client:
        chat(client)
        with pytest.raises(openai.RateLimitError) as refused:
            chat(client)
        assert int(refused.value.response.headers["retry-after-ms"]) <= 2000
        admitted = None
        for _ in range(100):  # bounded: at most about 10 s
            try:
                admitted = chat(client)
                break
            except openai.RateLimitError:
                time.sleep(0.1)
    assert admitted is not None
    assert admitted["x-ratelimit-remaining-requests"] == "0"


async def test_limits_concurrent_large_requests_cannot_overshoot_tpm(
    start: Start, store: KeyStore
) -> None:
    created = store.create("crm", tpm=3000)
    server = start(mock={"ttft": "200ms"})
    estimate = estimate_tokens({"messages": USER, "max_tokens": 1000}, 1024)
    async with async_sdk(server, created.secret) as client:
        results = await asyncio.gather(*(
            client.chat.completions.create(model="mock-gpt", messages=USER, max_tokens=1000)
            for _ in range(8)
        ), return_exceptions=True)
    accepted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert 1 <= len(accepted) and len(accepted) * estimate <= 3000
    assert refused and all(isinstance(r, openai.RateLimitError) for r in refused)
    assert {r.code for r in refused if isinstance(r, openai.RateLimitError)} == {
        "rate_limit_exceeded"
    }


def test_limits_settle_gives_back_unused_tokens(start: Start, store: KeyStore) -> None:
    created = store.create("crm", tpm=100_000)
    server = start()
    estimate = estimate_tokens({"messages": USER, "max_tokens": 2000}, 1024)
    with sdk(server, created.secret) as client:
        # A stream's headers go out before its usage is known: the reservation shows.
        with client.chat.completions.with_streaming_response.create(
            model="mock-gpt", messages=USER, max_tokens=2000, stream=True
        ) as streamed:
            reserved = int(streamed.headers["x-ratelimit-remaining-tokens"])
            list(streamed.parse())
        assert reserved == 100_000 - estimate
        # A whole answer is settled before its headers go out.
        raw = client.chat.completions.with_raw_response.create(
            model="mock-gpt", messages=USER, max_tokens=2000
        )
        usage = raw.parse().usage
    assert usage is not None and usage.total_tokens < estimate
    settled = int(raw.headers["x-ratelimit-remaining-tokens"])
    assert settled > reserved
    assert raw.headers["x-ratelimit-limit-tokens"] == "100000"
    assert 0 < seconds(raw.headers["x-ratelimit-reset-tokens"]) <= 120


def test_limits_streams_settle_when_they_end(start: Start, store: KeyStore) -> None:
    created = store.create("crm", tpm=100_000)
    server = start()
    remaining: list[int] = []
    totals: list[int] = []
    with sdk(server, created.secret) as client:
        for _ in range(3):
            with client.chat.completions.with_streaming_response.create(
                model="mock-gpt", messages=USER, max_tokens=2000, stream=True,
                stream_options={"include_usage": True},
            ) as streamed:
                remaining.append(int(streamed.headers["x-ratelimit-remaining-tokens"]))
                chunks = list(streamed.parse())
            usage = chunks[-1].usage
            assert usage is not None
            totals.append(usage.total_tokens)
    estimate = estimate_tokens({"messages": USER, "max_tokens": 2000}, 1024)
    assert remaining[0] == 100_000 - estimate
    # Each earlier stream now costs its real usage, not the estimate it reserved.
    assert totals[0] < estimate and totals[1] < estimate
    assert remaining[1] >= 100_000 - totals[0] - estimate > remaining[0] - estimate
    assert remaining[2] >= 100_000 - totals[0] - totals[1] - estimate > remaining[1] - estimate


def test_limits_request_larger_than_tpm_is_refused_for_good(
    start: Start, store: KeyStore
) -> None:
    created = store.create("crm", rpm=10, tpm=500)
    server = start()
    with sdk(server, created.secret) as client:
        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(model="mock-gpt", messages=USER, max_tokens=1000)
        headers = chat(client, max_tokens=10)  # a small one still fits
    error = refused.value
    assert error.code == "tokens_exceed_limit"
    assert error.response.headers["x-should-retry"] == "false"
    assert error.response.headers["x-ratelimit-limit-tokens"] == "500"
    assert "max_tokens" in error.message
    # The refused request did not use up a request of the rpm.
    assert headers["x-ratelimit-remaining-requests"] == "9"


def test_limits_tpm_refusal_gives_back_the_request(start: Start, store: KeyStore) -> None:
    created = store.create("crm", rpm=10, tpm=1500)
    server = start(mock={"token_delay": "100ms"})  # the first stream stays open a while
    with sdk(server, created.secret) as client:
        with client.chat.completions.with_streaming_response.create(
            model="mock-gpt", messages=USER, max_tokens=1000, stream=True
        ) as streamed:
            with pytest.raises(openai.RateLimitError) as refused:  # while the first is open
                client.chat.completions.create(model="mock-gpt", messages=USER, max_tokens=1000)
            list(streamed.parse())
    headers = refused.value.response.headers
    assert refused.value.code == "rate_limit_exceeded"
    assert headers["x-ratelimit-remaining-requests"] == "9"
    assert 0 < int(headers["retry-after-ms"]) <= 120_000


async def test_limits_max_concurrent(start: Start, store: KeyStore) -> None:
    created = store.create("crm", max_concurrent=1)
    server = start(mock={"ttft": "300ms"})
    async with async_sdk(server, created.secret) as client:
        results = await asyncio.gather(*(
            client.chat.completions.create(model="mock-gpt", messages=USER) for _ in range(2)
        ), return_exceptions=True)
        refused = [r for r in results if isinstance(r, openai.RateLimitError)]
        assert len(refused) == 1 and len(results) == 2
        assert refused[0].code == "concurrency_limit_exceeded"
        assert refused[0].response.headers["retry-after"] == "1"
        # The slot is released once the request ends.
        answer = await client.chat.completions.create(model="mock-gpt", messages=USER)
        assert answer.choices[0].message.content


def test_limits_default_rpm_applies_to_keys_without_rpm(start: Start, store: KeyStore) -> None:
    plain = store.create("plain")
    own = store.create("own", rpm=5)
    server = start(limits={"default_rpm": 2})
    with sdk(server, plain.secret) as client:
        assert chat(client)["x-ratelimit-limit-requests"] == "2"
        chat(client)
        with pytest.raises(openai.RateLimitError):
            chat(client)
    with sdk(server, own.secret) as client:  # its own rpm wins; keys are counted apart
        assert [chat(client)["x-ratelimit-remaining-requests"] for _ in range(3)] == [
            "4", "3", "2"
        ]


def test_limits_moving_window_rpm_with_tpm_on_the_counter(start: Start, store: KeyStore) -> None:
    created = store.create("crm", rpm=2, tpm=1500)
    server = start(limits={"rpm_strategy": "moving-window"}, mock={"token_delay": "100ms"})
    with sdk(server, created.secret) as client:
        with client.chat.completions.with_streaming_response.create(
            model="mock-gpt", messages=USER, max_tokens=1000, stream=True
        ) as streamed:
            with pytest.raises(openai.RateLimitError) as refused:  # over tpm: rpm given back
                client.chat.completions.create(model="mock-gpt", messages=USER, max_tokens=1000)
            list(streamed.parse())
        assert refused.value.response.headers["x-ratelimit-remaining-requests"] == "1"
        assert chat(client)["x-ratelimit-remaining-requests"] == "0"
        with pytest.raises(openai.RateLimitError) as refused:
            chat(client)
    assert "2 requests per" in refused.value.message
    # A moving window frees a slot one window after the oldest request, not later.
    assert 0 < int(refused.value.response.headers["retry-after-ms"]) <= 60_001


def test_limits_anonymous_when_auth_is_off(start: Start) -> None:
    server = start(limits={"default_rpm": 1, "default_tpm": 5000}, auth=False)
    with sdk(server, "unused") as client:
        headers = chat(client)
        assert headers["x-ratelimit-limit-tokens"] == "5000"
        with pytest.raises(openai.RateLimitError) as refused:
            chat(client)
    assert "anonymous" in refused.value.message


def test_limits_other_routes_are_never_limited(start: Start, store: KeyStore) -> None:
    created = store.create("crm", rpm=1, tpm=10)
    server = start()
    with sdk(server, created.secret) as client:
        for _ in range(5):
            raw = client.models.with_raw_response.list()
            assert not limit_headers(raw.headers)
    with httpx.Client(base_url=server.url) as http:
        assert not limit_headers(http.get("/healthz").headers)


def test_limits_error_responses_carry_headers_and_refund_tokens(
    start: Start, store: KeyStore
) -> None:
    created = store.create("crm", rpm=10, tpm=3000)
    server = start(mock={"allow_request_faults": True})
    with sdk(server, created.secret) as client:
        # An unknown model is no model call: refused before anything is counted.
        with pytest.raises(openai.NotFoundError) as missing:
            client.chat.completions.create(model="no-such-model", messages=USER, max_tokens=2000)
        # The provider refuses this one (400): admitted, then refunded.
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model="mock-gpt", messages=USER, max_tokens=2000,
                                           metadata={"mock_fault": "no-such-fault"})
        headers = chat(client, max_tokens=10)
    assert "x-ratelimit-limit-tokens" not in missing.value.response.headers
    assert refused.value.response.headers["x-ratelimit-limit-tokens"] == "3000"
    assert refused.value.response.headers["x-ratelimit-remaining-requests"] == "9"
    # The 400 used no tokens: the 2000 it reserved came back.
    assert int(headers["x-ratelimit-remaining-tokens"]) > 3000 - 2000
    assert headers["x-ratelimit-remaining-requests"] == "8"


def test_limits_bad_options_stop_the_gateway() -> None:
    for limits, key in (({"window": "0s"}, "plugin.limits"),
                        ({"default_rpm": -1}, "plugin.limits.default_rpm"),
                        ({"windw": "1s"}, "plugin.limits.windw")):
        config = {"gateway": {"plugins": ["mock", "limits"]},
                  "providers": [{"name": "mock", "type": "mock", "models": ["mock-gpt"]}],
                  "plugin": {"limits": limits}}
        with pytest.raises(sluiceway.StartupError) as failed:
            sluiceway.create_app(config)
        assert key in str(failed.value), failed.value
