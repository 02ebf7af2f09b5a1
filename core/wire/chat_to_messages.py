"""OpenAI chat completions -> Anthropic Messages, and Anthropic's answers back.

Pure functions on parsed JSON: no I/O, no clock unless ``created`` is left out.
This is the direction an Anthropic *provider* needs; the opposite one (the
Anthropic ingress) is :mod:`sluiceway.wire.messages_to_chat`, and streams are
:mod:`sluiceway.wire.anthropic_stream`.

Request rules (OpenAI -> Anthropic):

* ``system`` and ``developer`` messages, wherever they are, become ``system``
  (text joined by a blank line; a list of text blocks if any part carries
  ``cache_control``).
* A ``tool`` message becomes a ``tool_result`` block in a user turn; tool
  results in a row, and a user message right after them, share one user turn.
* Assistant ``tool_calls`` become ``tool_use`` blocks (arguments parsed; they
  must be a JSON object). An assistant's ``thinking_blocks`` (as returned by
  this module) are sent back first, so multi-turn thinking with tools works.
* ``image_url`` parts: ``data:`` URLs become base64 sources, http(s) URLs url
  sources. ``file`` parts with a ``data:application/pdf`` URL become documents.
* ``max_completion_tokens`` / ``max_tokens``, else ``default_max_tokens``.
  ``temperature`` is clamped to Anthropic's 0..1. ``stop`` -> ``stop_sequences``,
  ``user`` -> ``metadata.user_id``, ``top_k`` passes through.
* Thinking: a ``thinking`` object in the body is sent as is. Otherwise
  ``reasoning_effort`` low/medium/high (``minimal`` = low) enables thinking with
  a budget of 1024/4096/16384 tokens; ``none`` leaves it off. When the client
  set no max_tokens, the budget is added on top of the default; when it did,
  the budget is cut to fit below it (and an effort that cannot fit the
  1024-token minimum is a 400).
* ``response_format``: ``json_schema`` by the tool-use technique, ``json_object``
  by an instruction (see :mod:`sluiceway.wire.response_format`).
* ``n`` > 1 is refused; fields Anthropic has no equivalent for (``seed``,
  penalties, ``logprobs``) are dropped.

Response rules (Anthropic -> OpenAI): text blocks are joined into ``content``;
``tool_use`` -> ``tool_calls``; thinking -> ``reasoning_content`` plus the raw
blocks in ``thinking_blocks``; stop reasons as in :data:`FINISH_REASONS`; usage
as in :func:`openai_usage`.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from ..errors import InvalidRequest
from .response_format import apply_response_format, is_json_tool, json_text
from .usage import Usage

__all__ = [
    "EFFORT_BUDGETS",
    "FINISH_REASONS",
    "anthropic_request",
    "finish_reason",
    "openai_completion",
    "openai_usage",
]

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode

#: Anthropic ``stop_reason`` -> OpenAI ``finish_reason``.
FINISH_REASONS: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    "refusal": "content_filter",
}

#: ``reasoning_effort`` -> thinking ``budget_tokens``.
EFFORT_BUDGETS: dict[str, int] = {"minimal": 1024, "low": 1024, "medium": 4096, "high": 16384}
_MIN_BUDGET = 1024

_THINKING_TYPES = frozenset({"thinking", "redacted_thinking"})


def finish_reason(stop_reason: str | None) -> str | None:
    """OpenAI's ``finish_reason`` for an Anthropic ``stop_reason``."""
    if stop_reason is None:
        return None
    return FINISH_REASONS.get(stop_reason, "stop")


def openai_usage(usage: dict[str, Any] | None) -> dict[str, Any]:
    """OpenAI ``usage`` from Anthropic's: prompt tokens count cache reads and writes."""
    return (Usage.from_anthropic(usage) or Usage()).to_openai()


# -- request: OpenAI -> Anthropic ----------------------------------------------


def _invalid(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, param=param, code="invalid_value")


def _media_source(url: str, param: str, media_types: tuple[str, ...]) -> dict[str, Any]:
    if url.startswith("data:"):
        header, sep, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if not sep or encoding != "base64" or not media_type.startswith(media_types):
            raise _invalid(f"Unsupported data URL in '{param}'.", param)
        return {"type": "base64", "media_type": media_type, "data": data}
    if url.startswith(("https://", "http://")):
        return {"type": "url", "url": url}
    raise _invalid(f"'{param}' must be an http(s) or data: URL.", param)


