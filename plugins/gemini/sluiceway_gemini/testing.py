"""A fake Gemini API for tests: a raw ASGI app to serve on loopback
(``serve_asgi(FakeGemini(key="..."))`` from :mod:`sluiceway.testing`).

It checks what it is sent as strictly as the API does, answering 400
``INVALID_ARGUMENT`` to a body Gemini would refuse (an unknown field, a part
with two kinds of data, a ``functionResponse`` no ``functionCall`` asked for, a
signed function call sent back without its ``thoughtSignature``) and 400
``API_KEY_INVALID`` to a wrong ``x-goog-api-key``. It answers by the text of the
last user turn: anything (``"echo: <text>"``; after function results,
``"result: <the first result as JSON>"``), ``tools`` (a signed call of the
first declared function), ``think`` (a thought, then ``4``), ``blocked`` (the
prompt blocked), ``unsafe`` (an answer stopped for safety), ``long`` (too many
tokens), ``429`` (quota, with a ``RetryInfo`` of 17 s), ``500``,
``error-mid-stream`` and ``no-finish`` (streams only). Every request is kept in
``requests`` as ``(path, query, headers, body)``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from sluiceway.testing import read_body

__all__ = ["SIGNATURE", "UNSIGNED", "FakeGemini"]

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: The thoughtSignature of every function call the fake makes (base64, with the
#: characters a tool call id may not hold).
SIGNATURE = "c2lnbmVkL2J5K2dlbWluaT8/Pz4+"
#: What Gemini accepts for a call it did not sign.
UNSIGNED = "skip_thought_signature_validator"
_PART_DATA = {"text", "inlineData", "fileData", "functionCall", "functionResponse"}
_PART_EXTRA = {"thought", "thoughtSignature"}
_REQUEST = {"contents", "systemInstruction", "tools", "toolConfig", "generationConfig",
            "safetySettings"}
_CONFIG = {"temperature", "topP", "topK", "candidateCount", "maxOutputTokens", "stopSequences",
           "seed", "presencePenalty", "frequencyPenalty", "responseMimeType",
           "responseJsonSchema", "thinkingConfig"}
_ERRORS = {
    "long": (400, "INVALID_ARGUMENT", "The input token count (2000000) exceeds the maximum "
             "number of tokens allowed (1048576).", []),
    "429": (429, "RESOURCE_EXHAUSTED", "You exceeded your current quota.",
            [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "17s"}]),
    "500": (500, "INTERNAL", "An internal error has occurred.", []),
}


class Refused(Exception):
    """A request the real API would refuse with 400 INVALID_ARGUMENT."""


def _error(status: int, name: str, message: str, details: list[Any]) -> bytes:
    error: dict[str, Any] = {"code": status, "message": message, "status": name}
    if details:
        error["details"] = details
    return json.dumps({"error": error}).encode()


def _check_part(part: Any, where: str, asked: set[str], first_call: bool) -> None:
    if not isinstance(part, dict):
        raise Refused(f"{where}: a part must be an object")
    data = _PART_DATA & part.keys()
    if len(data) != 1 or part.keys() - _PART_DATA - _PART_EXTRA:
        raise Refused(f"{where}: a part needs exactly one kind of data, got {sorted(part)}")
    (kind,) = data
    value = part[kind]
    if kind == "functionCall":
        if not isinstance(value.get("args", {}), dict) or not value.get("name"):
            raise Refused(f"{where}.functionCall: needs a name and object args")
        # As Gemini 3 does: the first call of a model turn must carry its signature.
        if first_call and part.get("thoughtSignature") not in (SIGNATURE, UNSIGNED):
            raise Refused(f"{where}: function call is missing its thought_signature")
        asked.add(value["name"])
    elif kind == "functionResponse":
        if value.get("name") not in asked or not isinstance(value.get("response"), dict):
            raise Refused(f"{where}.functionResponse: answers no function call, or its "
                          "response is not an object")
    elif kind == "inlineData" and not {"mimeType", "data"} <= value.keys():
        raise Refused(f"{where}.inlineData: needs mimeType and data")
    elif kind == "fileData" and not {"mimeType", "fileUri"} <= value.keys():
        raise Refused(f"{where}.fileData: needs mimeType and fileUri")


def check_request(body: Any) -> None:
    """Refuse what Gemini refuses (the subset the gateway could get wrong)."""
    if not isinstance(body, dict) or body.keys() - _REQUEST:
        raise Refused(f"unknown fields {sorted(set(body or ()) - _REQUEST)}")
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise Refused("contents must be a non-empty list")
    asked: set[str] = set()
    for i, content in enumerate(contents):
        if content.get("role") not in ("user", "model") or not content.get("parts"):
            raise Refused(f"contents[{i}]: role must be user or model, with parts")
        calls = 0
        for j, part in enumerate(content["parts"]):
            _check_part(part, f"contents[{i}].parts[{j}]", asked, calls == 0)
            calls += "functionCall" in part
    for part in (body.get("systemInstruction") or {}).get("parts", []):
        if set(part) != {"text"}:
            raise Refused("systemInstruction parts must be text")
    for tool in body.get("tools") or ():
        for declaration in tool.get("functionDeclarations") or ():
            if declaration.keys() - {"name", "description", "parametersJsonSchema"}:
                raise Refused(f"unknown function declaration fields {sorted(declaration)}")
    mode = ((body.get("toolConfig") or {}).get("functionCallingConfig") or {}).get("mode")
    if mode not in (None, "AUTO", "ANY", "NONE"):
        raise Refused(f"unknown function calling mode {mode!r}")
    if (body.get("generationConfig") or {}).keys() - _CONFIG:
        raise Refused(f"unknown generationConfig fields {sorted(body['generationConfig'])}")


def _last_user_text(body: dict[str, Any]) -> str:
    for content in reversed(body["contents"]):
        texts = [p["text"] for p in content["parts"] if "text" in p]
        if content["role"] == "user" and texts:
            return " ".join(texts)
    return ""


class FakeGemini:
    """The Gemini API's ``generateContent``, ``streamGenerateContent``,
    ``countTokens`` and ``batchEmbedContents``, on the models it is asked for."""

    def __init__(self, *, key: str = "gemini-key", chunks: int = 3) -> None:
        self.key, self.chunks = key, chunks
        self.requests: list[tuple[str, dict[str, str], dict[str, str], Any]] = []

    def _answer(self, body: dict[str, Any], model: str) -> tuple[int, dict[str, Any]]:
        said = _last_user_text(body)
        usage = {"promptTokenCount": sum(len(p.get("text", "").split()) for c in body["contents"]
                                         for p in c["parts"]),
                 "candidatesTokenCount": 3, "totalTokenCount": 0}
        finish = "STOP"
        answered = [p["functionResponse"] for p in body["contents"][-1]["parts"]
                    if "functionResponse" in p]
        if answered:
            said = "result: " + json.dumps(answered[0]["response"], sort_keys=True)
        if said == "blocked":
            return 200, {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": usage}
        if said == "tools":
            name = body["tools"][0]["functionDeclarations"][0]["name"]
            parts: list[dict[str, Any]] = [
                {"text": "Checking."},
                {"functionCall": {"name": name, "args": {"city": "Paris"}},
                 "thoughtSignature": SIGNATURE}]
        elif said == "think":
            parts = [{"text": "Two and two make four.", "thought": True}, {"text": "4"}]
            usage["thoughtsTokenCount"] = 5
        elif said == "unsafe":
            parts, finish = [], "SAFETY"
        elif answered:
            parts = [{"text": said}]
        else:
            parts = [{"text": "echo: " + said}]
        usage["totalTokenCount"] = (usage["promptTokenCount"] + usage["candidatesTokenCount"]
                                    + usage.get("thoughtsTokenCount", 0))
        candidate = {"content": {"role": "model", "parts": parts}, "finishReason": finish,
                     "index": 0}
        return 200, {"candidates": [candidate], "usageMetadata": usage,
                     "modelVersion": model + "-001"}

    def _events(self, answer: dict[str, Any], said: str) -> list[dict[str, Any]]:
        if "candidates" not in answer:
            return [answer]
        candidate = answer["candidates"][0]
        events: list[dict[str, Any]] = []
        for part in candidate["content"]["parts"]:
            text = part.get("text")
            if text and not part.get("thought"):
                size = max(1, -(-len(text) // self.chunks))
                events += [{"candidates": [{"content": {"role": "model", "parts": [
                    {"text": text[i:i + size]}]}, "index": 0}]}
                    for i in range(0, len(text), size)]
            else:
                events.append({"candidates": [{"content": {"role": "model", "parts": [part]},
                                               "index": 0}]})
        last = {"candidates": [{"content": {"role": "model", "parts": []},
                                "finishReason": candidate["finishReason"], "index": 0}],
                "usageMetadata": answer["usageMetadata"], "modelVersion": answer["modelVersion"]}
        if said == "error-mid-stream":
            return [*events[:1], {"error": {"code": 503, "message": "The model is overloaded.",
                                            "status": "UNAVAILABLE"}}]
        return events if said == "no-finish" else [*events, last]

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        raw = await read_body(receive)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        query = dict(parse_qsl(scope.get("query_string", b"").decode()))
        path = scope["path"]
        body = json.loads(raw) if raw else None
        self.requests.append((path, query, headers, body))
        status, data, sse = self._respond(path, query, headers, body)
        kind = b"text/event-stream" if sse else b"application/json"
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", kind)]})
        await send({"type": "http.response.body", "body": data})

    def _respond(self, path: str, query: dict[str, str], headers: dict[str, str],
                 body: Any) -> tuple[int, bytes, bool]:
        if headers.get("x-goog-api-key") != self.key:
            return 400, _error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid "
                               "API key.", [{"reason": "API_KEY_INVALID"}]), False
        prefix, _, rest = path.partition("/models/")
        model, _, method = rest.partition(":")
        if prefix != "/v1beta" or not model:
            return 404, _error(404, "NOT_FOUND", f"Unknown path {path}.", []), False
        if method == "batchEmbedContents":
            size = (body["requests"][0].get("outputDimensionality") or 8)
            vectors = [{"values": [round((i + 1) / (n + 2), 4) for n in range(size)]}
                       for i, _ in enumerate(body["requests"])]
            return 200, json.dumps({"embeddings": vectors}).encode(), False
        try:
            if method == "countTokens":
                # The request counted names its model, as a generateContent body does not.
                counted = dict(body.get("generateContentRequest") or {})
                if counted.pop("model", None) != f"models/{model}":
                    raise Refused("generateContentRequest.model must name the model")
                check_request(counted)
            else:
                check_request(body)
        except Refused as refused:
            return 400, _error(400, "INVALID_ARGUMENT", str(refused), []), False
        if method == "countTokens":
            return 200, json.dumps({"totalTokens": 42}).encode(), False
        said = _last_user_text(body)
        if said in _ERRORS:
            status, name, message, details = _ERRORS[said]
            return status, _error(status, name, message, details), False
        status, answer = self._answer(body, model)
        if method == "generateContent":
            return status, json.dumps(answer).encode(), False
        if method != "streamGenerateContent" or query.get("alt") != "sse":
            return 404, _error(404, "NOT_FOUND", f"Unknown method {method!r}.", []), False
        events = self._events(answer, said)
        return 200, b"".join(b"data: " + json.dumps(e).encode() + b"\r\n\r\n"
                             for e in events), True
