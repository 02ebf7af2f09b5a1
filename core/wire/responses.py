"""The OpenAI Responses API (``POST /v1/responses``) on top of chat completions.

A Responses body becomes the canonical chat body every provider takes, so the
mock, OpenAI-compatible and Anthropic upstreams all serve it:

* ``instructions`` -> a leading ``system`` message; ``input`` a string (one user
  message) or a list of items: messages (``role`` with a string or
  ``input_text`` / ``output_text`` / ``input_image`` parts), ``function_call``
  items (an assistant turn's ``tool_calls``; consecutive calls share the turn)
  and ``function_call_output`` items (``tool`` messages).
* ``tools`` of type ``function`` -> chat tools; other tool types are refused.
  ``tool_choice`` ``{"type": "function", "name"}`` -> chat's named choice.
* ``max_output_tokens`` -> ``max_completion_tokens``; ``text.format``
  (``json_schema``, ``json_object``) -> ``response_format``;
  ``reasoning.effort`` -> ``reasoning_effort``; ``temperature``, ``top_p``,
  ``parallel_tool_calls``, ``user``, ``metadata`` as they are.
* ``reasoning`` items (an earlier turn's thinking, sent back) are left out.
* ``previous_response_id``, ``conversation``, ``prompt`` and ``background`` (state
  the upstream keeps, or work it does on its own), ``input_image`` by
  ``file_id``, item types other than these (``item_reference``...),
  other content parts and other tool types cannot be said in chat completions:
  a provider that serves the Responses API natively gets the body as it came,
  any other refuses them. Given a ``refusals`` list,
  :func:`chat_body` collects these refusals there (and leaves out what they
  refuse) instead of raising, so the endpoint can decide per deployment.

A chat completion comes back as a ``response``: a ``message`` output item with
the text, a ``function_call`` item per tool call, ``status`` ``incomplete``
when the answer was cut by ``max_output_tokens``, and usage as
``input_tokens`` / ``output_tokens`` with their cached and reasoning details.
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Any

import msgspec

from ..errors import InvalidRequest

__all__ = [
    "INCOMPLETE",
    "chat_body",
    "new_id",
    "output_items",
    "response_envelope",
    "response_object",
    "responses_error",
    "responses_usage",
]

_encode = msgspec.json.Encoder().encode
_PASSED = ("temperature", "top_p", "parallel_tool_calls", "user", "metadata", "stream")
# What refers to state kept by the upstream, or asks it to keep working on its own.
_KEPT_UPSTREAM = ("previous_response_id", "conversation", "prompt", "background")


# chat finish_reason -> why a response is incomplete.
INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def _invalid(message: str, param: str, code: str = "invalid_value") -> InvalidRequest:
    return InvalidRequest(message, param=param, code=code)


def new_id(prefix: str) -> str:
    """An id in OpenAI's style: ``resp_...``, ``msg_...``, ``fc_...``."""
    return f"{prefix}_{secrets.token_hex(12)}"


Refusals = list[InvalidRequest] | None


def _refuse(error: InvalidRequest, refusals: Refusals) -> None:
    """Raise what chat cannot say, or note it when a native provider may say it."""
    if refusals is None:
        raise error
    refusals.append(error)


