"""The one token estimate (sluiceway.wire.estimate), on both wire shapes."""

from __future__ import annotations

import math

from sluiceway.api import estimate_input_tokens, estimate_tokens

IMAGE_URL = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}


def test_openai_text_and_images_and_the_output_cap() -> None:
    body = {"messages": [{"role": "system", "content": "12345678"},
                         {"role": "user", "content": [{"type": "text", "text": "abc"},
                                                      IMAGE_URL]}]}
    # 11 characters, 2 messages at 3 tokens, one image.
    assert estimate_input_tokens(body) == math.ceil(11 / 4) + 6 + 1600
    assert estimate_tokens(body, 100) == 3 + 6 + 1600 + 100
    assert estimate_tokens({**body, "max_tokens": 7}, 100) == 3 + 6 + 1600 + 7
    both = {**body, "max_tokens": 7, "max_completion_tokens": 9}
    assert estimate_tokens(both, 100) == 3 + 6 + 1600 + 9
    # A boolean is no count.
    assert estimate_tokens({**body, "max_tokens": True}, 100) == 3 + 6 + 1600 + 100
    assert estimate_tokens([], 100) == 100


def test_openai_tool_calls_and_tools_count_by_their_json() -> None:
    calls = [{"id": "c1", "type": "function",
              "function": {"name": "f", "arguments": '{"x":1}'}}]
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    plain = {"messages": [{"role": "assistant", "content": None}]}
    with_calls = {"messages": [{"role": "assistant", "content": None, "tool_calls": calls}],
                  "tools": tools}
    extra = estimate_input_tokens(with_calls) - estimate_input_tokens(plain)
    assert extra > len("f") // 4
    assert estimate_input_tokens(plain) == 3


def test_anthropic_system_outside_the_messages() -> None:
    anthropic = {"system": [{"type": "text", "text": "x" * 40}], "max_tokens": 5,
                 "messages": [{"role": "user", "content": "abcd"}]}
    assert estimate_tokens(anthropic, 100) == 10 + 1 + 3 + 5
    assert estimate_tokens({**anthropic, "system": "y" * 8}, 100) == 2 + 1 + 3 + 5


def test_not_a_body_is_nothing() -> None:
    for body in (None, [], "text", 3):
        assert estimate_input_tokens(body) == 0
