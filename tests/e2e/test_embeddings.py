"""``POST /v1/embeddings`` end to end with the real openai SDK: the mock's
deterministic vectors, the openai provider passing through to a real local
upstream, errors in the OpenAI shape, and limits and costs applied as to chat."""

from __future__ import annotations

import base64
import json
import math
import struct
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from sluiceway.testing import RunningServer, read_body

Factory = Callable[..., RunningServer]
MOCK = {"name": "mock", "type": "mock", "models": ["mock-embed", "mock-gpt"]}


def _client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(api_key="unused", base_url=server.base_url, max_retries=0)


def test_the_mock_embeds_deterministically_in_either_encoding(gateway_factory: Factory) -> None:
    server = gateway_factory({"gateway": {"plugins": ["mock"]}, "providers": [MOCK]})
    with _client(server) as client:
        # The SDK asks for base64 by default and decodes it itself.
        one = client.embeddings.create(model="mock-embed", input="the cat sat")
        again = client.embeddings.create(model="mock-embed", input="the cat sat",
                                         encoding_format="float")
        many = client.embeddings.create(model="mock-embed", input=["the cat sat", "a dog ran"],
                                        dimensions=64)
        tokens = client.embeddings.create(model="mock-embed", input=[[1, 2, 3], [4, 5]])
        # One input of token ids may be longer than the cap on the number of inputs.
        long = client.embeddings.create(model="mock-embed", input=[7] * 3000)
    vector = one.data[0].embedding
    assert len(vector) == 1536
    assert math.isclose(math.sqrt(sum(v * v for v in vector)), 1.0, rel_tol=1e-5)
    # float32 on the wire in base64, doubles in float: the same vector.
    assert all(math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-7)
               for a, b in zip(vector, again.data[0].embedding, strict=True))
    assert [d.index for d in many.data] == [0, 1]
    assert [len(d.embedding) for d in many.data] == [64, 64]
    assert many.data[0].embedding != many.data[1].embedding
    assert one.usage.prompt_tokens == 3 and one.usage.total_tokens == 3
    assert tokens.usage.prompt_tokens == 5 and len(tokens.data) == 2
    assert long.usage.prompt_tokens == 3000 and len(long.data) == 1
    assert one.model == "mock-embed"


def test_bad_embeddings_requests_get_openai_errors(gateway_factory: Factory) -> None:
    server = gateway_factory({"gateway": {"plugins": ["mock"]}, "providers": [MOCK]})
    with httpx.Client(base_url=server.base_url) as client:
        for body, param in (
            ({"model": "mock-embed", "input": ""}, "input"),
            ({"model": "mock-embed", "input": []}, "input"),
            ({"model": "mock-embed", "input": ["a", ""]}, "input[1]"),
            ({"model": "mock-embed", "input": ["a", [1]]}, "input[0]"),
            ({"model": "mock-embed"}, "input"),
            ({"input": "hi"}, "model"),
            ({"model": "mock-embed", "input": "hi", "encoding_format": "int8"},
             "encoding_format"),
            ({"model": "mock-embed", "input": "hi", "dimensions": 0}, "dimensions"),
        ):
            answer = client.post("/embeddings", json=body)
            assert answer.status_code == 400, body
            assert answer.json()["error"]["param"] == param, body
            assert answer.json()["error"]["type"] == "invalid_request_error"
        malformed = client.post("/embeddings", content=b"{nope",
                                headers={"content-type": "application/json"})
        assert malformed.status_code == 400
        unknown = client.post("/embeddings", json={"model": "nope", "input": "hi"})
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "model_not_found"


