"""The gateway's one token estimate, for both wire shapes.

Used before an upstream has counted anything: by the limits policy to reserve
tokens, and by ``/v1/messages/count_tokens`` for a provider that cannot count.
It is a cheap upper-bound guess, not a tokenizer: text at 4 characters a token
(rounded up), 3 tokens per message for the role and separators, 1600 per image,
document or audio part, and tool definitions and tool calls by the length of
their JSON. It reads OpenAI chat bodies and Anthropic Messages bodies alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import msgspec

__all__ = ["estimate_input_tokens", "estimate_tokens", "max_output_tokens"]

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 3
TOKENS_PER_ATTACHMENT = 1600
_ATTACHMENTS = frozenset({"image", "image_url", "document", "input_audio", "file"})
_encode = msgspec.json.Encoder().encode


def _json_length(value: object) -> int:
    try:
        return len(_encode(value))
    except (TypeError, ValueError, OverflowError):
        return len(str(value))


def _content(content: object) -> tuple[int, int]:
    """(characters of text, attachments) in one content value, blocks included."""
    if isinstance(content, str):
        return len(content), 0
    chars = attachments = 0
    if isinstance(content, list):
        for block in content:
            if isinstance(block, str):
                chars += len(block)
                continue
            if not isinstance(block, Mapping):
                continue
            kind = block.get("type")
            if kind in _ATTACHMENTS:
                attachments += 1
            elif kind == "tool_use":
                chars += len(str(block.get("name", ""))) + _json_length(block.get("input") or {})
            elif kind == "tool_result":
                more, files = _content(block.get("content"))
                chars, attachments = chars + more, attachments + files
            else:
                for key in ("text", "thinking"):
                    value = block.get(key)
                    if isinstance(value, str):
                        chars += len(value)
    return chars, attachments


def estimate_input_tokens(body: object) -> int:
    """A rough count of a request's input tokens (see the module's rules)."""
    if not isinstance(body, Mapping):
        return 0
    # Anthropic keeps the system prompt beside the messages; OpenAI inside them.
    chars, attachments = _content(body.get("system"))
    messages = body.get("messages")
    count = 0
    if isinstance(messages, list):
        for message in messages:
            count += 1
            if not isinstance(message, Mapping):
                continue
            more, files = _content(message.get("content"))
            chars, attachments = chars + more, attachments + files
            calls = message.get("tool_calls")
            if calls:
                chars += _json_length(calls)
    tools = body.get("tools")
    if tools:
        chars += _json_length(tools)
    # Embeddings (and Responses) take ``input``: text, texts, or token ids.
    given = body.get("input")
    if isinstance(given, str):
        chars += len(given)
    elif isinstance(given, list):
        tokens = 0
        for item in given:
            if isinstance(item, str):
                chars += len(item)
            elif isinstance(item, int):
                tokens += 1
            elif isinstance(item, list):
                tokens += len(item)
            elif isinstance(item, Mapping):
                more, files = _content(item.get("content"))
                chars, attachments = chars + more, attachments + files
        chars += tokens * CHARS_PER_TOKEN
    return (math.ceil(chars / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * count
            + TOKENS_PER_ATTACHMENT * attachments)


def max_output_tokens(body: object) -> int | None:
    """The output a request caps itself at: ``max_completion_tokens``, else
    ``max_tokens`` (Anthropic's name too), else ``None``."""
    if not isinstance(body, Mapping):
        return None
    for field in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        value = body.get(field)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def estimate_tokens(body: object, default_max_tokens: int) -> int:
    """Input estimate plus the output the request may produce (its own cap,
    else ``default_max_tokens``): what a token limit reserves up front."""
    output = max_output_tokens(body)
    return estimate_input_tokens(body) + (default_max_tokens if output is None else output)