def _part(part: object, param: str, refusals: Refusals) -> dict[str, Any] | None:
    if not isinstance(part, dict):
        raise _invalid("A content part must be an object.", param, "invalid_type")
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text"):
        return {"type": "text", "text": part.get("text", "")}
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str):
            # A file_id image is the upstream's own file: only a native provider has it.
            _refuse(_invalid("An input_image part needs an 'image_url' (a URL or a data: "
                             "URL) unless the model's provider keeps files.",
                             f"{param}.image_url", "missing_required_parameter"), refusals)
            return None
        image: dict[str, Any] = {"url": url}
        if part.get("detail"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    _refuse(_invalid(f"Content parts of type {kind!r} are not supported.", f"{param}.type"),
            refusals)
    return None


def _parts(parts: list[Any], param: str, refusals: Refusals) -> list[dict[str, Any]]:
    found = (_part(part, f"{param}[{i}]", refusals) for i, part in enumerate(parts))
    return [part for part in found if part is not None]


def _messages(items: list[Any], refusals: Refusals) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        param = f"input[{index}]"
        if not isinstance(item, dict):
            raise _invalid("An input item must be an object.", param, "invalid_type")
        kind = item.get("type", "message")
        if kind == "message":
            role, content = item.get("role"), item.get("content")
            if role not in ("user", "assistant", "system", "developer"):
                raise _invalid(f"Invalid role {role!r}.", f"{param}.role")
            if isinstance(content, list):
                content = _parts(content, f"{param}.content", refusals)
            elif not isinstance(content, str):
                raise _invalid("A message's content must be a string or a list of parts.",
                               f"{param}.content", "invalid_type")
            messages.append({"role": role, "content": content})
        elif kind == "function_call":
            call = {"id": item.get("call_id"), "type": "function",
                    "function": {"name": item.get("name"), "arguments": item.get("arguments", "")}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and last.get("tool_calls"):
                last["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "reasoning":
            # An earlier turn's thinking, sent back as the API asks: chat has no
            # place for it, and the model needs it no more than chat models do.
            continue
        elif kind == "function_call_output":
            output = item.get("output")
            if isinstance(output, list):  # content parts, as the SDK allows
                output = _parts(output, f"{param}.output", refusals)
            elif not isinstance(output, str):
                output = _encode(output).decode()
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"),
                             "content": output})
        else:
            _refuse(_invalid(f"Input items of type {kind!r} are not supported.",
                             f"{param}.type"), refusals)
    return messages


def _tools(tools: object, refusals: Refusals) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _invalid("'tools' must be a list.", "tools", "invalid_type")
    converted = []
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else None
            _refuse(_invalid(f"Tools of type {kind!r} are not supported: only 'function'.",
                             f"tools[{index}].type"), refusals)
            continue
        function = {"name": tool.get("name"), "parameters": tool.get("parameters") or {
            "type": "object", "properties": {}}}
        for key in ("description", "strict"):
            if tool.get(key) is not None:
                function[key] = tool[key]
        converted.append({"type": "function", "function": function})
    return converted


def chat_body(body: object, refusals: Refusals = None) -> dict[str, Any]:
    """The chat-completions body for a Responses body (see the module docstring)."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_request_body")
    for field in _KEPT_UPSTREAM:
        if body.get(field) is not None:
            _refuse(_invalid(f"'{field}' needs a provider that keeps responses (the Responses "
                             "API served natively); this model's does not. Send the "
                             "conversation in 'input'.", field, "unsupported_parameter"),
                    refusals)
    given = body.get("input")
    if isinstance(given, str):
        messages = [{"role": "user", "content": given}]
    elif isinstance(given, list) and given:
        messages = _messages(given, refusals)
    elif given is None and refusals:
        messages = []  # the input is upstream already (a stored response, a prompt)
    else:
        raise _invalid("Missing required parameter: 'input' (a string or a list of items).",
                       "input", "missing_required_parameter")
    if not messages and refusals:
        # Nothing chat can say: only a native provider will see this body, and the
        # canonical one is kept for the estimate alone.
        messages = [{"role": "user", "content": ""}]
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.insert(0, {"role": "system", "content": instructions})
    chat: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    for key in _PASSED:
        if body.get(key) is not None:
            chat[key] = body[key]
    if body.get("max_output_tokens") is not None:
        chat["max_completion_tokens"] = body["max_output_tokens"]
    if body.get("tools") and (tools := _tools(body["tools"], refusals)):
        chat["tools"] = tools
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "function":
        chat["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    elif isinstance(choice, dict):
        _refuse(_invalid(f"A tool_choice of type {choice.get('type')!r} is not supported: "
                         "only 'function', 'auto', 'none' and 'required'.", "tool_choice"),
                refusals)
    elif choice is not None:
        chat["tool_choice"] = choice
    text_format = (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) \
        else None
    if isinstance(text_format, dict) and text_format.get("type") == "json_schema":
        chat["response_format"] = {"type": "json_schema", "json_schema": {
            key: text_format[key] for key in ("name", "schema", "strict", "description")
            if key in text_format}}
    elif isinstance(text_format, dict) and text_format.get("type") == "json_object":
        chat["response_format"] = {"type": "json_object"}
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort"):
        chat["reasoning_effort"] = reasoning["effort"]
    if chat.get("stream"):
        chat["stream_options"] = {"include_usage": True}
    return chat


# A refused chat field, named as the Responses body names it.
_PARAMS = (("messages", "input"), ("response_format.json_schema", "text.format"),
           ("response_format", "text.format"), ("max_completion_tokens", "max_output_tokens"),
           ("reasoning_effort", "reasoning.effort"))


def responses_error(error: InvalidRequest) -> InvalidRequest:
    """A refusal of the translated chat body, its ``param`` named in Responses terms."""
    param = error.param or ""
    for chat, responses in _PARAMS:
        if param == chat or param.startswith((chat + ".", chat + "[")):
            param = responses if chat == "messages" else responses + param[len(chat):]
            break
    else:
        param = re.sub(r"^tools\[(\d+)\]\.function\.", r"tools[\1].", param)
    return InvalidRequest(error.message, param=param or None, code=error.code)


def responses_usage(usage: dict[str, Any] | None) -> dict[str, Any]:
    """Responses ``usage`` from chat's."""
    usage = usage or {}
    prompt = usage.get("prompt_tokens") or 0
    completion = usage.get("completion_tokens") or 0
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": prompt + completion}


def response_envelope(body: dict[str, Any], response_id: str, created: int) -> dict[str, Any]:
    """What every response object repeats of its request."""
    return {
        "id": response_id, "object": "response", "created_at": created,
        "model": body.get("model"), "instructions": body.get("instructions"),
        "tools": body.get("tools") or [], "tool_choice": body.get("tool_choice") or "auto",
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "temperature": body.get("temperature"), "top_p": body.get("top_p"),
        "max_output_tokens": body.get("max_output_tokens"), "previous_response_id": None,
        "metadata": body.get("metadata") or {}, "text": body.get("text") or {
            "format": {"type": "text"}},
        "error": None, "incomplete_details": None,
    }


def output_items(message: dict[str, Any], status: str = "completed") -> list[dict[str, Any]]:
    """A chat message's reasoning, text and tool calls as Responses output items."""
    items: list[dict[str, Any]] = []
    thought = message.get("reasoning_content")
    if isinstance(thought, str) and thought:
        items.append({"type": "reasoning", "id": new_id("rs"), "status": status, "summary": [],
                      "content": [{"type": "reasoning_text", "text": thought}]})
    text = message.get("content")
    if isinstance(text, str) and (text or not message.get("tool_calls")):
        items.append({"type": "message", "id": new_id("msg"), "status": status,
                      "role": "assistant",
                      "content": [{"type": "output_text", "text": text, "annotations": []}]})
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        items.append({"type": "function_call", "id": new_id("fc"), "status": status,
                      "call_id": call.get("id"), "name": function.get("name"),
                      "arguments": function.get("arguments", "")})
    return items


def response_object(
    completion: dict[str, Any], body: dict[str, Any], *, response_id: str | None = None,
    created: int | None = None,
) -> dict[str, Any]:
    """The ``response`` for a chat completion of the chat body made from ``body``."""
    choices = completion.get("choices") or [{}]
    choice = choices[0]
    result = response_envelope(body, response_id or new_id("resp"), created or int(time.time()))
    result["model"] = completion.get("model") or result["model"]
    reason = INCOMPLETE.get(choice.get("finish_reason") or "")
    result["status"] = "incomplete" if reason else "completed"
    if reason:
        result["incomplete_details"] = {"reason": reason}
    result["output"] = output_items(choice.get("message") or {},
                                    "incomplete" if reason else "completed")
    result["usage"] = responses_usage(completion.get("usage"))
    return result