class EmbeddingsUpstream:
    """An OpenAI-compatible upstream's /v1/embeddings, recording what it was sent;
    answers floats even when base64 was asked, when ``floats`` is set."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.floats = False
        self.garbage = False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = json.loads(await read_body(receive))
        self.bodies.append(body)
        vector: list[Any] = [0.5, -0.25, 0.125] if not self.garbage else [0.5, None, "x"]
        packed = base64.b64encode(struct.pack("<3f", 0.5, -0.25, 0.125)).decode()
        # A real upstream answers what was asked; this one can be made not to.
        as_base64 = (body.get("encoding_format") == "base64") != self.floats and not self.garbage
        answer = {"object": "list", "model": body["model"], "data": [
            {"object": "embedding", "index": 0, "embedding": packed if as_base64 else vector}],
            "usage": {"prompt_tokens": 2, "total_tokens": 2}}
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": json.dumps(answer).encode()})


def test_the_openai_provider_passes_embeddings_through(
    gateway_factory: Factory, serve_asgi: Factory,
) -> None:
    upstream = EmbeddingsUpstream()
    api = serve_asgi(upstream)
    server = gateway_factory({"gateway": {"plugins": ["openai"]}, "providers": [{
        "name": "up", "type": "openai", "base_url": api.url + "/v1",
        "models": [{"name": "embed", "upstream": "text-embedding-3-small"}],
    }]})
    with _client(server) as client:
        passed = client.embeddings.create(model="embed", input="hi", dimensions=3)
        upstream.floats = True
        packed = client.embeddings.create(model="embed", input="hi")
        unpacked = client.embeddings.create(model="embed", input="hi", encoding_format="float")
        upstream.floats, upstream.garbage = False, True
        with pytest.raises(openai.APIStatusError) as garbage:
            client.embeddings.create(model="embed", input="hi")
    assert passed.data[0].embedding == [0.5, -0.25, 0.125]
    # Base64 from an upstream that ignored float is unpacked by the gateway.
    assert unpacked.data[0].embedding == [0.5, -0.25, 0.125]
    assert garbage.value.status_code == 502
    assert garbage.value.code == "upstream_invalid_response"
    # Floats from an upstream that ignored base64 are packed by the gateway.
    assert packed.data[0].embedding == [0.5, -0.25, 0.125]
    assert upstream.bodies[0] == {"model": "text-embedding-3-small", "input": "hi",
                                  "dimensions": 3, "encoding_format": "base64"}
    assert passed.usage.prompt_tokens == 2


def test_a_model_without_embeddings_says_so(
    gateway_factory: Factory, serve_asgi: Factory,
) -> None:
    server = gateway_factory({"gateway": {"plugins": ["anthropic"]}, "providers": [{
        "name": "claude", "type": "anthropic", "base_url": "http://127.0.0.1:9",
        "api_key": "unused", "models": ["claude-x"],
    }]})
    with _client(server) as client, pytest.raises(openai.BadRequestError) as refused:
        client.embeddings.create(model="claude-x", input="hi")
    assert refused.value.code == "model_not_supported"
    assert "does not serve embeddings" in str(refused.value)


def test_an_alias_tries_only_the_targets_that_serve_embeddings(
    gateway_factory: Factory,
) -> None:
    """The first target has no embeddings (and no reachable upstream): it is passed
    over, not tried and failed."""
    server = gateway_factory({
        "gateway": {"plugins": ["mock", "anthropic"]},
        "providers": [
            {"name": "claude", "type": "anthropic", "base_url": "http://127.0.0.1:9",
             "api_key": "unused", "models": ["claude-x"]},
            {"name": "mock", "type": "mock", "models": ["embed-x"]},
        ],
        "aliases": [{"name": "embed", "targets": ["claude/claude-x", "mock/embed-x"]}],
    })
    with _client(server) as client:
        answer = client.embeddings.with_raw_response.create(model="embed", input="hi")
    assert answer.headers["x-sluiceway-provider"] == "mock"
    assert answer.headers["x-sluiceway-attempts"] == "1"
    assert len(answer.parse().data) == 1


def test_limits_count_only_input_tokens_and_costs_price_them(gateway_factory: Factory) -> None:
    server = gateway_factory({
        "gateway": {"plugins": ["mock", "costs", "limits"]},
        "providers": [MOCK],
        # A chat reserves its output (default_max_tokens 1024) and is refused;
        # an embedding reserves only its input.
        "plugin": {"limits": {"default_tpm": 100},
                   "costs": {"prices": {"mock-embed": {"input": 0.02, "output": 0.0}}}},
    })
    with _client(server) as client:
        embedded = client.embeddings.with_raw_response.create(model="mock-embed",
                                                              input="the cat sat on the mat")
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="mock-gpt",
                                           messages=[{"role": "user", "content": "hi"}])
    assert embedded.status_code == 200
    assert embedded.headers["x-ratelimit-limit-tokens"] == "100"
    # 6 tokens at $0.02 per million.
    assert float(embedded.headers["x-sluiceway-cost"]) == pytest.approx(6 * 0.02 / 1e6)
