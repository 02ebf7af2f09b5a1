"""The cache policy over a real gateway, driven with the openai and anthropic
SDKs and httpx: hits replay what the first answer sent (whole and streamed),
cost nothing and are counted; Cache-Control and scope decide who gets what."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from sluiceway_api_keys import KeyStore

from sluiceway.events import AttemptStarted, PolicyDecided, RequestEnded
from sluiceway.testing import EventRecorder, RunningServer
from sluiceway.testing.fakes import FakeOpenAI
from sluiceway.testing.faults import Status

StartGateway = Callable[..., RunningServer]
StartFake = Callable[..., FakeOpenAI]
HI = [{"role": "user", "content": "hi"}]


def config(fake: FakeOpenAI, cache: dict[str, Any] | None = None,
           plugins: tuple[str, ...] = ("openai", "mock", "costs", "cache"),
           **extra: Any) -> dict[str, Any]:
    return {
        "gateway": {"plugins": list(plugins)},
        "providers": [
            {"name": "up", "type": "openai", "base_url": fake.url, "api_key": "sk-up",
             "max_retries": 0, "models": ["m"]},
            {"name": "mock", "type": "mock", "models": ["mock-embed"]},
        ],
        "plugin": {"cache": cache or {},
                   **({"costs": {"prices": {"m": {"input": 1.0, "output": 2.0}}}}
                      if "costs" in plugins else {})},
        **extra,
    }


def chat(server: RunningServer, body: dict[str, Any] | None = None,
         headers: dict[str, str] | None = None, key: str = "k") -> httpx.Response:
    return httpx.post(f"{server.base_url}/chat/completions",
                      json={"model": "m", "messages": HI, **(body or {})},
                      headers={"authorization": f"Bearer {key}", **(headers or {})})


def attempts(recorder: EventRecorder) -> int:
    return len(recorder.of(AttemptStarted))


@pytest.fixture
def fake(fake_openai: StartFake) -> FakeOpenAI:
    return fake_openai(chunks=4)


def test_a_whole_answer_is_replayed_without_the_upstream_and_costs_nothing(
    fake: FakeOpenAI, gateway_factory: StartGateway,
) -> None:
    recorder = EventRecorder()
    server = gateway_factory(config(fake), plugins=[recorder.plugin()])
    first = chat(server)
    assert first.status_code == 200 and first.headers["x-sluiceway-cache"] == "miss"
    assert float(first.headers["x-sluiceway-cost"]) > 0
    second = chat(server)
    assert second.status_code == 200
    assert second.headers["x-sluiceway-cache"] == "hit"
    assert int(second.headers["age"]) >= 0
    # The very answer the upstream gave the first time (its id too), no second call.
    assert second.json() == first.json()
    assert second.headers["content-type"] == first.headers["content-type"]
    assert len(fake.requests) == 1 and attempts(recorder) == 1
    assert second.headers["x-sluiceway-cost"] == "0"
    end = recorder.ended(second.headers["x-request-id"])
    assert (end.answered_by, end.cost, end.status, end.attempts) == ("cache", 0.0, 200, 0)
    assert end.usage == {"prompt_tokens": 0, "completion_tokens": 0}
    actions = [(e.action, e.stage) for e in recorder.of(PolicyDecided)]
    assert actions == [("miss", "input"), ("stored", "output"), ("hit", "input")]


def test_a_stream_is_replayed_as_the_same_server_sent_events(
    fake: FakeOpenAI, gateway_factory: StartGateway,
) -> None:
    server = gateway_factory(config(fake))
    body = {"stream": True, "stream_options": {"include_usage": True}}
    first = chat(server, body)
    second = chat(server, body)
    assert first.headers["x-sluiceway-cache"] == "miss"
    assert second.headers["x-sluiceway-cache"] == "hit"
    assert second.headers["content-type"].startswith("text/event-stream")
    assert second.content == first.content and second.content.endswith(b"data: [DONE]\n\n")
    assert len(fake.requests) == 1
    # The SDK reads the replay as a stream like any other.
    client = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    chunks = list(client.chat.completions.create(
        model="m", messages=HI, stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: hi" and chunks[-1].usage is not None
    assert len(fake.requests) == 1
    # A whole request is another entry: it goes upstream once.
    assert chat(server).headers["x-sluiceway-cache"] == "miss"
    assert len(fake.requests) == 2


def test_what_changes_the_answer_is_in_the_key_and_what_does_not_is_not(
    fake: FakeOpenAI, gateway_factory: StartGateway,
) -> None:
    server = gateway_factory(config(fake))
    assert chat(server, {"temperature": 0.2}).headers["x-sluiceway-cache"] == "miss"
    assert chat(server, {"temperature": 0.7}).headers["x-sluiceway-cache"] == "miss"
    # user and metadata do not change the answer; the order of fields does not matter.
    hit = httpx.post(f"{server.base_url}/chat/completions", headers={"authorization": "Bearer k"},
                     content=b'{"user": "u-1", "temperature": 0.2, "messages": '
                             b'[{"content": "hi", "role": "user"}], "model": "m"}')
    assert hit.headers["x-sluiceway-cache"] == "hit"
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    assert chat(server, {"temperature": 0.2, "tools": tools}).headers[
        "x-sluiceway-cache"] == "miss"
    assert len(fake.requests) == 3


def test_cache_control_no_cache_no_store_and_max_age(
    fake: FakeOpenAI, gateway_factory: StartGateway,
) -> None:
    server = gateway_factory(config(fake))
    assert chat(server, headers={"cache-control": "no-store"}).headers[
        "x-sluiceway-cache"] == "bypass"
    # no-store kept nothing: the next request still goes upstream.
    first = chat(server)
    assert first.headers["x-sluiceway-cache"] == "miss"
    # no-cache goes upstream again, and keeps the fresh answer.
    fresh = chat(server, headers={"cache-control": "no-cache"})
    assert fresh.headers["x-sluiceway-cache"] == "miss"
    assert fresh.json()["id"] != first.json()["id"]
    again = chat(server, headers={"cache-control": "max-age=3600"})
    assert again.headers["x-sluiceway-cache"] == "hit" and again.json() == fresh.json()
    assert len(fake.requests) == 3


def test_failed_answers_are_not_kept(fake: FakeOpenAI, gateway_factory: StartGateway) -> None:
    server = gateway_factory(config(fake))
    fake.script(Status(500))
    assert chat(server).status_code == 502
    assert chat(server).headers["x-sluiceway-cache"] == "miss"
    assert chat(server).headers["x-sluiceway-cache"] == "hit"
    assert len(fake.requests) == 2


def test_scope_key_keeps_each_key_to_its_own_answers_and_shared_does_not(
    fake: FakeOpenAI, gateway_factory: StartGateway, tmp_path: Path,
) -> None:
    store = KeyStore(tmp_path / "keys.toml")
    alice, bob = store.create("alice").secret, store.create("bob").secret
    auth = {"chain": ["api-keys"], "api-keys": {"keys_file": str(tmp_path / "keys.toml")}}
    plugins = ("openai", "mock", "api-keys", "cache")
    keyed = gateway_factory(config(fake, plugins=plugins, auth=auth))
    assert chat(keyed, key=alice).headers["x-sluiceway-cache"] == "miss"
    assert chat(keyed, key=bob).headers["x-sluiceway-cache"] == "miss"
    assert chat(keyed, key=alice).headers["x-sluiceway-cache"] == "hit"
    shared = gateway_factory(config(fake, {"scope": "shared"}, plugins=plugins, auth=auth))
    assert chat(shared, key=alice).headers["x-sluiceway-cache"] == "miss"
    assert chat(shared, key=bob).headers["x-sluiceway-cache"] == "hit"


def test_messages_and_embeddings_are_cached_too(
    fake: FakeOpenAI, gateway_factory: StartGateway,
) -> None:
    server = gateway_factory(config(fake))
    client = anthropic.Anthropic(base_url=server.url, api_key="k", max_retries=0)
    asked: Any = {"model": "m", "max_tokens": 50, "messages": HI}
    first = client.messages.with_raw_response.create(**asked)
    second = client.messages.with_raw_response.create(**asked)
    assert (first.headers["x-sluiceway-cache"], second.headers["x-sluiceway-cache"]) == (
        "miss", "hit")
    assert second.parse().content[0].text == "echo: hi"  # type: ignore[union-attr]
    with client.messages.stream(**asked) as stream:
        assert stream.get_final_text() == "echo: hi"
    with client.messages.stream(**asked) as stream:
        assert stream.get_final_text() == "echo: hi"
        assert stream.response.headers["x-sluiceway-cache"] == "hit"
    assert len(fake.requests) == 2

    embed = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    one = embed.embeddings.with_raw_response.create(model="mock-embed", input=["a", "b"])
    two = embed.embeddings.with_raw_response.create(model="mock-embed", input=["a", "b"])
    assert two.headers["x-sluiceway-cache"] == "hit"
    assert two.parse().data[1].embedding == one.parse().data[1].embedding
    # Another encoding is another answer.
    floats = embed.embeddings.with_raw_response.create(
        model="mock-embed", input=["a", "b"], encoding_format="float")
    assert floats.headers["x-sluiceway-cache"] == "miss"


def test_models_and_kinds_limit_what_is_cached(
    fake: FakeOpenAI, gateway_factory: StartGateway,
) -> None:
    server = gateway_factory(config(fake, {"models": ["mock-*"]}))
    for _ in range(2):
        assert chat(server).headers["x-sluiceway-cache"] == "bypass"
    assert len(fake.requests) == 2


def test_a_redis_cache_is_shared_by_every_instance(
    fake: FakeOpenAI, gateway_factory: StartGateway, redis_server: Any,
) -> None:
    cache = {"storage": redis_server.url, "key_prefix": "test:cache:"}
    one = gateway_factory(config(fake, cache))
    two = gateway_factory(config(fake, cache))
    first = chat(one, {"stream": True})
    replayed = chat(two, {"stream": True})
    assert replayed.headers["x-sluiceway-cache"] == "hit"
    assert replayed.content == first.content
    assert chat(two).headers["x-sluiceway-cache"] == "miss"
    assert chat(one).headers["x-sluiceway-cache"] == "hit"
    assert len(fake.requests) == 2


def test_an_unreachable_redis_is_a_miss_not_an_error(
    fake: FakeOpenAI, gateway_factory: StartGateway, redis_server: Any,
) -> None:
    server = gateway_factory(config(fake, {"storage": redis_server.url}))
    redis_server.kill()
    for _ in range(2):
        answer = chat(server)
        assert answer.status_code == 200 and answer.headers["x-sluiceway-cache"] == "miss"


def test_a_stream_the_client_left_is_not_kept(
    fake: FakeOpenAI, gateway_factory: StartGateway,
) -> None:
    from sluiceway.testing import wait_until
    from sluiceway.testing.faults import ChunkDelay

    recorder = EventRecorder()
    server = gateway_factory(config(fake), plugins=[recorder.plugin()])
    fake.script(ChunkDelay(0.5))
    with httpx.stream("POST", f"{server.base_url}/chat/completions",
                      json={"model": "m", "messages": HI, "stream": True},
                      headers={"authorization": "Bearer k"}) as response:
        assert response.headers["x-sluiceway-cache"] == "miss"
        next(response.iter_bytes())
    assert wait_until(lambda: fake.disconnects == 1)
    assert wait_until(lambda: any(e.disconnected for e in recorder.of(RequestEnded)))
    complete = chat(server, {"stream": True})
    assert complete.headers["x-sluiceway-cache"] == "miss"
    recorder.ended(complete.headers["x-request-id"])
    stored = [e.request_id for e in recorder.of(PolicyDecided) if e.action == "stored"]
    assert stored == [complete.headers["x-request-id"]]


def test_hits_and_misses_are_counted_in_the_metrics(
    fake: FakeOpenAI, gateway_factory: StartGateway,
) -> None:
    server = gateway_factory(config(fake, plugins=("openai", "mock", "prometheus", "cache")))
    for _ in range(3):
        chat(server)
    metrics = httpx.get(f"{server.url}/metrics").text
    series = 'sluiceway_policy_decisions_total{action="%s",policy="cache",rule="exact",stage="%s"}'
    assert series % ("miss", "input") + " 1.0" in metrics
    assert series % ("stored", "output") + " 1.0" in metrics
    assert series % ("hit", "input") + " 2.0" in metrics
