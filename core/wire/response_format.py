"""OpenAI's ``response_format`` on an Anthropic upstream, which has no JSON mode.

``json_schema`` is asked for by the tool-use technique: the schema becomes a
tool, ``json_response``, that the model is made to call (``tool_choice``; with
thinking on, Anthropic allows no forced tool, so it is asked in the system
prompt instead); the tool call's input comes back as the message's JSON text
with ``finish_reason: "stop"``. A schema whose root is not an object is wrapped
(tool ``json_response_value``, input ``{"value": ...}``) and unwrapped on the
way back. ``json_object`` adds an instruction to the system prompt. A client
tool of either name would be taken for the answer.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = [
    "JSON_TOOL",
    "WRAPPED_TOOL",
    "apply_response_format",
    "asks_for_schema",
    "is_json_tool",
    "json_text",
]

JSON_TOOL = "json_response"
WRAPPED_TOOL = "json_response_value"
_JSON_OBJECT = "Respond with a single JSON object and nothing else."
_CALL_THE_TOOL = f"Give your final answer by calling the {JSON_TOOL} tool."

_encode = msgspec.json.Encoder().encode


def asks_for_schema(body: dict[str, Any]) -> bool:
    """Whether a chat body asks for a ``json_schema`` answer (answered by the tool)."""
    response_format = body.get("response_format")
    return isinstance(response_format, dict) and response_format.get("type") == "json_schema"


def is_json_tool(name: object) -> bool:
    """Whether a tool call is the answer itself (see the module docstring)."""
    return name in (JSON_TOOL, WRAPPED_TOOL)


def json_text(name: object, tool_input: object) -> str:
    """The answer's JSON text from the tool call's input."""
    if name == WRAPPED_TOOL and isinstance(tool_input, dict):
        tool_input = tool_input.get("value")
    return _encode(tool_input).decode()


def _instruct(result: dict[str, Any], text: str) -> None:
    system = result.get("system")
    if system is None:
        result["system"] = text
    elif isinstance(system, str):
        result["system"] = f"{system}\n\n{text}"
    else:
        result["system"] = [*system, {"type": "text", "text": text}]


def apply_response_format(body: dict[str, Any], result: dict[str, Any]) -> None:
    """Add to the Anthropic body ``result`` what ``body["response_format"]`` asks."""
    response_format = body.get("response_format")
    if not isinstance(response_format, dict):
        return
    kind = response_format.get("type")
    if kind == "json_object":
        _instruct(result, _JSON_OBJECT)
        return
    if kind != "json_schema":
        return
    spec = response_format.get("json_schema")
    if not isinstance(spec, dict):
        spec = {}
    found = spec.get("schema")
    schema: dict[str, Any] = found if isinstance(found, dict) else {"type": "object"}
    name = JSON_TOOL
    if schema.get("type") != "object" and "properties" not in schema:
        name = WRAPPED_TOOL
        inner = {k: v for k, v in schema.items() if k not in ("$defs", "definitions")}
        # Definitions stay at the root, where "#/$defs/..." references look for them.
        schema = {"type": "object", "properties": {"value": inner}, "required": ["value"],
                  **{k: schema[k] for k in ("$defs", "definitions") if k in schema}}
    description = spec.get("description") or "Respond with a JSON value matching this schema."
    result["tools"] = [*result.get("tools", ()),
                       {"name": name, "description": description, "input_schema": schema}]
    choice = result.get("tool_choice")
    if "thinking" in result:
        _instruct(result, _CALL_THE_TOOL)
    elif choice is None or choice.get("type") == "none":
        # No tools of the client's to call: this one is the answer.
        result["tool_choice"] = (
            {"type": "tool", "name": name} if len(result["tools"]) == 1 else {"type": "any"})
    elif choice.get("type") == "auto":
        # Some tool must be called, the answer's or the client's (its other settings kept).
        result["tool_choice"] = {**choice, "type": "any"}