def _block(part: Any, param: str) -> dict[str, Any]:
    if not isinstance(part, dict):
        raise _invalid(f"'{param}' must be an object.", param)
    kind = part.get("type")
    block: dict[str, Any]
    if kind == "text" or kind == "refusal":
        text = part.get(kind)
        if not isinstance(text, str):
            raise _invalid(f"'{param}.{kind}' must be a string.", f"{param}.{kind}")
        block = {"type": "text", "text": text}
    elif kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        if not isinstance(url, str):
            raise _invalid(f"'{param}.image_url.url' must be a string.", f"{param}.image_url.url")
        source = _media_source(url, f"{param}.image_url.url", ("image/",))
        block = {"type": "image", "source": source}
    elif kind == "file":
        file = part.get("file")
        data = file.get("file_data") if isinstance(file, dict) else None
        if not isinstance(data, str):
            raise _invalid(f"'{param}.file.file_data' must be a data: URL.", f"{param}.file")
        source = _media_source(data, f"{param}.file.file_data", ("application/pdf", "text/"))
        block = {"type": "document", "source": source}
    else:
        raise _invalid(f"Content parts of type {kind!r} cannot be sent to Anthropic.", param)
    if "cache_control" in part:
        block["cache_control"] = part["cache_control"]
    return block


def _blocks(content: Any, param: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return [_block(part, f"{param}[{i}]") for i, part in enumerate(content)]


def _user_content(content: Any, param: str) -> str | list[dict[str, Any]]:
    return content if isinstance(content, str) else _blocks(content, param)


def _tool_use(call: Any, param: str) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise _invalid(f"'{param}.function.name' is required.", f"{param}.function.name")
    arguments = function.get("arguments") or "{}"
    try:
        parsed = _decode(arguments) if isinstance(arguments, str) else arguments
    except msgspec.DecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        raise _invalid(
            f"'{param}.function.arguments' must be a JSON object.", f"{param}.function.arguments"
        )
    return {"type": "tool_use", "id": call.get("id") or "", "name": function["name"],
            "input": parsed}


def _tool_result(message: dict[str, Any], param: str) -> dict[str, Any]:
    content = message.get("content")
    result: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.get("tool_call_id")}
    if isinstance(content, str):
        result["content"] = content
    else:
        result["content"] = _blocks(content, f"{param}.content")
    return result


def _system(
    messages: list[dict[str, Any]],
) -> tuple[str | list[dict[str, Any]] | None, list[tuple[int, dict[str, Any]]]]:
    system: list[dict[str, Any]] = []
    rest: list[tuple[int, dict[str, Any]]] = []
    for index, message in enumerate(messages):
        if message.get("role") in ("system", "developer"):
            system.extend(_blocks(message.get("content"), f"messages[{index}].content"))
        else:
            rest.append((index, message))
    if not system:
        return None, rest
    if any(block["type"] != "text" for block in system):
        raise _invalid("System messages may contain text only.", "messages")
    if any("cache_control" in block for block in system):
        return system, rest
    return "\n\n".join(block["text"] for block in system), rest


def _messages(rest: list[tuple[int, dict[str, Any]]]) -> list[dict[str, Any]]:
    turns: list[dict[str, Any]] = []
    tool_turn: list[dict[str, Any]] | None = None  # the user turn tool results go into
    for index, message in rest:
        role = message.get("role")
        param = f"messages[{index}]"
        if role == "tool":
            if tool_turn is None:
                tool_turn = []
                turns.append({"role": "user", "content": tool_turn})
            tool_turn.append(_tool_result(message, param))
            continue
        if role == "user":
            if tool_turn is not None:
                tool_turn.extend(_blocks(message.get("content"), f"{param}.content"))
            else:
                turns.append({"role": "user",
                              "content": _user_content(message.get("content"), f"{param}.content")})
            tool_turn = None
            continue
        tool_turn = None
        if role != "assistant":
            raise _invalid(f"Messages with role {role!r} cannot be sent to Anthropic.", param)
        content: list[dict[str, Any]] = [
            dict(block) for block in message.get("thinking_blocks") or ()
            if isinstance(block, dict) and block.get("type") in _THINKING_TYPES
        ]
        content.extend(_blocks(message.get("content"), f"{param}.content"))
        for j, call in enumerate(message.get("tool_calls") or ()):
            content.append(_tool_use(call, f"{param}.tool_calls[{j}]"))
        turns.append({"role": "assistant", "content": content})
    return turns


