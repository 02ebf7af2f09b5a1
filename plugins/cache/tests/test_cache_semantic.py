"""The cache's semantic mode over a real gateway: prompts near in meaning share
an answer, found through the gateway's own embeddings route (the mock's
``words`` embeddings: texts that share their words are near) and usearch's
index; everything but the text must still match exactly."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from sluiceway_api_keys import KeyStore

from sluiceway.events import PolicyDecided, RequestEnded
from sluiceway.testing import EventRecorder, RunningServer
from sluiceway.testing.fakes import FakeOpenAI

StartGateway = Callable[..., RunningServer]
StartFake = Callable[..., FakeOpenAI]


def config(fake: FakeOpenAI, semantic: dict[str, Any] | None = None,
           plugins: tuple[str, ...] = ("openai", "mock", "cache"), **extra: Any) -> dict[str, Any]:
    return {
        "gateway": {"plugins": list(plugins)},
        "providers": [
            {"name": "up", "type": "openai", "base_url": fake.url, "api_key": "sk-up",
             "max_retries": 0, "models": ["m"]},
            {"name": "mock", "type": "mock", "models": ["mock-embed"], "embeddings": "words"},
        ],
        "plugin": {"cache": {"semantic": {"model": "mock-embed", "threshold": 0.9,
                                          **(semantic or {})}}},
        **extra,
    }


def ask(server: RunningServer, text: str, key: str = "k", **body: Any) -> httpx.Response:
    return httpx.post(f"{server.base_url}/chat/completions",
                      json={"model": "m", "messages": [{"role": "user", "content": text}],
                            **body},
                      headers={"authorization": f"Bearer {key}"})


def test_a_prompt_near_in_meaning_gets_the_kept_answer(
    fake_openai: StartFake, gateway_factory: StartGateway,
) -> None:
    fake = fake_openai()
    recorder = EventRecorder()
    server = gateway_factory(config(fake), plugins=[recorder.plugin()])
    first = ask(server, "What is the capital of France?")
    assert first.headers["x-sluiceway-cache"] == "miss"
    recorder.ended(first.headers["x-request-id"])  # kept once it has gone out
    near = ask(server, "what is the capital of france")
    assert near.headers["x-sluiceway-cache"] == "hit"
    assert float(near.headers["x-sluiceway-cache-similarity"]) >= 0.9
    assert near.json()["choices"] == first.json()["choices"]
    assert len(fake.requests) == 1

    # Another question, other parameters, or a stream: not the same request.
    assert ask(server, "How do I bake bread?").headers["x-sluiceway-cache"] == "miss"
    assert ask(server, "What is the capital of France?", temperature=0.2
               ).headers["x-sluiceway-cache"] == "miss"
    with httpx.stream("POST", f"{server.base_url}/chat/completions", json={
            "model": "m", "stream": True,
            "messages": [{"role": "user", "content": "what is the capital of france"}]}) as s:
        s.read()
        assert s.headers["x-sluiceway-cache"] == "miss"
    assert len(fake.requests) == 4
    # (The embeddings of repeated prompts are exact hits of their own, model mock-embed.)
    hits = [e for e in recorder.of(PolicyDecided) if e.action == "hit" and e.model == "m"]
    assert [(e.rule, e.request_id) for e in hits] == [
        ("semantic", near.headers["x-request-id"])]
    # Each lookup embedded the prompt through the gateway's embeddings route.
    embedded = [e for e in recorder.of(RequestEnded) if e.route == "embeddings"]
    assert len(embedded) == 5 and all(e.status == 200 for e in embedded)


def test_the_threshold_decides_how_near_is_near_enough(
    fake_openai: StartFake, gateway_factory: StartGateway,
) -> None:
    fake = fake_openai()
    recorder = EventRecorder()
    strict = gateway_factory(config(fake, {"threshold": 0.99}), plugins=[recorder.plugin()])
    first = ask(strict, "tell me the capital of France please")
    recorder.ended(first.headers["x-request-id"])
    assert ask(strict, "tell me the capital of Spain please").headers[
        "x-sluiceway-cache"] == "miss"
    loose = gateway_factory(config(fake, {"threshold": 0.5}), plugins=[recorder.plugin()])
    first = ask(loose, "tell me the capital of France please")
    recorder.ended(first.headers["x-request-id"])
    assert ask(loose, "tell me the capital of Spain please").headers[
        "x-sluiceway-cache"] == "hit"


def test_messages_are_compared_by_meaning_too_and_other_content_only_exactly(
    fake_openai: StartFake, gateway_factory: StartGateway,
) -> None:
    fake = fake_openai()
    recorder = EventRecorder()
    server = gateway_factory(config(fake), plugins=[recorder.plugin()])
    client = anthropic.Anthropic(base_url=server.url, api_key="k", max_retries=0)
    asked: Any = {"model": "m", "max_tokens": 50}
    first = client.messages.with_raw_response.create(
        **asked, messages=[{"role": "user", "content": "Name three primary colours"}])
    recorder.ended(first.headers["x-request-id"])
    second = client.messages.with_raw_response.create(
        **asked, messages=[{"role": "user", "content": "name three primary colours!"}])
    assert second.headers["x-sluiceway-cache"] == "hit"
    client.close()

    # An image in the prompt: never compared by meaning (not even embedded).
    image = [{"type": "text", "text": "What is this?"},
             {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]
    before = len([e for e in recorder.of(RequestEnded) if e.route == "embeddings"])
    response = httpx.post(f"{server.base_url}/chat/completions", json={
        "model": "m", "messages": [{"role": "user", "content": image}]})
    assert response.headers["x-sluiceway-cache"] == "miss"
    recorder.ended(response.headers["x-request-id"])
    after = len([e for e in recorder.of(RequestEnded) if e.route == "embeddings"])
    assert after == before


def test_the_embedding_is_the_callers_request_and_scopes_still_apply(
    fake_openai: StartFake, gateway_factory: StartGateway, tmp_path: Path,
) -> None:
    fake = fake_openai()
    recorder = EventRecorder()
    store = KeyStore(tmp_path / "keys.toml")
    alice, bob = store.create("alice"), store.create("bob")
    auth = {"chain": ["api-keys"], "api-keys": {"keys_file": str(tmp_path / "keys.toml")}}
    server = gateway_factory(config(fake, plugins=("openai", "mock", "api-keys", "cache"),
                                    auth=auth), plugins=[recorder.plugin()])
    first = ask(server, "Which planet is largest?", key=alice.secret)
    recorder.ended(first.headers["x-request-id"])
    assert ask(server, "which planet is the largest", key=bob.secret).headers[
        "x-sluiceway-cache"] == "miss"  # bob may not see alice's answers
    assert ask(server, "which planet is the largest", key=alice.secret).headers[
        "x-sluiceway-cache"] == "hit"
    embedded = [e.key_id for e in recorder.of(RequestEnded) if e.route == "embeddings"]
    assert embedded == [alice.record.id, bob.record.id, alice.record.id]


def test_a_failed_embedding_leaves_exact_matching_working(
    fake_openai: StartFake, gateway_factory: StartGateway, caplog: pytest.LogCaptureFixture,
) -> None:
    fake = fake_openai()
    server = gateway_factory(config(fake, {"model": "no-such-model"}))
    with caplog.at_level(logging.WARNING, logger="sluiceway.cache"):
        assert ask(server, "hello there").headers["x-sluiceway-cache"] == "miss"
        assert ask(server, "hello there").headers["x-sluiceway-cache"] == "hit"
        assert ask(server, "hello there friend").status_code == 200
    warnings = [r.getMessage() for r in caplog.records if r.name == "sluiceway.cache"]
    assert len(warnings) == 1  # once a minute, not once a request
    assert "could not embed the prompt with model 'no-such-model' (status 404)" in warnings[0]


def test_cache_control_applies_to_the_semantic_lookup_too(
    fake_openai: StartFake, gateway_factory: StartGateway,
) -> None:
    fake = fake_openai()
    recorder = EventRecorder()
    server = gateway_factory(config(fake), plugins=[recorder.plugin()])

    def near(text: str, directive: str | None = None) -> httpx.Response:
        response = httpx.post(
            f"{server.base_url}/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": text}]},
            headers={"cache-control": directive} if directive else {})
        recorder.ended(response.headers["x-request-id"])
        return response

    assert near("Where is the Eiffel Tower?", "no-store").headers["x-sluiceway-cache"] == "bypass"
    assert near("where is the eiffel tower", "no-cache").headers["x-sluiceway-cache"] == "miss"
    # The no-cache answer was kept and indexed: a third wording finds it.
    hit = near("Where is the Eiffel tower")
    assert hit.headers["x-sluiceway-cache"] == "hit"
    assert "x-sluiceway-cache-similarity" in hit.headers
    assert len(fake.requests) == 2
