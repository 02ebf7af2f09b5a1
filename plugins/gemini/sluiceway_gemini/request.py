"""A chat-completions body as a Gemini ``generateContent`` body.

* ``system`` / ``developer`` messages -> ``systemInstruction``; ``user`` ->
  ``user`` contents; ``assistant`` -> ``model`` contents, its tool calls as
  ``functionCall`` parts (their arguments parsed: Gemini takes an object);
  ``tool`` messages -> ``functionResponse`` parts of a ``user`` turn, named
  after the call they answer. Consecutive turns of one role are merged, so the
  answers to parallel calls travel together, as Gemini expects.
* content parts: text; images and audio as ``inlineData`` (data: URLs) or
  ``fileData`` (other URLs); files given as data: URLs as ``inlineData``.
* ``tools`` -> one ``functionDeclarations`` tool (``parametersJsonSchema``: the
  JSON Schema as given); ``tool_choice`` -> ``toolConfig.functionCallingConfig``.
* ``temperature``, ``top_p``, ``max_completion_tokens`` / ``max_tokens``,
  ``stop``, ``n``, ``seed``, penalties -> ``generationConfig``;
  ``response_format`` -> ``responseMimeType`` and ``responseJsonSchema``;
  ``reasoning_effort`` -> ``thinkingConfig`` (a thinking budget, thoughts included).

Gemini signs the function calls of thinking models (``thoughtSignature``) and
wants the signature back with the call: it travels inside the tool call's id,
after :data:`SIGNATURE_MARK`, base64url-encoded (so the id keeps to letters,
digits, ``_`` and ``-``), and is split out again here. A model turn whose first
call carries no signature (made by another model, or by hand) gets the
validator-skipping value Gemini documents for such calls, :data:`UNSIGNED`.
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
from typing import Any

import msgspec

from sluiceway.api import InvalidRequest

__all__ = ["SIGNATURE_MARK", "UNSIGNED", "gemini_request", "join_call_id", "split_call_id"]

SIGNATURE_MARK = "__thought__"
UNSIGNED = "skip_thought_signature_validator"
_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode
_BUDGETS = {"none": 0, "minimal": 0, "low": 1024, "medium": 8192, "high": 24576}
_CONFIG = (("temperature", "temperature"), ("top_p", "topP"), ("n", "candidateCount"),
           ("seed", "seed"), ("presence_penalty", "presencePenalty"),
           ("frequency_penalty", "frequencyPenalty"))


def join_call_id(call_id: str, signature: str) -> str:
    """A tool call id carrying ``signature``."""
    packed = base64.urlsafe_b64encode(base64.b64decode(signature)).rstrip(b"=").decode()
    return f"{call_id}{SIGNATURE_MARK}{packed}"


def split_call_id(call_id: str) -> tuple[str, str | None]:
    """A tool call id and the thought signature it carries, if any."""
    plain, _, packed = call_id.partition(SIGNATURE_MARK)
    if not packed:
        return plain, None
    try:
        raw = base64.urlsafe_b64decode(packed + "=" * (-len(packed) % 4))
    except (binascii.Error, ValueError):
        return plain, None
    return plain, base64.b64encode(raw).decode()


def _invalid(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, param=param, code="invalid_value")


def _media(url: str, param: str) -> dict[str, Any]:
    if url.startswith("data:"):
        head, _, data = url[5:].partition(",")
        if not head.endswith(";base64"):
            raise _invalid("A data: URL must be base64-encoded.", param)
        return {"inlineData": {"mimeType": head[: -len(";base64")] or "application/octet-stream",
                               "data": data}}
    kind = mimetypes.guess_type(url.split("?", 1)[0])[0] or "image/jpeg"
    return {"fileData": {"mimeType": kind, "fileUri": url}}


def _parts(content: Any, param: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts: list[dict[str, Any]] = []
    for index, part in enumerate(content):
        where = f"{param}[{index}]"
        kind = part.get("type")
        if kind == "text":
            parts.append({"text": part.get("text", "")})
        elif kind == "image_url":
            parts.append(_media((part.get("image_url") or {}).get("url", ""), where))
        elif kind == "input_audio":
            audio = part.get("input_audio") or {}
            parts.append({"inlineData": {"mimeType": f"audio/{audio.get('format', 'wav')}",
                                         "data": audio.get("data", "")}})
        elif kind == "file" and str((part.get("file") or {}).get("file_data", "")).startswith(
                "data:"):
            parts.append(_media(part["file"]["file_data"], where))
        else:
            raise _invalid(f"Content parts of type {kind!r} cannot be sent to Gemini.",
                           f"{where}.type")
    return parts


def _append(contents: list[dict[str, Any]], role: str, parts: list[dict[str, Any]]) -> None:
    if not parts:
        return
    if contents and contents[-1]["role"] == role:
        contents[-1]["parts"].extend(parts)
    else:
        contents.append({"role": role, "parts": parts})


def _arguments(raw: Any, param: str) -> dict[str, Any]:
    try:
        value = _decode(raw) if isinstance(raw, str | bytes) and raw else {}
    except msgspec.DecodeError:
        raise _invalid("A tool call's arguments must be JSON.", param) from None
    return value if isinstance(value, dict) else {"value": value}


def _function_response(content: Any) -> dict[str, Any]:
    text = content if isinstance(content, str) else "".join(
        p.get("text", "") for p in content or () if isinstance(p, dict))
    try:
        value = _decode(text)
    except msgspec.DecodeError:
        value = text
    return value if isinstance(value, dict) else {"result": value}


def _contents(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for index, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        param = f"messages[{index}]"
        if role in ("system", "developer"):
            system.extend(_parts(content, f"{param}.content"))
        elif role == "user":
            _append(contents, "user", _parts(content, f"{param}.content"))
        elif role == "assistant":
            parts = _parts(content, f"{param}.content")
            for number, call in enumerate(message.get("tool_calls") or ()):
                function = call.get("function") or {}
                call_id, signature = split_call_id(str(call.get("id") or ""))
                names[call_id] = function.get("name") or ""
                part: dict[str, Any] = {"functionCall": {
                    "name": function.get("name"),
                    "args": _arguments(function.get("arguments"),
                                       f"{param}.tool_calls[{number}].function.arguments")}}
                if signature:
                    part["thoughtSignature"] = signature
                elif number == 0:
                    part["thoughtSignature"] = UNSIGNED
                parts.append(part)
            _append(contents, "model", parts)
        elif role == "tool":
            call_id, _ = split_call_id(str(message.get("tool_call_id") or ""))
            name = names.get(call_id) or message.get("name") or "tool"
            _append(contents, "user", [{"functionResponse": {
                "name": name, "response": _function_response(content)}}])
    return system, contents


def _tool_config(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}
    mode = {"auto": "AUTO", "none": "NONE", "required": "ANY"}.get(choice)
    return {"functionCallingConfig": {"mode": mode}} if mode else None


def _generation_config(body: dict[str, Any]) -> dict[str, Any]:
    config = {theirs: body[ours] for ours, theirs in _CONFIG if body.get(ours) is not None}
    if config.get("candidateCount", 1) != 1:
        raise _invalid("Only one choice (n = 1) can be asked of Gemini through this gateway.",
                       "n")
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is not None:
        config["maxOutputTokens"] = limit
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    response_format = body.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        config["responseMimeType"] = "application/json"
        schema = (response_format.get("json_schema") or {}).get("schema")
        if schema:
            config["responseJsonSchema"] = schema
    elif response_format.get("type") == "json_object":
        config["responseMimeType"] = "application/json"
    effort = body.get("reasoning_effort")
    if effort in _BUDGETS:
        budget = _BUDGETS[effort]
        config["thinkingConfig"] = {"thinkingBudget": budget, "includeThoughts": budget > 0}
    return config


def gemini_request(body: dict[str, Any]) -> dict[str, Any]:
    """The ``generateContent`` body for a validated chat-completions body."""
    system, contents = _contents(body["messages"])
    if not contents:
        raise _invalid("Gemini needs at least one user or assistant message.", "messages")
    request: dict[str, Any] = {"contents": contents}
    if system:
        request["systemInstruction"] = {"parts": system}
    tools = [tool.get("function") or {} for tool in body.get("tools") or ()
             if tool.get("type") == "function"]
    if tools:
        declarations = []
        for tool in tools:
            declaration: dict[str, Any] = {"name": tool.get("name")}
            if tool.get("description"):
                declaration["description"] = tool["description"]
            if tool.get("parameters"):
                declaration["parametersJsonSchema"] = tool["parameters"]
            declarations.append(declaration)
        request["tools"] = [{"functionDeclarations": declarations}]
        tool_config = _tool_config(body.get("tool_choice"))
        if tool_config is not None:
            request["toolConfig"] = tool_config
    config = _generation_config(body)
    if config:
        request["generationConfig"] = config
    return request
