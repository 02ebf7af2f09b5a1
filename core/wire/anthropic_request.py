"""Anthropic Messages requests: validation, the canonical form, and a token estimate.

Validation checks only what the gateway relies on and what Anthropic itself
would refuse at once (a missing ``max_tokens``, a ``temperature`` above 1); any
other field passes through untouched, so a provider that speaks Anthropic
natively receives the client's own body. Error messages follow Anthropic's
style (``max_tokens: Field required``).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from ..components import ChatRequest, MessagesRequest
from ..errors import InvalidRequest
from .messages_to_chat import openai_request

__all__ = ["chat_request", "parse_messages_request"]


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
