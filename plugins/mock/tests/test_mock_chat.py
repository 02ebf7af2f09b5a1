"""Text answers through a real gateway, driven by the OpenAI SDK and plain HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
from sluiceway_mock.text import count_tokens

from sluiceway.testing import RunningServer

MockGateway = Callable[..., RunningServer]
Chunks = list[dict[str, Any]]
RawStream = Callable[[RunningServer, dict[str, Any]], Chunks]
Reassemble = Callable[[Chunks], dict[int, dict[str, Any]]]

HELLO: list[dict[str, Any]] = [{"role": "user", "content": "Say hello to the gateway."}]


def _ask(client: openai.OpenAI, **kwargs: Any) -> Any:
    kwargs.setdefault("model", "mock-gpt")
    kwargs.setdefault("messages", HELLO)
    return client.chat.completions.create(**kwargs)


def _expected_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    # Recounted here from the documented rule: 3 per message, 3 to prime the reply.
    total = 3
    for message in messages:
        content = message["content"]
        parts = [content] if isinstance(content, str) else [p["text"] for p in content]
        total += 3 + sum(count_tokens(part) for part in parts)
    return total


def test_same_request_same_answer(client: openai.OpenAI) -> None:
    first, second = _ask(client), _ask(client)
    assert first.choices[0].message.content == second.choices[0].message.content
    assert first.id != second.id
    reseeded = _ask(client, seed=42)
    assert reseeded.choices[0].message.content != first.choices[0].message.content
    assert _ask(client, seed=42).choices[0].message.content == reseeded.choices[0].message.content
    other = _ask(client, messages=[{"role": "user", "content": "Something else."}])
    assert other.choices[0].message.content != first.choices[0].message.content


def test_answers_are_stable_across_gateways_and_follow_the_seed(mock_gateway: MockGateway) -> None:
    def answer(**options: Any) -> str:
        server = mock_gateway(**options)
        with openai.OpenAI(api_key="x", base_url=server.base_url, max_retries=0) as sdk:
            content = _ask(sdk).choices[0].message.content
        assert isinstance(content, str)
        return content

    assert answer(seed=7) == answer(seed=7)
    assert answer(seed=7) != answer(seed=8)


def test_answer_looks_like_sentences_and_usage_is_exact(client: openai.OpenAI) -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are terse, and precise."},
        {"role": "user", "content": [{"type": "text", "text": "What's up?"},
                                     {"type": "text", "text": "Tell me (briefly)."}]},
    ]
    response = _ask(client, messages=messages)
    choice = response.choices[0]
    content = choice.message.content
    assert isinstance(content, str)
    assert content[0].isupper() and content.endswith(".")
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert response.object == "chat.completion"
    assert response.model == "mock-gpt"
    assert response.usage is not None
    assert response.usage.completion_tokens == count_tokens(content) == 24
    assert response.usage.prompt_tokens == _expected_prompt_tokens(messages)
    assert response.usage.total_tokens == (
        response.usage.prompt_tokens + response.usage.completion_tokens
    )
    assert response.usage.completion_tokens_details is None


def test_response_tokens_sets_the_natural_length(mock_gateway: MockGateway) -> None:
    server = mock_gateway(response_tokens=57)
    with openai.OpenAI(api_key="x", base_url=server.base_url, max_retries=0) as sdk:
        response = _ask(sdk)
    assert response.usage is not None and response.usage.completion_tokens == 57
    assert count_tokens(response.choices[0].message.content or "") == 57


@pytest.mark.parametrize("parameter", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_truncates_with_finish_reason_length(
    client: openai.OpenAI, parameter: str
) -> None:
    full = _ask(client).choices[0].message.content or ""
    response = _ask(client, **{parameter: 5})
    content = response.choices[0].message.content or ""
    assert response.choices[0].finish_reason == "length"
    assert count_tokens(content) == 5
    assert response.usage is not None and response.usage.completion_tokens == 5
    assert full.startswith(content) and len(content) < len(full)
    roomy = _ask(client, **{parameter: 24})
    assert roomy.choices[0].finish_reason == "stop"
    assert roomy.choices[0].message.content == full


@pytest.mark.parametrize("as_list", [False, True])
def test_stop_sequence_cuts_before_it(client: openai.OpenAI, as_list: bool) -> None:
    full = _ask(client).choices[0].message.content or ""
    stop = full.split()[6]
    response = _ask(client, stop=[stop, "zzz-never"] if as_list else stop)
    content = response.choices[0].message.content or ""
    assert content == full[: full.find(stop)]
    assert response.choices[0].finish_reason == "stop"
    # Which sequence matched, as vLLM says it (the Anthropic ingress needs it).
    assert (response.choices[0].model_extra or {})["stop_reason"] == stop
    assert "stop_reason" not in (_ask(client).choices[0].model_extra or {})
    assert response.usage is not None
    assert response.usage.completion_tokens == count_tokens(content) < 24


def test_n_gives_distinct_choices(client: openai.OpenAI) -> None:
    response = _ask(client, n=3)
    assert [choice.index for choice in response.choices] == [0, 1, 2]
    contents = [choice.message.content or "" for choice in response.choices]
    assert len(set(contents)) == 3
    assert contents[0] == _ask(client).choices[0].message.content
    assert response.usage is not None
    assert response.usage.completion_tokens == sum(count_tokens(c) for c in contents)


def test_model_in_responses_is_the_upstream_id(mock_gateway: MockGateway) -> None:
    server = mock_gateway(models=[{"name": "public-name", "upstream": "mock-upstream-id"}])
    with openai.OpenAI(api_key="x", base_url=server.base_url, max_retries=0) as sdk:
        response = _ask(sdk, model="public-name")
        chunks = list(_ask(sdk, model="public-name", stream=True))
    assert response.model == "mock-upstream-id"
    assert {chunk.model for chunk in chunks} == {"mock-upstream-id"}


def test_default_models_when_the_table_lists_none(mock_gateway: MockGateway) -> None:
    server = mock_gateway(models=[])
    with openai.OpenAI(api_key="x", base_url=server.base_url, max_retries=0) as sdk:
        listed = {model.id for model in sdk.models.list()}
        assert listed == {"mock-gpt", "mock-reasoner", "mock-embed"}
        plain = _ask(sdk, model="mock-gpt")
        reasoner = _ask(sdk, model="mock-reasoner")
    assert "reasoning_content" not in (plain.choices[0].message.model_extra or {})
    assert (reasoner.choices[0].message.model_extra or {})["reasoning_content"]


# -- streaming ----------------------------------------------------------------


def test_stream_chunk_format(server: RunningServer, raw_stream: RawStream) -> None:
    chunks = raw_stream(server, {"model": "mock-gpt", "messages": HELLO})
    assert all(set(c) == {"id", "object", "created", "model", "choices"} for c in chunks)
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("chatcmpl-")
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert {c["model"] for c in chunks} == {"mock-gpt"}
    first, *middle, last = (c["choices"] for c in chunks)
    assert first == [{"index": 0, "delta": {"role": "assistant", "content": ""},
                      "logprobs": None, "finish_reason": None}]
    assert last == [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]
    assert len(middle) == 24
    for choices in middle:
        (choice,) = choices
        assert set(choice["delta"]) == {"content"} and choice["finish_reason"] is None
        assert count_tokens(choice["delta"]["content"]) == 1


def test_include_usage_adds_a_final_usage_chunk(
    server: RunningServer, raw_stream: RawStream, client: openai.OpenAI
) -> None:
    body = {"model": "mock-gpt", "messages": HELLO, "stream_options": {"include_usage": True}}
    chunks = raw_stream(server, body)
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == _ask(client).usage.model_dump(exclude_none=True)
    assert all("usage" not in chunk for chunk in chunks[:-1])
    # The SDK sees the same.
    streamed = list(_ask(client, stream=True, stream_options={"include_usage": True}))
    assert streamed[-1].usage is not None and streamed[-1].usage.completion_tokens == 24
    assert all(chunk.usage is None for chunk in _ask(client, stream=True))


STREAM_CASES: dict[str, dict[str, Any]] = {
    "plain": {},
    "n": {"n": 3},
    "max_tokens": {"max_tokens": 7},
    "stop": {"stop": ["."]},
    "n-stop": {"n": 4, "stop": [","]},
    "reasoning": {"model": "mock-reasoner"},
    "reasoning-cut": {"model": "mock-reasoner", "max_tokens": 10},
    "reasoning-n": {"model": "mock-reasoner", "n": 2, "max_tokens": 30},
}


@pytest.mark.parametrize("case", sorted(STREAM_CASES))
def test_stream_reassembles_to_the_non_streamed_message(
    case: str, server: RunningServer, raw_stream: RawStream, reassemble: Reassemble
) -> None:
    body = {"model": "mock-gpt", "messages": HELLO, **STREAM_CASES[case]}
    streamed = reassemble(raw_stream(server, {**body, "stream_options": {"include_usage": True}}))
    whole = httpx.post(server.base_url + "/chat/completions", json=body, timeout=30).json()
    assert sorted(streamed) == [c["index"] for c in whole["choices"]]
    for choice in whole["choices"]:
        message = streamed[choice["index"]]
        assert message["finish_reason"] == choice["finish_reason"]
        assert message["role"] == "assistant"
        assert message["content"] == choice["message"]["content"]
        assert message.get("reasoning_content") == choice["message"].get("reasoning_content")


def test_reasoning_usage_and_order(
    client: openai.OpenAI, server: RunningServer, raw_stream: RawStream
) -> None:
    response = _ask(client, model="mock-reasoner")
    message = response.choices[0].message
    reasoning = (message.model_extra or {})["reasoning_content"]
    content = message.content or ""
    assert reasoning.startswith("Let me think") and content
    assert response.usage is not None and response.usage.completion_tokens_details is not None
    assert response.usage.completion_tokens_details.reasoning_tokens == count_tokens(reasoning)
    assert response.usage.completion_tokens == count_tokens(reasoning) + count_tokens(content)
    kinds = [next(iter(c["choices"][0]["delta"])) for c in
             raw_stream(server, {"model": "mock-reasoner", "messages": HELLO})[1:-1]]
    assert kinds == ["reasoning_content"] * 24 + ["content"] * 24


def test_reasoning_can_use_up_the_whole_budget(client: openai.OpenAI) -> None:
    response = _ask(client, model="mock-reasoner", max_completion_tokens=10)
    assert response.choices[0].finish_reason == "length"
    assert response.choices[0].message.content == ""
    assert response.usage is not None and response.usage.completion_tokens == 10
    assert response.usage.completion_tokens_details is not None
    assert response.usage.completion_tokens_details.reasoning_tokens == 10


async def test_async_client_concurrent_streams(server: RunningServer) -> None:
    async with openai.AsyncOpenAI(api_key="x", base_url=server.base_url, max_retries=0) as sdk:

        async def create(**kwargs: Any) -> Any:
            kwargs.update(model="mock-gpt", messages=HELLO)
            return await sdk.chat.completions.create(**kwargs)

        async def one(seed: int) -> str:
            stream = await create(seed=seed, stream=True)
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

        answers = await asyncio.gather(*(one(seed % 4) for seed in range(12)))
        whole = await create(seed=1)
    assert len(set(answers)) == 4
    assert answers[1] == answers[5] == whole.choices[0].message.content


def test_latency_options_are_accepted(mock_gateway: MockGateway) -> None:
    server = mock_gateway(ttft="20ms", token_delay="1ms", response_tokens=5)
    with openai.OpenAI(api_key="x", base_url=server.base_url, max_retries=0) as sdk:
        streamed = "".join(c.choices[0].delta.content or "" for c in _ask(sdk, stream=True))
        assert streamed == _ask(sdk).choices[0].message.content
