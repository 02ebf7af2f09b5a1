"""The OpenAI chat-completions wire format: request validation, error bodies and
the objects providers build (completions, chunks, usage).

Validation checks only what the gateway and its providers rely on, and lets any
other field through untouched: the body a provider receives is the client's own.
"""

from __future__ import annotations

import os
import time
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from ..components import ChatRequest
from ..errors import GatewayError, InvalidRequest

__all__ = [
    "chunk_object",
    "completion_id",
    "completion_object",
    "error_body",
    "parse_chat_request",
    "usage_object",
]

_encode = msgspec.json.Encoder().encode


class _Function(msgspec.Struct):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class _Tool(msgspec.Struct):
    type: Literal["function"]
    function: _Function


class _Message(msgspec.Struct):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class _StreamOptions(msgspec.Struct):
    include_usage: bool | None = None


class _ResponseFormat(msgspec.Struct):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None


_Unit = Annotated[float, Meta(ge=0, le=1)]
_Penalty = Annotated[float, Meta(ge=-2, le=2)]
_Positive = Annotated[int, Meta(ge=1)]


class _ChatParams(msgspec.Struct):
    model: str
    messages: Annotated[list[_Message], Meta(min_length=1)]
    stream: bool | None = None
    stream_options: _StreamOptions | None = None
    max_tokens: _Positive | None = None
    max_completion_tokens: _Positive | None = None
    temperature: Annotated[float, Meta(ge=0, le=2)] | None = None
    top_p: _Unit | None = None
    n: Annotated[int, Meta(ge=1, le=128)] | None = None
    stop: str | Annotated[list[str], Meta(max_length=4)] | None = None
    tools: list[_Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    response_format: _ResponseFormat | None = None
    seed: int | None = None
    presence_penalty: _Penalty | None = None
    frequency_penalty: _Penalty | None = None
    user: str | None = None
    parallel_tool_calls: bool | None = None


def _param_from_path(path: str) -> str:
    return path.lstrip("$").lstrip(".")


def _validation_error(exc: msgspec.ValidationError) -> InvalidRequest:
    text = str(exc)
    message, _, where = text.partition(" - at `")
    param = _param_from_path(where.rstrip("`")) if where else None
    if message.startswith("Object missing required field `"):
        field = message.split("`")[1]
        param = f"{param}.{field}" if param else field
        return InvalidRequest(
            f"Missing required parameter: '{param}'.",
            param=param,
            code="missing_required_parameter",
        )
    if param:
        detail = message[0].lower() + message[1:]
        # "Expected `int`, got `str`" is a type error; "Expected `float` <= 2.0" or
        # "Invalid enum value" is a value outside what the field allows.
        code = "invalid_type" if ", got `" in message else "invalid_value"
        return InvalidRequest(f"Invalid value for '{param}': {detail}.", param=param, code=code)
    return InvalidRequest(f"Invalid request: {message}.", code="invalid_request")


_CONTENT_REQUIRED = frozenset({"system", "developer", "user", "tool"})


def parse_chat_request(
    body: object, *, request_id: str = "", max_messages: int = 4096
) -> ChatRequest:
    """Validate a parsed chat-completions body; raise ``InvalidRequest`` naming the ``param``."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_request_body")
    messages = body.get("messages")
    if isinstance(messages, list) and len(messages) > max_messages:
        raise InvalidRequest(
            f"Too many messages: {len(messages)} (at most {max_messages}).",
            param="messages", code="too_many_messages",
        )
    try:
        params = msgspec.convert(body, _ChatParams)
    except msgspec.ValidationError as exc:
        raise _validation_error(exc) from None
    for index, message in enumerate(params.messages):
        if message.role in _CONTENT_REQUIRED and message.content is None:
            param = f"messages[{index}].content"
            raise InvalidRequest(
                f"Missing required parameter: '{param}'.",
                param=param,
                code="missing_required_parameter",
            )
        if message.role == "tool" and not message.tool_call_id:
            param = f"messages[{index}].tool_call_id"
            raise InvalidRequest(
                f"Missing required parameter: '{param}'.",
                param=param,
                code="missing_required_parameter",
            )
    if isinstance(params.tool_choice, dict):
        _check_named_tool_choice(params)
    elif params.tool_choice == "required" and not params.tools:
        raise InvalidRequest(
            "'tool_choice' is 'required' but no 'tools' were given.",
            param="tool_choice",
            code="invalid_value",
        )
    if params.response_format and params.response_format.type == "json_schema":
        schema = params.response_format.json_schema
        if not isinstance(schema, dict) or not isinstance(schema.get("name"), str):
            raise InvalidRequest(
                "Missing required parameter: 'response_format.json_schema.name'.",
                param="response_format.json_schema.name",
                code="missing_required_parameter",
            )
    stream = bool(params.stream)
    if params.stream_options is not None and not stream:
        raise InvalidRequest(
            "'stream_options' is only allowed when 'stream' is true.",
            param="stream_options",
            code="invalid_value",
        )
    include_usage = bool(stream and params.stream_options and params.stream_options.include_usage)
    return ChatRequest(
        body,
        model=params.model,
        messages=body["messages"],
        stream=stream,
        include_usage=include_usage,
        request_id=request_id,
    )


def _check_named_tool_choice(params: _ChatParams) -> None:
    choice = params.tool_choice
    assert isinstance(choice, dict)
    function = choice.get("function")
    name = function.get("name") if isinstance(function, dict) else None
    if choice.get("type") != "function" or not isinstance(name, str):
        raise InvalidRequest(
            "Invalid value for 'tool_choice': expected 'none', 'auto', 'required' or "
            "{'type': 'function', 'function': {'name': ...}}.",
            param="tool_choice",
            code="invalid_value",
        )
    if name not in {tool.function.name for tool in params.tools or ()}:
        raise InvalidRequest(
            f"Invalid value for 'tool_choice': no tool named {name!r} in 'tools'.",
            param="tool_choice.function.name",
            code="invalid_value",
        )


def error_body(error: GatewayError) -> bytes:
    """``{"error": {"message", "type", "code", "param"}}`` as bytes."""
    return _encode(
        {
            "error": {
                "message": error.message,
                "type": error.error_type,
                "code": error.code,
                "param": error.param,
            }
        }
    )


def completion_id() -> str:
    """A fresh ``chatcmpl-...`` id."""
    return "chatcmpl-" + os.urandom(12).hex()


def usage_object(prompt_tokens: int, completion_tokens: int, **details: Any) -> dict[str, Any]:
    """An OpenAI ``usage`` object; ``details`` may carry ``reasoning_tokens``."""
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if details:
        usage["completion_tokens_details"] = details
    return usage


def completion_object(
    *,
    id: str,
    model: str,
    choices: list[dict[str, Any]],
    usage: dict[str, Any] | None,
    created: int | None = None,
) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` object."""
    result: dict[str, Any] = {
        "id": id,
        "object": "chat.completion",
        "created": created or int(time.time()),
        "model": model,
        "choices": choices,
    }
    if usage is not None:
        result["usage"] = usage
    return result


def chunk_object(
    *,
    id: str,
    model: str,
    created: int,
    choices: list[dict[str, Any]],
    usage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An OpenAI ``chat.completion.chunk`` object (``choices=[]`` plus usage for the last)."""
    result: dict[str, Any] = {
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": choices,
    }
    if usage is not None:
        result["usage"] = usage
    return result
