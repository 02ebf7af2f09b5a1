"""Anthropic Messages -> OpenAI chat completions, and OpenAI's answers back.

The direction the Anthropic *ingress* (``/v1/messages``) needs: the client's
Anthropic request becomes the canonical OpenAI body every provider takes, and
the OpenAI completion becomes an Anthropic message. Pure functions, no I/O.
Streams are :class:`sluiceway.wire.anthropic_stream.AnthropicEventStream`.

Request rules: ``system`` becomes the first message; ``tool_result`` blocks
become ``tool`` messages (ahead of the rest of their user turn); ``tool_use``
becomes ``tool_calls``; thinking blocks in an assistant turn become
``reasoning_content`` plus ``thinking_blocks`` (which the Anthropic provider
sends back verbatim); images become ``image_url`` parts (base64 as data URLs);
PDF documents become ``file`` parts. ``tool_choice`` any -> required, tool ->
named, ``disable_parallel_tool_use`` -> ``parallel_tool_calls: false``;
``stop_sequences`` -> ``stop``; ``metadata.user_id`` -> ``user``; ``thinking``
is kept (an Anthropic provider uses it as is) and also expressed as a
``reasoning_effort`` for other providers (budget <= 2048 low, <= 8192 medium,
else high). Streams ask for usage (``stream_options.include_usage``).

Response rules: reasoning becomes a thinking block (with the upstream's own
``thinking_blocks`` when it gives them), then text, then ``tool_use`` blocks;
``finish_reason`` stop/length/tool_calls/content_filter become ``end_turn``,
``max_tokens``, ``tool_use``, ``refusal``, and ``stop`` becomes
``stop_sequence`` when the choice names the sequence that matched (its
``stop_reason``, as vLLM and the mock give it).
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from ..errors import InvalidRequest
from .anthropic_stream import anthropic_usage, matched_stop, stop_reason

__all__ = ["anthropic_message", "openai_request"]

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


def _invalid(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, param=param, code="invalid_value")


def _source_url(source: Any, param: str) -> str:
    if isinstance(source, dict):
        if source.get("type") == "base64":
            return f"data:{source.get('media_type')};base64,{source.get('data')}"
        if source.get("type") == "url" and isinstance(source.get("url"), str):
            return str(source["url"])
    raise _invalid(f"'{param}.source' must be a base64 or url source.", f"{param}.source")


def _part(block: dict[str, Any], param: str) -> dict[str, Any]:
    kind = block.get("type")
    if kind == "text":
        return {"type": "text", "text": block.get("text", "")}
    if kind == "image":
        return {"type": "image_url", "image_url": {"url": _source_url(block.get("source"), param)}}
    if kind == "document":
        return {"type": "file", "file": {"file_data": _source_url(block.get("source"), param)}}
    raise _invalid(f"Content blocks of type {kind!r} are not supported here.", param)


def _parts(content: Any, param: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise _invalid(f"'{param}' must be a string or a list of blocks.", param)
    return [_part(block, f"{param}[{i}]") for i, block in enumerate(content)]


def _simplify(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """Text-only content as one string, the way most OpenAI upstreams like it."""
    if all(part["type"] == "text" for part in parts):
        return "".join(part["text"] for part in parts)
    return parts


def _user(content: Any, param: str, out: list[dict[str, Any]]) -> None:
    if isinstance(content, str):
        out.append({"role": "user", "content": content})
        return
    if not isinstance(content, list):
        raise _invalid(f"'{param}' must be a string or a list of blocks.", param)
    rest: list[dict[str, Any]] = []
    for i, block in enumerate(content):
        where = f"{param}[{i}]"
        if not isinstance(block, dict):
            raise _invalid(f"'{where}' must be an object.", where)
        if block.get("type") == "tool_result":
            result = block.get("content")
            text = _simplify(_parts(result, f"{where}.content")) if result is not None else ""
            if block.get("is_error") and isinstance(text, str):
                text = "Error: " + text
            out.append({"role": "tool", "tool_call_id": block.get("tool_use_id"),
                        "content": text})
        else:
            rest.append(_part(block, where))
    if rest:
        out.append({"role": "user", "content": _simplify(rest)})


def _assistant(content: Any, param: str) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    reasoning: list[str] = []
    thinking_blocks: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for i, block in enumerate(content or ()):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "tool_use":
            calls.append({"id": block.get("id"), "type": "function", "function": {
                "name": block.get("name"),
                "arguments": _encode(block.get("input") or {}).decode(),
            }})
        elif kind in ("thinking", "redacted_thinking"):
            thinking_blocks.append(block)
            if kind == "thinking":
                reasoning.append(block.get("thinking", ""))
        else:
            where = f"{param}[{i}]"
            raise _invalid(f"Assistant blocks of type {kind!r} are not supported here.", where)
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    if thinking_blocks:
        message["thinking_blocks"] = thinking_blocks
    if calls:
        message["tool_calls"] = calls
    return message


def _effort(budget: int) -> str:
    return "low" if budget <= 2048 else "medium" if budget <= 8192 else "high"


def openai_request(body: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI chat-completions body for an Anthropic Messages body."""
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system:
        text = system if isinstance(system, str) else _simplify(_parts(system, "system"))
        messages.append({"role": "system", "content": text})
    for index, message in enumerate(body.get("messages") or ()):
        param = f"messages[{index}].content"
        role = message.get("role") if isinstance(message, dict) else None
        if role == "user":
            _user(message.get("content"), param, messages)
        elif role == "assistant":
            messages.append(_assistant(message.get("content"), param))
        else:
            raise _invalid(f"Unknown role {role!r}.", f"messages[{index}].role")
    result: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    if body.get("max_tokens") is not None:
        result["max_tokens"] = body["max_tokens"]
    for key in ("temperature", "top_p", "top_k"):
        if body.get(key) is not None:
            result[key] = body[key]
    if body.get("stop_sequences"):
        result["stop"] = list(body["stop_sequences"])
    tools = body.get("tools")
    if tools:
        result["tools"] = []
        for i, tool in enumerate(tools):
            if tool.get("type") not in (None, "custom"):
                raise _invalid(f"Server tools ({tool.get('type')!r}) are not supported.",
                               f"tools[{i}]")
            function: dict[str, Any] = {"name": tool.get("name")}
            if tool.get("description"):
                function["description"] = tool["description"]
            function["parameters"] = tool.get("input_schema") or {"type": "object"}
            result["tools"].append({"type": "function", "function": function})
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        kind = choice.get("type")
        if kind == "tool":
            result["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
        elif kind in ("auto", "any", "none"):
            result["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[kind]
        if choice.get("disable_parallel_tool_use"):
            result["parallel_tool_calls"] = False
    thinking = body.get("thinking")
    if isinstance(thinking, dict):
        result["thinking"] = thinking
        if thinking.get("type") == "enabled" and isinstance(thinking.get("budget_tokens"), int):
            result["reasoning_effort"] = _effort(thinking["budget_tokens"])
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        result["user"] = metadata["user_id"]
    if body.get("stream"):
        result["stream"] = True
        result["stream_options"] = {"include_usage": True}
    return result


def anthropic_message(completion: dict[str, Any], *, model: str | None = None) -> dict[str, Any]:
    """An Anthropic ``message`` for an OpenAI ``chat.completion`` (its first choice)."""
    choices = completion.get("choices") or [{}]
    choice = choices[0]
    reply = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    thinking_blocks = reply.get("thinking_blocks")
    if thinking_blocks:
        content.extend(thinking_blocks)
    elif reply.get("reasoning_content"):
        content.append({"type": "thinking", "thinking": reply["reasoning_content"],
                        "signature": ""})
    text = reply.get("content")
    if isinstance(text, list):  # some upstreams answer in parts
        text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
    if text:
        content.append({"type": "text", "text": text})
    for call in reply.get("tool_calls") or ():
        function = call.get("function") or {}
        try:
            arguments = _decode(function.get("arguments") or "{}")
        except msgspec.DecodeError:
            arguments = {"_raw": function.get("arguments")}
        content.append({"type": "tool_use", "id": call.get("id"), "name": function.get("name"),
                        "input": arguments if isinstance(arguments, dict) else {}})
    stop_sequence = matched_stop(choice)
    return {
        "id": completion.get("id") or f"msg_{int(time.time() * 1000)}",
        "type": "message",
        "role": "assistant",
        "model": model or completion.get("model") or "",
        "content": content,
        "stop_reason": "stop_sequence" if stop_sequence
        else stop_reason(choice.get("finish_reason")) or "end_turn",
        "stop_sequence": stop_sequence,
        "usage": anthropic_usage(completion.get("usage")),
    }