def _tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    result = []
    for tool in tools:
        function = tool["function"]
        entry: dict[str, Any] = {"name": function["name"]}
        if function.get("description"):
            entry["description"] = function["description"]
        entry["input_schema"] = function.get("parameters") or {"type": "object", "properties": {}}
        result.append(entry)
    return result


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    if choice is None:
        result: dict[str, Any] = {"type": "auto"}
    elif choice == "none":
        return {"type": "none"}
    elif choice == "required":
        result = {"type": "any"}
    elif choice == "auto":
        result = {"type": "auto"}
    else:
        result = {"type": "tool", "name": choice["function"]["name"]}
    if parallel is False:
        result["disable_parallel_tool_use"] = True
    elif choice is None:
        return None
    return result


def _thinking(body: dict[str, Any], max_tokens: int | None, default: int) -> tuple[Any, int]:
    thinking = body.get("thinking")
    if isinstance(thinking, dict):
        return thinking, max_tokens or default
    effort = body.get("reasoning_effort")
    budget = EFFORT_BUDGETS.get(effort) if isinstance(effort, str) else None
    if budget is None:
        if effort not in (None, "none"):
            raise _invalid(f"Unknown 'reasoning_effort' {effort!r}.", "reasoning_effort")
        return None, max_tokens or default
    if max_tokens is None:
        return {"type": "enabled", "budget_tokens": budget}, default + budget
    budget = min(budget, max_tokens - 1)
    if budget < _MIN_BUDGET:
        raise _invalid(
            f"'reasoning_effort' needs max_tokens above {_MIN_BUDGET} on Anthropic models.",
            "max_tokens",
        )
    return {"type": "enabled", "budget_tokens": budget}, max_tokens


def anthropic_request(
    body: dict[str, Any], *, model: str, default_max_tokens: int = 4096, stream: bool = False
) -> dict[str, Any]:
    """The Anthropic Messages body for a (validated) OpenAI chat-completions body."""
    if (body.get("n") or 1) > 1:
        raise _invalid("Anthropic models return one choice: 'n' must be 1.", "n")
    system, rest = _system(body["messages"])
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    thinking, max_tokens = _thinking(
        body, limit if isinstance(limit, int) else None, default_max_tokens
    )
    result: dict[str, Any] = {"model": model, "max_tokens": max_tokens}
    if system is not None:
        result["system"] = system
    result["messages"] = _messages(rest)
    if thinking is not None:
        result["thinking"] = thinking
    tools = body.get("tools")
    if tools:
        result["tools"] = _tools(tools)
        choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
        if choice is not None:
            result["tool_choice"] = choice
    stop = body.get("stop")
    if stop:
        result["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    temperature = body.get("temperature")
    if temperature is not None:
        result["temperature"] = min(float(temperature), 1.0)
    for key in ("top_p", "top_k"):
        if body.get(key) is not None:
            result[key] = body[key]
    if isinstance(body.get("user"), str):
        result["metadata"] = {"user_id": body["user"]}
    apply_response_format(body, result)
    if stream:
        result["stream"] = True
    return result


# -- response: Anthropic -> OpenAI ---------------------------------------------


def openai_completion(message: dict[str, Any], *, created: int | None = None) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` for an Anthropic ``message`` object."""
    texts: list[str] = []
    reasoning: list[str] = []
    thinking_blocks: list[dict[str, Any]] = []
    tool_calls: list[dict[str, Any]] = []
    answers: list[str] = []
    for block in message.get("content") or ():
        kind = block.get("type")
        if kind == "tool_use" and is_json_tool(block.get("name")):
            answers.append(json_text(block.get("name"), block.get("input") or {}))
        elif kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "thinking":
            reasoning.append(block.get("thinking", ""))
            thinking_blocks.append(block)
        elif kind == "redacted_thinking":
            thinking_blocks.append(block)
        elif kind == "tool_use":
            tool_calls.append({
                "id": block.get("id"),
                "type": "function",
                "function": {
                    "name": block.get("name"),
                    "arguments": _encode(block.get("input") or {}).decode(),
                },
            })
    # An answer in JSON is the content, alone: text around it would break the JSON.
    texts = answers or texts
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if reply["content"] is None and not tool_calls:
        reply["content"] = ""
    if reasoning:
        reply["reasoning_content"] = "".join(reasoning)
    if thinking_blocks:
        reply["thinking_blocks"] = thinking_blocks
    if tool_calls:
        reply["tool_calls"] = tool_calls
    finish = finish_reason(message.get("stop_reason"))
    if answers and not tool_calls and finish == "tool_calls":
        finish = "stop"
    return {
        "id": message.get("id") or "",
        "object": "chat.completion",
        "created": created if created is not None else int(time.time()),
        "model": message.get("model") or "",
        "choices": [{
            "index": 0,
            "message": reply,
            "finish_reason": finish,
        }],
        "usage": openai_usage(message.get("usage")),
    }
