"""The mock's tokenizer and prose: the rules usage accounting rests on."""

from __future__ import annotations

import random
from typing import Any

import pytest
from sluiceway_mock.text import (
    IMAGE_TOKENS,
    MESSAGE_OVERHEAD,
    REPLY_OVERHEAD,
    WORDS,
    count_tokens,
    prompt_tokens,
    prose,
    split_pieces,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        ("   ", 0),
        ("Hello, world.", 4),
        ("get_weather", 1),
        ('{"city":"Paris","days":3}', 9),
        ("a  b\n\nc", 3),
        ("!!!", 1),
    ],
)
def test_count_tokens(text: str, expected: int) -> None:
    assert count_tokens(text) == expected


@pytest.mark.parametrize(
    "text", ["Hello, world.", '{"a": [1, 2]}', "trailing space ", "  leading", "x", ""]
)
def test_split_pieces_round_trips_one_token_each(text: str) -> None:
    pieces = split_pieces(text)
    assert "".join(pieces) == (text if count_tokens(text) else "")
    assert len(pieces) == count_tokens(text)
    assert all(count_tokens(piece) == 1 for piece in pieces)


@pytest.mark.parametrize("count", [0, 1, 2, 3, 5, 7, 24, 100])
def test_prose_has_exactly_the_asked_tokens(count: int) -> None:
    for seed in range(40):
        pieces = prose(random.Random(seed), count)
        text = "".join(pieces)
        assert len(pieces) == count
        assert count_tokens(text) == count
        assert split_pieces(text) == pieces
        if count >= 2:
            assert text.endswith(".")
            assert text[0].isupper()


def test_prose_is_deterministic_and_seed_dependent() -> None:
    assert prose(random.Random(1), 30) == prose(random.Random(1), 30)
    assert prose(random.Random(1), 30) != prose(random.Random(2), 30)


def test_word_list_words_are_single_tokens() -> None:
    assert len(WORDS) > 100
    assert all(word.isalpha() and count_tokens(word) == 1 for word in WORDS)


def test_prompt_tokens_counts_every_text_part_image_and_tool_call() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [
            {"type": "text", "text": "Hello there"},
            {"type": "image_url", "image_url": {"url": "https://example.com/x.png"}},
            {"type": "text", "text": "and here."},
        ]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "lookup", "arguments": '{"q":"x"}'}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
    ]
    texts = ["Be brief.", "Hello there", "and here.", "lookup", '{"q":"x"}', "42"]
    expected = (REPLY_OVERHEAD + 4 * MESSAGE_OVERHEAD + sum(count_tokens(t) for t in texts)
                + IMAGE_TOKENS)
    assert prompt_tokens(messages) == expected
