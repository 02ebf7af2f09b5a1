"""The mock's simulated prompt cache and image counting, through a real gateway:
cached tokens in OpenAI's usage and Anthropic's, priced at the cached rate."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anthropic
import openai
import pytest
from sluiceway_mock import MockOptions
from sluiceway_mock.answer import Answer
from sluiceway_mock.prompt_cache import BLOCK
from sluiceway_mock.provider import MockProvider
from sluiceway_mock.text import IMAGE_TOKENS, count_tokens

from sluiceway.testing import RunningServer

MockGateway = Callable[..., RunningServer]
# About 1,200 tokens of shared context, then a question.
CONTEXT = {"role": "system", "content": " ".join(f"rule{i} applies." for i in range(400))}


def _conversation(*questions: str) -> list[dict[str, Any]]:
    return [CONTEXT, *({"role": "user", "content": q} for q in questions)]


def _cached(usage: Any) -> int:
    details = usage.prompt_tokens_details
    return (details.cached_tokens or 0) if details is not None else 0


def test_a_repeated_prefix_is_read_from_the_cache(mock_gateway: MockGateway) -> None:
    server = mock_gateway()
    with openai.OpenAI(api_key="x", base_url=server.base_url, max_retries=0) as client:
        first = client.chat.completions.create(model="mock-gpt",
                                               messages=_conversation("What applies?"))
        again = client.chat.completions.create(model="mock-gpt",
                                               messages=_conversation("What applies?"))
        longer = client.chat.completions.create(
            model="mock-gpt", messages=_conversation("What applies?", "And then?"))
        other_model = client.chat.completions.create(
            model="mock-reasoner", messages=_conversation("What applies?"))
        short = [{"role": "user", "content": "hi"}]
        client.chat.completions.create(model="mock-gpt", messages=short)
        short_again = client.chat.completions.create(model="mock-gpt", messages=short)
        streamed = list(client.chat.completions.create(
            model="mock-gpt", messages=_conversation("What applies?"), stream=True,
            stream_options={"include_usage": True}))
    assert first.usage is not None and again.usage is not None and longer.usage is not None
    prompt = first.usage.prompt_tokens
    assert prompt >= 1024
    assert _cached(first.usage) == 0
    # The whole prompt was seen: cached in blocks of 128 tokens.
    assert _cached(again.usage) == prompt // BLOCK * BLOCK
    # A longer conversation reads the part it shares.
    assert _cached(longer.usage) == prompt // BLOCK * BLOCK
    assert longer.usage.prompt_tokens > prompt
    # The cache is per model, and short prompts are never cached.
    assert other_model.usage is not None and _cached(other_model.usage) == 0
    assert short_again.usage is not None and _cached(short_again.usage) == 0
    assert streamed[-1].usage is not None and _cached(streamed[-1].usage) == (
        prompt // BLOCK * BLOCK)


def test_anthropic_clients_see_cache_reads_and_costs_use_the_cached_price(
    gateway_factory: Callable[..., RunningServer],
) -> None:
    server = gateway_factory({
        "gateway": {"plugins": ["mock", "costs"]},
        "providers": [{"name": "mock", "type": "mock", "models": ["mock-gpt"]}],
        "plugin": {"costs": {"prices": {"mock-gpt": {
            "input": 1.0, "cached_input": 0.1, "output": 2.0}}}},
    })
    messages: Any = [{"role": "user", "content": CONTEXT["content"]}]
    with anthropic.Anthropic(api_key="x", base_url=server.url, max_retries=0) as claude:
        claude.messages.create(model="mock-gpt", max_tokens=16, messages=messages)
        hit = claude.messages.with_raw_response.create(model="mock-gpt", max_tokens=16,
                                                       messages=messages)
    usage = hit.parse().usage
    read = usage.cache_read_input_tokens or 0
    assert read > 0 and read % BLOCK == 0
    # input_tokens excludes what was read from the cache, as Anthropic reports it.
    total_prompt = usage.input_tokens + read
    expected = ((total_prompt - read) * 1.0 + read * 0.1 + usage.output_tokens * 2.0) / 1e6
    assert float(hit.headers["x-sluiceway-cost"]) == pytest.approx(expected, rel=1e-3)


def test_images_are_accepted_and_counted(mock_gateway: MockGateway) -> None:
    server = mock_gateway()
    text = "What is in this picture?"
    with openai.OpenAI(api_key="x", base_url=server.base_url, max_retries=0) as client:
        reply = client.chat.completions.create(model="mock-gpt", messages=[{
            "role": "user", "content": [
                {"type": "text", "text": text},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ],
        }])
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == 3 + 3 + count_tokens(text) + IMAGE_TOKENS


def test_a_cache_hit_shortens_the_first_token_and_can_be_turned_off() -> None:
    options = MockOptions(ttft=1.0)
    provider = MockProvider("mock", options, [])
    assert provider._ttft(Answer([], prompt_tokens=2000, reasoning=False,
                                 cached_tokens=1536)) == pytest.approx(0.232)
    assert provider._ttft(Answer([], prompt_tokens=2000, reasoning=False)) == 1.0
    assert MockProvider("mock", MockOptions(prompt_cache=False), [])._prompt_cache is None
