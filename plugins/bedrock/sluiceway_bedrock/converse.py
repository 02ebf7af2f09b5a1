"""Chat completions as Bedrock Converse requests, and Converse answers back.

Requests:

* ``system`` / ``developer`` messages -> ``system``; ``user`` / ``assistant`` ->
  ``messages`` (consecutive turns of one role merged: Converse wants them to
  alternate, starting with the user); text and images (data: URLs, sent as
  bytes; Converse cannot fetch a URL) as content blocks.
* assistant ``tool_calls`` -> ``toolUse`` blocks; ``tool`` messages ->
  ``toolResult`` blocks of a user turn (a JSON result as ``json``, else
  ``text``); ``tools`` -> ``toolConfig.tools``; ``tool_choice`` ``auto`` /
  ``required`` / a named function -> ``auto`` / ``any`` / ``tool``
  (``none`` leaves the choice out: Converse has no way to forbid tools).
* ``max_completion_tokens`` / ``max_tokens``, ``temperature``, ``top_p``,
  ``stop`` -> ``inferenceConfig``; ``reasoning_effort`` on an Anthropic model ->
  its ``thinking`` budget in ``additionalModelRequestFields``.
* ``response_format`` has no Converse equivalent and is refused by name.

Answers: ``text`` -> content, ``reasoningContent`` -> ``reasoning_content`` and
``thinking_blocks`` (signed, sent back before the tool use they led to),
``toolUse`` -> ``tool_calls``; ``stopReason`` ``end_turn`` / ``stop_sequence`` ->
``stop``, ``tool_use`` -> ``tool_calls``, ``max_tokens`` -> ``length``,
``guardrail_intervened`` / ``content_filtered`` -> ``content_filter``; usage
with cache reads and writes (``inputTokens`` excludes them, as Anthropic counts).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import msgspec

from sluiceway.api import InvalidRequest, Usage, completion_id

__all__ = ["converse_request", "finish_reason", "openai_completion", "thinking_block", "usage"]

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode
_IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/gif": "gif",
                  "image/webp": "webp"}
_EFFORT = {"low": 1024, "medium": 4096, "high": 16384}
_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "tool_use": "tool_calls",
           "max_tokens": "length", "model_context_window_exceeded": "length",
           "guardrail_intervened": "content_filter",
           "content_filtered": "content_filter"}


def _invalid(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, param=param, code="invalid_value")


def _image(url: str, param: str) -> dict[str, Any]:
    head, _, data = url.partition(",")
    kind = head.removeprefix("data:").removesuffix(";base64")
    if not url.startswith("data:") or not head.endswith(";base64") or kind not in _IMAGE_FORMATS:
        raise _invalid("Bedrock takes images as base64 data: URLs of PNG, JPEG, GIF or WebP, "
                       "not links.", param)
    return {"image": {"format": _IMAGE_FORMATS[kind], "source": {"bytes": data}}}


def _blocks(content: Any, param: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for index, part in enumerate(content):
        kind = part.get("type")
        if kind == "text" and part.get("text"):
            blocks.append({"text": part["text"]})
        elif kind == "image_url":
            blocks.append(_image((part.get("image_url") or {}).get("url", ""),
                                 f"{param}[{index}].image_url.url"))
        elif kind != "text":
            raise _invalid(f"Content parts of type {kind!r} cannot be sent to Bedrock.",
                           f"{param}[{index}].type")
    return blocks


def _append(messages: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    if not blocks:
        return
    if messages and messages[-1]["role"] == role:
        messages[-1]["content"].extend(blocks)
    else:
        messages.append({"role": role, "content": blocks})


def _tool_use(call: Mapping[str, Any], param: str) -> dict[str, Any]:
    function = call.get("function") or {}
    raw = function.get("arguments") or "{}"
    try:
        arguments = _decode(raw)
    except msgspec.DecodeError:
        raise _invalid("A tool call's arguments must be JSON.", param) from None
    if not isinstance(arguments, dict):
        arguments = {"value": arguments}
    return {"toolUse": {"toolUseId": call.get("id"), "name": function.get("name"),
                        "input": arguments}}


def _reasoning(block: Mapping[str, Any]) -> dict[str, Any]:
    """A thinking block (as the gateway returns them) as Converse's reasoning."""
    if block.get("type") == "redacted_thinking":
        return {"reasoningContent": {"redactedContent": block.get("data", "")}}
    text = {"text": block.get("thinking", "")}
    if block.get("signature"):
        text["signature"] = block["signature"]
    return {"reasoningContent": {"reasoningText": text}}


def thinking_block(reasoning: Mapping[str, Any]) -> dict[str, Any]:
    """Converse's reasoning as a thinking block, to be sent back as it came."""
    if reasoning.get("redactedContent"):
        return {"type": "redacted_thinking", "data": reasoning["redactedContent"]}
    text = reasoning.get("reasoningText") or {}
    return {"type": "thinking", "thinking": text.get("text", ""),
            "signature": text.get("signature", "")}


def _tool_result(message: Mapping[str, Any]) -> dict[str, Any]:
    content = message.get("content")
    text = content if isinstance(content, str) else "".join(
        p.get("text", "") for p in content or () if isinstance(p, dict))
    try:
        value = _decode(text)
    except msgspec.DecodeError:
        value = None
    if isinstance(value, dict):
        result: list[dict[str, Any]] = [{"json": value}]
    else:  # Converse refuses a blank text block
        result = [{"text": text}] if text.strip() else [{"json": {"result": text}}]
    return {"toolResult": {"toolUseId": message.get("tool_call_id"), "content": result}}


