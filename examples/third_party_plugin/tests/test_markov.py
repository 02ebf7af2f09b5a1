"""Tests of sluiceway-markov, using only the fixtures sluiceway ships for plugin authors.

``gateway_factory`` (from ``sluiceway.testing``, installed as a pytest plugin)
builds a gateway from a dict shaped like plugins.toml and serves it on a free
loopback port; the plugin is found through its installed entry point, exactly
as in production.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest
from click.testing import CliRunner
from openai.types.chat import ChatCompletionMessageParam
from sluiceway_markov import build_chain, generate

import sluiceway
from sluiceway.cli import build_cli
from sluiceway.testing import RunningServer
from sluiceway.testing.conformance import ProviderConformance

CONFIG = {
    "gateway": {"plugins": ["markov"]},
    "providers": [{"name": "markov", "type": "markov", "seed": 7, "length": 8}],
}
TEXT = "the cat sat on the mat and the dog sat on the cat"
PROMPT: list[ChatCompletionMessageParam] = [{"role": "user", "content": TEXT}]


def test_chain_follows_the_text() -> None:
    chain = build_chain("a b a c")
    assert chain == {"a": ["b", "c"], "b": ["a"], "c": []}
    words = generate(chain, 6, random.Random(1))
    assert len(words) == 6
    assert set(words) <= {"a", "b", "c"}
    assert generate({}, 6, random.Random(1)) == []


def test_serves_chat_and_streams(gateway_factory: Callable[..., RunningServer]) -> None:
    server = gateway_factory(CONFIG)
    with openai.OpenAI(api_key="unused", base_url=server.base_url, max_retries=0) as client:
        assert [m.id for m in client.models.list()] == ["markov"]
        reply = client.chat.completions.create(model="markov", messages=PROMPT)
        text = reply.choices[0].message.content
        assert text is not None and len(text.split()) == 8
        assert set(text.split()) <= set(TEXT.split())
        assert reply.usage is not None and reply.usage.completion_tokens == 8

        # The seed makes the stream say exactly what the plain answer said.
        stream = client.chat.completions.create(
            model="markov", messages=PROMPT, stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8

        short = client.chat.completions.create(
            model="markov", messages=PROMPT, max_tokens=3,
        )
        assert short.choices[0].finish_reason == "length"
        assert len((short.choices[0].message.content or "").split()) == 3


def test_options_are_validated() -> None:
    bad = {**CONFIG, "providers": [{"name": "markov", "type": "markov", "lenght": 3}]}
    with pytest.raises(sluiceway.ConfigError, match=r"providers\[0\]\.lenght: unknown key"):
        sluiceway.create_app(bad)
    slow = {**CONFIG, "providers": [{"name": "markov", "type": "markov", "delay": "soon"}]}
    with pytest.raises(sluiceway.ConfigError, match=r"providers\[0\]\.delay: expected a duration"):
        sluiceway.create_app(slow)


def test_command_is_added_to_the_cli(tmp_path: Path) -> None:
    config = tmp_path / "plugins.toml"
    config.write_text('[gateway]\nplugins = ["markov"]\n')
    cli = build_cli(str(config))
    result = CliRunner().invoke(cli, ["markov", "a b a c", "--length", "4", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert len(result.output.split()) == 4
    # Without the plugin listed, the command does not exist.
    config.write_text("[gateway]\nplugins = []\n")
    assert "markov" not in build_cli(str(config)).commands


class TestMarkovConformance(ProviderConformance):
    """The conformance suite every provider runs; markov has no upstream, so the
    part for HTTP providers does not apply."""

    plugins = ("markov",)
    model = "markov"
    prompt = TEXT

    def provider_table(self, url: str) -> dict[str, Any]:
        return {"type": "markov", "seed": 7, "length": 12, "delay": "50ms"}
