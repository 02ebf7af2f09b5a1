"""Anthropic Messages requests: validation, the canonical form, and a token estimate.

Validation checks only what the gateway relies on and what Anthropic itself
would refuse at once (a missing ``max_tokens``, a ``temperature`` above 1); any
other field passes through untouched, so a provider that speaks Anthropic
natively receives the client's own body. Error messages follow Anthropic's
style (``max_tokens: Field required``).
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from ..components import ChatRequest, MessagesRequest
from ..errors import InvalidRequest
from .translate_ingress import openai_request

__all__ = ["chat_request", "estimate_input_tokens", "parse_messages_request"]


class _Message(msgspec.Struct):
    role: Literal["user", "assistant"]
    content: str | list[dict[str, Any]]


_Unit = Annotated[float, Meta(ge=0, le=1)]


class _CountParams(msgspec.Struct, kw_only=True):
    """``/v1/messages/count_tokens``: what both endpoints share."""

    model: str
    messages: Annotated[list[_Message], Meta(min_length=1)]
    system: str | list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None


class _MessagesParams(_CountParams, kw_only=True):
    max_tokens: Annotated[int, Meta(ge=1)]
    stream: bool | None = None
    temperature: _Unit | None = None
    top_p: _Unit | None = None
    top_k: Annotated[int, Meta(ge=0)] | None = None
    stop_sequences: list[str] | None = None
    metadata: dict[str, Any] | None = None


_INDEX = re.compile(r"\[(\d+)\]")


def _param(path: str) -> str:
    """msgspec's ``$.messages[0].role`` as Anthropic writes it: ``messages.0.role``."""
    return _INDEX.sub(r".\1", path.lstrip("$").lstrip("."))


def _validation_error(exc: msgspec.ValidationError) -> InvalidRequest:
    message, _, where = str(exc).partition(" - at `")
    param = _param(where.rstrip("`")) if where else ""
    if message.startswith("Object missing required field `"):
        field = message.split("`")[1]
        param = f"{param}.{field}" if param else field
        return InvalidRequest(
            f"{param}: Field required", param=param, code="missing_required_parameter"
        )
    code = "invalid_type" if ", got `" in message else "invalid_value"
    if param:
        return InvalidRequest(f"{param}: {message}", param=param, code=code)
    return InvalidRequest(f"Invalid request: {message}.", code="invalid_request")


def parse_messages_request(
    body: object,
    *,
    request_id: str = "",
    max_messages: int = 4096,
    count_only: bool = False,
    beta: str | None = None,
    version: str | None = None,
) -> MessagesRequest:
    """Validate a parsed Messages body (``count_only`` for count_tokens, which
    takes no ``max_tokens`` and never streams); raise ``InvalidRequest``."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_request_body")
    messages = body.get("messages")
    if isinstance(messages, list) and len(messages) > max_messages:
        raise InvalidRequest(
            f"messages: too many messages: {len(messages)} (at most {max_messages}).",
            param="messages", code="too_many_messages",
        )
    try:
        params = msgspec.convert(body, _CountParams if count_only else _MessagesParams)
    except msgspec.ValidationError as exc:
        raise _validation_error(exc) from None
    stream = isinstance(params, _MessagesParams) and bool(params.stream)
    return MessagesRequest(
        body, model=params.model, messages=body["messages"], stream=stream,
        request_id=request_id, beta=beta, version=version,
    )


def chat_request(request: MessagesRequest) -> ChatRequest:
    """The canonical (OpenAI chat-completions) request for a provider that does
    not speak Anthropic. Raises ``InvalidRequest`` for what that shape cannot
    express (server tools, unknown block types)."""
    body = openai_request(request.body)
    return ChatRequest(
        body,
        model=request.model,
        messages=body["messages"],
        stream=request.stream,
        upstream_model=request.upstream_model,
        request_id=request.request_id,
    )


# -- count_tokens without a provider that counts ---------------------------------

# The same rough rule as the limits plugin's estimate: 4 characters a token,
# a few tokens of framing per message. Images and documents are counted at
# about what Anthropic charges for a mid-sized image.
_CHARS_PER_TOKEN = 4
_TOKENS_PER_MESSAGE = 3
_TOKENS_PER_ATTACHMENT = 1600
_encode = msgspec.json.Encoder().encode


def _chars(content: Any) -> tuple[int, int]:
    """(characters of text, attachments) in a content value, blocks included."""
    if isinstance(content, str):
        return len(content), 0
    chars = attachments = 0
    if isinstance(content, list):
        for block in content:
            if not isinstance(block, dict):
                continue
            kind = block.get("type")
            if kind in ("image", "document"):
                attachments += 1
            elif kind == "tool_use":
                chars += len(str(block.get("name", ""))) + len(_encode(block.get("input") or {}))
            elif kind == "tool_result":
                more, files = _chars(block.get("content"))
                chars, attachments = chars + more, attachments + files
            else:
                for key in ("text", "thinking"):
                    value = block.get(key)
                    if isinstance(value, str):
                        chars += len(value)
    return chars, attachments


def estimate_input_tokens(body: dict[str, Any]) -> int:
    """A rough count of a Messages request's input tokens: its text (system,
    messages, tool definitions) at 4 characters a token, 3 tokens per message,
    and 1600 per image or document."""
    chars, attachments = _chars(body.get("system"))
    messages = body.get("messages") or []
    for message in messages:
        if isinstance(message, dict):
            more, files = _chars(message.get("content"))
            chars, attachments = chars + more, attachments + files
    tools = body.get("tools")
    if tools:
        chars += len(_encode(tools))
    return (
        math.ceil(chars / _CHARS_PER_TOKEN)
        + _TOKENS_PER_MESSAGE * len(messages)
        + _TOKENS_PER_ATTACHMENT * attachments
    )
