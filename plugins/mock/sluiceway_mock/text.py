"""The mock's tokenizer and its deterministic English-ish prose.

The tokenizer is deliberately simple and public, so that a test (or a load
generator) can recount exactly what the mock reports in ``usage``: a token is a
run of word characters or a run of other non-space characters; whitespace is
never a token but rides along with the token after it when text is split into
stream pieces.

Prose is built piece by piece, each piece exactly one token, so that an answer
of ``n`` pieces re-tokenizes to exactly ``n`` tokens: words are pure ``[a-z]``,
and a comma or full stop is never next to another punctuation mark.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = [
    "MESSAGE_OVERHEAD",
    "REPLY_OVERHEAD",
    "WORDS",
    "count_tokens",
    "message_texts",
    "prompt_tokens",
    "prose",
    "split_pieces",
    "words",
]

# Like OpenAI's accounting: every message costs a few tokens of framing, and the
# reply is primed with a few more.
MESSAGE_OVERHEAD = 3
REPLY_OVERHEAD = 3

_TOKEN = re.compile(r"\w+|[^\w\s]+")
# One token with the whitespace before it: the unit of a streamed delta.
_PIECE = re.compile(r"\s*(?:\w+|[^\w\s]+)")

# Function words glue sentences together; a sentence never ends on one.
_FUNCTION_WORDS = """
    the of and to in is that for it as with was on be by this are from at or an
    which have not they but all one can more were their has will been would there
    when what about into other some time could these two may then first any like
    only such over new also after most made well where much through back way
    many before must should because each very just those between every several
""".split()
_CONTENT_WORDS = """
    people years work system data model request answer question gateway stream
    token value result simple small large early later often quickly carefully
    clearly around above below under different important general common possible
    likely useful current recent local global final main open known second third
    make take give find show keep help start turn move play run hold bring write
    provide include continue change follow consider suggest explain describe
    compare measure improve support review design build test check send return
    process number level point part place case group problem fact idea example
    service network server client limit window memory cache queue worker event
    route policy choice option setting detail summary context history signal
    river mountain garden morning evening city road light water paper
""".split()
WORDS: tuple[str, ...] = (*_FUNCTION_WORDS, *_CONTENT_WORDS)
_SPACED = tuple(" " + word for word in WORDS)
_SPACED_CONTENT = tuple(" " + word for word in _CONTENT_WORDS)
_TITLED = tuple(word.capitalize() for word in WORDS)
_SPACED_TITLED = tuple(" " + word for word in _TITLED)
_N = len(WORDS)
_N_CONTENT = len(_CONTENT_WORDS)


def count_tokens(text: str) -> int:
    """The number of tokens in ``text`` under the mock's tokenizer."""
    return len(_TOKEN.findall(text))


def split_pieces(text: str) -> list[str]:
    """Split ``text`` into stream pieces of exactly one token each.

    Joining the pieces gives ``text`` back (trailing whitespace rides on the last
    piece), and ``len(pieces) == count_tokens(text)``. Text with no token at all
    gives no pieces.
    """
    pieces = _PIECE.findall(text)
    if pieces:
        rest = len(text) - sum(map(len, pieces))
        if rest:
            pieces[-1] += text[-rest:]
    return pieces


def message_texts(message: Mapping[str, Any]) -> Iterable[str]:
    """Every piece of text a message carries: its content (a string or the
    ``text`` parts of a list) and the name and arguments of its tool calls."""
    content = message.get("content")
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                yield part["text"]
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            for key in ("name", "arguments"):
                if isinstance(function.get(key), str):
                    yield function[key]


def prompt_tokens(
    messages: Iterable[Mapping[str, Any]], count: Callable[[str], int] = count_tokens
) -> int:
    """Prompt tokens as the mock reports them: ``REPLY_OVERHEAD`` plus, per
    message, :func:`message_tokens` (its overhead, texts and images).
    ``count`` may be a cached :func:`count_tokens`."""
    total = REPLY_OVERHEAD
    for message in messages:
        total += message_tokens(message, count)
    return total


# What an image costs, as OpenAI charges one at "detail": "low".
IMAGE_TOKENS = 85
_IMAGE_PARTS = frozenset({"image_url", "input_image", "image"})


def message_tokens(message: Mapping[str, Any], count: Callable[[str], int] = count_tokens) -> int:
    """One message's share of :func:`prompt_tokens`: ``MESSAGE_OVERHEAD``, its
    texts, and ``IMAGE_TOKENS`` per image part."""
    total = MESSAGE_OVERHEAD
    for text in message_texts(message):
        total += count(text)
    content = message.get("content")
    if isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and part.get("type") in _IMAGE_PARTS:
                total += IMAGE_TOKENS
    return total


def prose(rng: random.Random, count: int, *, leading_space: bool = False) -> list[str]:
    """``count`` pieces (one token each) of sentence-shaped text.

    Sentences run 6 to 16 tokens, sometimes with a comma, and the last piece is
    a full stop whenever ``count`` allows one, so the answer ends like an answer.
    """
    pieces: list[str] = []
    append = pieces.append
    rand = rng.random
    remaining = count
    first = not leading_space
    while remaining > 0:
        length = 6 + int(rand() * 11)
        if remaining - length < 4:
            length = remaining  # never leave a stub too short to be a sentence
        remaining -= length
        append((_TITLED if first else _SPACED_TITLED)[int(rand() * _N)])
        first = False
        if length == 1:
            continue
        words = length - 2  # after the opening word and before the full stop
        # A comma needs a word on both sides: only in sentences long enough.
        comma_at = 1 + int(rand() * (words - 2)) if words >= 5 and rand() < 0.5 else -1
        for position in range(words - 1):
            if position == comma_at:
                append(",")
            else:
                append(_SPACED[int(rand() * _N)])
        if words:
            append(_SPACED_CONTENT[int(rand() * _N_CONTENT)])
        append(".")
    return pieces


def words(rng: random.Random, count: int) -> str:
    """``count`` lower-case words joined by spaces (for generated JSON strings)."""
    rand = rng.random
    return " ".join([WORDS[int(rand() * _N)] for _ in range(count)])
