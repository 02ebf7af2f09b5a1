"""Embeddings are metered like chat: the request, its model and provider, and its
prompt tokens, on the same series."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai

from sluiceway.testing import RunningServer


def test_embeddings_are_counted_with_their_tokens(
    gateway_factory: Callable[..., RunningServer], scrape: Callable[..., Any],
    settle: Callable[[RunningServer], None],
) -> None:
    server = gateway_factory({
        "gateway": {"plugins": ["mock", "prometheus"]},
        "providers": [{"name": "mock", "type": "mock", "models": ["mock-embed"]}],
    })
    with openai.OpenAI(api_key="x", base_url=server.base_url, max_retries=0) as client:
        answers = [client.embeddings.create(model="mock-embed", input=text)
                   for text in ("one two three", "four five")]
    settle(server)
    metrics = scrape(server.url)
    assert metrics.value("sluiceway_requests_total", route="embeddings",
                         model="mock-embed", provider="mock", status="200") == 2
    prompt = sum(answer.usage.prompt_tokens for answer in answers)
    assert prompt == 5
    assert metrics.value("sluiceway_tokens_total", kind="prompt",
                         model="mock-embed", provider="mock") == prompt
    assert metrics.value("sluiceway_tokens_total", kind="completion",
                         model="mock-embed") == 0


def test_responses_are_counted_with_their_tokens_whole_and_streamed(
    gateway_factory: Callable[..., RunningServer], scrape: Callable[..., Any],
    settle: Callable[[RunningServer], None],
) -> None:
    server = gateway_factory({
        "gateway": {"plugins": ["mock", "prometheus"]},
        "providers": [{"name": "mock", "type": "mock", "models": ["mock-gpt"]}],
    })
    with openai.OpenAI(api_key="x", base_url=server.base_url, max_retries=0) as client:
        whole = client.responses.create(model="mock-gpt", input="Count me.")
        events = list(client.responses.create(model="mock-gpt", input="And me.", stream=True))
    settle(server)
    metrics = scrape(server.url)
    assert metrics.value("sluiceway_requests_total", route="responses",
                         model="mock-gpt", provider="mock", status="200") == 2
    streamed = events[-1].response.usage  # type: ignore[union-attr]
    assert whole.usage is not None and streamed is not None
    assert metrics.value("sluiceway_tokens_total", kind="completion", model="mock-gpt",
                         provider="mock") == whole.usage.output_tokens + streamed.output_tokens