def _tool_config(body: Mapping[str, Any]) -> dict[str, Any] | None:
    tools = [tool.get("function") or {} for tool in body.get("tools") or ()
             if tool.get("type") == "function"]
    if not tools:
        return None
    specs = [{"toolSpec": {"name": tool.get("name"),
                           **({"description": tool["description"]} if tool.get("description")
                              else {}),
                           "inputSchema": {"json": tool.get("parameters") or {
                               "type": "object", "properties": {}}}}} for tool in tools]
    config: dict[str, Any] = {"tools": specs}
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        config["toolChoice"] = {"tool": {"name": (choice.get("function") or {}).get("name")}}
    elif choice in ("auto", "required"):
        config["toolChoice"] = {"auto": {}} if choice == "auto" else {"any": {}}
    return config


def converse_request(body: Mapping[str, Any], model: str, *,
                     additional: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The Converse body for a validated chat-completions body."""
    if body.get("response_format") and (body["response_format"] or {}).get("type") != "text":
        raise _invalid("Bedrock's Converse API has no structured output: response_format "
                       "is not supported by this provider.", "response_format")
    system: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    for index, message in enumerate(body["messages"]):
        role, param = message.get("role"), f"messages[{index}]"
        if role in ("system", "developer"):
            system.extend(_blocks(message.get("content"), f"{param}.content"))
        elif role == "user":
            _append(messages, "user", _blocks(message.get("content"), f"{param}.content"))
        elif role == "assistant":
            # Claude wants its signed thinking back before the tool use it led to.
            blocks = [_reasoning(block) for block in message.get("thinking_blocks") or ()]
            blocks += _blocks(message.get("content"), f"{param}.content")
            blocks += [_tool_use(call, f"{param}.tool_calls[{n}].function.arguments")
                       for n, call in enumerate(message.get("tool_calls") or ())]
            _append(messages, "assistant", blocks)
        elif role == "tool":
            _append(messages, "user", [_tool_result(message)])
    if not messages or messages[0]["role"] != "user":
        raise _invalid("Bedrock needs the conversation to start with a user message.",
                       "messages")
    request: dict[str, Any] = {"messages": messages}
    if system:
        request["system"] = system
    inference: dict[str, Any] = {}
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is not None:
        inference["maxTokens"] = limit
    for ours, theirs in (("temperature", "temperature"), ("top_p", "topP")):
        if body.get(ours) is not None:
            inference[theirs] = body[ours]
    stop = body.get("stop")
    if stop:
        inference["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    if inference:
        request["inferenceConfig"] = inference
    tool_config = _tool_config(body)
    if tool_config is not None:
        request["toolConfig"] = tool_config
    extra = dict(additional or {})
    effort = body.get("reasoning_effort")
    if effort in _EFFORT and "anthropic." in model:
        budget = _EFFORT[effort]
        extra["thinking"] = {"type": "enabled", "budget_tokens": budget}
        inference = request.setdefault("inferenceConfig", {})
        if limit is None or limit <= budget:  # room for the answer beyond the thinking
            inference["maxTokens"] = budget + (limit or 4096)
        # Claude refuses sampling settings while it thinks.
        inference.pop("temperature", None)
        inference.pop("topP", None)
    if extra:
        request["additionalModelRequestFields"] = extra
    return request


def finish_reason(stop: str | None) -> str:
    return _FINISH.get(stop or "end_turn", "stop")


def usage(counts: object) -> dict[str, Any] | None:
    """OpenAI usage from Converse's ``usage``."""
    if not isinstance(counts, Mapping):
        return None
    found = Usage.from_anthropic({
        "input_tokens": counts.get("inputTokens"), "output_tokens": counts.get("outputTokens"),
        "cache_read_input_tokens": counts.get("cacheReadInputTokens"),
        "cache_creation_input_tokens": counts.get("cacheWriteInputTokens")})
    return found.to_openai() if found is not None else None


def openai_completion(answer: Mapping[str, Any], model: str) -> dict[str, Any]:
    """The ``chat.completion`` for a Converse answer."""
    message = (answer.get("output") or {}).get("message") or {}
    text: list[str] = []
    thoughts: list[str] = []
    blocks: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for block in message.get("content") or ():
        if "text" in block:
            text.append(block["text"])
        elif "toolUse" in block:
            use = block["toolUse"]
            calls.append({"id": use.get("toolUseId"), "type": "function", "function": {
                "name": use.get("name"), "arguments": _encode(use.get("input") or {}).decode()}})
        elif "reasoningContent" in block:
            kept = thinking_block(block["reasoningContent"] or {})
            blocks.append(kept)
            thoughts.append(kept.get("thinking", ""))
    reply: dict[str, Any] = {"role": "assistant",
                             "content": "".join(text) if text or not calls else None}
    if thoughts:
        reply["reasoning_content"] = "".join(thoughts)
        reply["thinking_blocks"] = blocks
    if calls:
        reply["tool_calls"] = calls
    return {"id": completion_id(), "object": "chat.completion", "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": reply, "logprobs": None,
                         "finish_reason": finish_reason(answer.get("stopReason"))}],
            "usage": usage(answer.get("usage"))}
