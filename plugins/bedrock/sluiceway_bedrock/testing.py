"""A fake Bedrock runtime for tests: a raw ASGI app to serve on loopback
(``serve_asgi(FakeBedrock(...))`` from :mod:`sluiceway.testing`).

It checks what AWS checks: the SigV4 signature, recomputed from the request
exactly as received (method, raw path, the signed headers, the body) with the
fake's copy of the credentials (403 ``InvalidSignatureException`` otherwise,
and 403 ``UnrecognizedClientException`` for an unknown key id), and the
Converse body (roles alternating from the user's, one kind of data per block,
tool results answering earlier tool uses, a ``toolConfig`` whenever tools were
used). Streams are AWS's binary event stream, encoded here frame by frame with
their CRCs. It answers by the last user text: anything (``"echo: <text>"``;
after tool results, ``"result: <the first result>"``), ``tools``, ``think``,
``think-tools`` (a signed thought, then a tool use), ``guardrail``, ``long``,
``429``, ``500``, and for streams ``error-mid-stream``, ``no-stop`` and
``bad-crc``. ``requests`` keeps
``(raw path, headers, body)``.
"""

from __future__ import annotations

import datetime
import json
import struct
import zlib
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from sluiceway.testing import read_body

__all__ = ["FakeBedrock", "encode_frame"]

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
_BLOCKS = {"text", "image", "toolUse", "toolResult", "reasoningContent"}
_REQUEST = {"messages", "system", "inferenceConfig", "toolConfig",
            "additionalModelRequestFields"}
_ERRORS = {
    "long": (400, "ValidationException", "Input is too long for requested model."),
    "429": (429, "ThrottlingException", "Too many requests, please wait before trying again."),
    "500": (500, "InternalServerException", "The server encountered an internal error."),
}


class Refused(Exception):
    """What Bedrock answers 400 ValidationException to."""


def encode_frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One event stream message: prelude, string headers, payload, CRC32s."""
    encoded = b"".join(
        struct.pack("!B", len(name)) + name.encode() + b"\x07"
        + struct.pack("!H", len(value.encode())) + value.encode()
        for name, value in headers.items())
    total = 12 + len(encoded) + len(payload) + 4
    prelude = struct.pack("!II", total, len(encoded))
    head = prelude + struct.pack("!I", zlib.crc32(prelude))
    body = head + encoded + payload
    return body + struct.pack("!I", zlib.crc32(body))


def _event(name: str, data: dict[str, Any]) -> bytes:
    return encode_frame({":event-type": name, ":content-type": "application/json",
                         ":message-type": "event"}, json.dumps(data).encode())


def check_converse(body: Any) -> None:
    if not isinstance(body, dict) or body.keys() - _REQUEST:
        raise Refused(f"unknown fields {sorted(set(body or ()) - _REQUEST)}")
    messages = body.get("messages") or []
    used: set[str] = set()
    for index, message in enumerate(messages):
        role = message.get("role")
        if role != ("user" if index % 2 == 0 else "assistant"):
            raise Refused("A conversation must alternate between user and assistant roles "
                          "and start with the user.")
        for block in message.get("content") or [None]:
            if not isinstance(block, dict) or len(block.keys() & _BLOCKS) != 1 or \
                    block.keys() - _BLOCKS:
                raise Refused(f"messages.{index}: a content block needs one kind of data")
            if "toolUse" in block:
                used.add(block["toolUse"]["toolUseId"])
            if "toolResult" in block and block["toolResult"]["toolUseId"] not in used:
                raise Refused("A toolResult answers no toolUse of the previous turn.")
            if "image" in block and not block["image"]["source"].get("bytes"):
                raise Refused("An image needs its bytes.")
    if used and "toolConfig" not in body:
        raise Refused("The toolConfig field must be defined when using toolUse and toolResult.")
    if "thinking" in (body.get("additionalModelRequestFields") or {}):
        config = body.get("inferenceConfig") or {}
        if "temperature" in config or "topP" in config:
            raise Refused("temperature and top_p may not be set while thinking is enabled")
        for message in messages:
            content = message["content"]
            if message["role"] == "assistant" and any("toolUse" in b for b in content) and (
                    (content[0].get("reasoningContent") or {}).get("reasoningText", {})
                    .get("signature") != "sig"):
                raise Refused("Expected a thinking block with its signature before tool_use "
                              "when thinking is enabled.")


class FakeBedrock:
    """Converse and ConverseStream in ``region`` for one access key."""

    def __init__(self, *, access_key_id: str = "AKIDFAKE", secret_access_key: str = "secret",
                 session_token: str | None = None, region: str = "us-east-1",
                 api_key: str | None = None, chunks: int = 3) -> None:
        self.credentials = Credentials(access_key_id, secret_access_key, session_token)
        self.region, self.api_key, self.chunks = region, api_key, chunks
        self.requests: list[tuple[str, dict[str, str], Any]] = []

    def _check_signature(self, raw_path: str, headers: dict[str, str], body: bytes) -> str | None:
        if self.api_key is not None:
            ok = headers.get("authorization") == f"Bearer {self.api_key}"
            return None if ok else "UnrecognizedClientException"
        authorization = headers.get("authorization", "")
        if f"Credential={self.credentials.access_key}/" not in authorization:
            return "UnrecognizedClientException"
        signed = authorization.split("SignedHeaders=", 1)[1].split(",", 1)[0].split(";")
        request = AWSRequest(method="POST", url=f"http://{headers['host']}{raw_path}", data=body,
                             headers={name: headers[name] for name in signed if name != "host"})
        stamp = headers.get("x-amz-date", "")
        request.context["timestamp"] = stamp
        signer = SigV4Auth(self.credentials, "bedrock", self.region)
        expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(
            request)), request)
        when = datetime.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.UTC)
        if abs((datetime.datetime.now(datetime.UTC) - when).total_seconds()) > 300:
            return "InvalidSignatureException"
        return None if authorization.endswith(f"Signature={expected}") else \
            "InvalidSignatureException"

    def _answer(self, body: dict[str, Any]) -> dict[str, Any]:
        last = body["messages"][-1]["content"]
        results = [b["toolResult"] for b in last if "toolResult" in b]
        said = " ".join(b["text"] for b in last if "text" in b)
        stop = "end_turn"
        content: list[dict[str, Any]]
        if results:
            content = [{"text": "result: " + json.dumps(results[0]["content"][0])}]
        elif said == "tools":
            tool = body["toolConfig"]["tools"][0]["toolSpec"]["name"]
            use = {"toolUseId": "tooluse_1", "name": tool, "input": {"city": "Oslo"}}
            content = [{"text": "Checking."}, {"toolUse": use}]
            stop = "tool_use"
        elif said in ("think", "think-tools"):
            content = [{"reasoningContent": {"reasoningText": {
                "text": "Two and two make four.", "signature": "sig"}}}, {"text": "4"}]
            if said == "think-tools":
                tool = body["toolConfig"]["tools"][0]["toolSpec"]["name"]
                content[1] = {"toolUse": {"toolUseId": "tooluse_2", "name": tool,
                                          "input": {"city": "Oslo"}}}
                stop = "tool_use"
        elif said == "guardrail":
            content, stop = [{"text": "Sorry."}], "guardrail_intervened"
        else:
            content = [{"text": "echo: " + said}]
        return {"output": {"message": {"role": "assistant", "content": content}},
                "stopReason": stop,
                "usage": {"inputTokens": 10, "outputTokens": 3, "totalTokens": 17,
                          "cacheReadInputTokens": 4, "cacheWriteInputTokens": 0},
                "metrics": {"latencyMs": 5}}

    def _stream(self, answer: dict[str, Any], said: str) -> bytes:
        frames = [_event("messageStart", {"role": "assistant"})]
        for index, block in enumerate(answer["output"]["message"]["content"]):
            if "text" in block:
                text, size = block["text"], max(1, -(-len(block["text"]) // self.chunks))
                frames += [_event("contentBlockDelta", {"contentBlockIndex": index,
                                                        "delta": {"text": text[i:i + size]}})
                           for i in range(0, len(text), size)]
            elif "toolUse" in block:
                use = block["toolUse"]
                frames.append(_event("contentBlockStart", {"contentBlockIndex": index, "start": {
                    "toolUse": {"toolUseId": use["toolUseId"], "name": use["name"]}}}))
                frames.append(_event("contentBlockDelta", {"contentBlockIndex": index, "delta": {
                    "toolUse": {"input": json.dumps(use["input"])}}}))
            else:
                reasoning = block["reasoningContent"]["reasoningText"]
                frames.append(_event("contentBlockDelta", {"contentBlockIndex": index, "delta": {
                    "reasoningContent": {"text": reasoning["text"]}}}))
                frames.append(_event("contentBlockDelta", {"contentBlockIndex": index, "delta": {
                    "reasoningContent": {"signature": reasoning["signature"]}}}))
            frames.append(_event("contentBlockStop", {"contentBlockIndex": index}))
        frames.append(_event("messageStop", {"stopReason": answer["stopReason"]}))
        frames.append(_event("metadata", {"usage": answer["usage"], "metrics": {"latencyMs": 5}}))
        if said == "error-mid-stream":
            frames = [*frames[:2], encode_frame(
                {":exception-type": "modelStreamErrorException", ":message-type": "exception",
                 ":content-type": "application/json"},
                b'{"message": "The model stopped answering."}')]
        elif said == "no-stop":
            frames = frames[:2]
        elif said == "bad-crc":
            frames[1] = frames[1][:-1] + bytes([frames[1][-1] ^ 0xFF])
        return b"".join(frames)

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        raw = await read_body(receive)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        raw_path = scope.get("raw_path", scope["path"].encode()).decode()
        body = json.loads(raw) if raw else None
        self.requests.append((raw_path, headers, body))
        status, kind, data = self._respond(raw_path, headers, raw, body)
        head = [(b"content-type", kind.encode())]
        if status >= 400:
            name = json.loads(data).get("__type", "")
            head.append((b"x-amzn-errortype", f"{name}:http://internal.amazon.com/".encode()))
        await send({"type": "http.response.start", "status": status, "headers": head})
        await send({"type": "http.response.body", "body": data})

    def _respond(self, raw_path: str, headers: dict[str, str], raw: bytes, body: Any
                 ) -> tuple[int, str, bytes]:
        def error(status: int, name: str, message: str) -> tuple[int, str, bytes]:
            return status, "application/json", json.dumps(
                {"__type": name, "message": message}).encode()

        refused = self._check_signature(raw_path, headers, raw)
        if refused is not None:
            return error(403, refused, "The security token included in the request is invalid.")
        parts = raw_path.split("/")
        if len(parts) != 4 or parts[1] != "model" or parts[3] not in ("converse",
                                                                      "converse-stream"):
            return error(404, "UnknownOperationException", f"No operation at {raw_path}.")
        if ":" in parts[2] or not unquote(parts[2]):
            return error(400, "ValidationException", "The model id must be URL-encoded.")
        try:
            check_converse(body)
        except Refused as exc:
            return error(400, "ValidationException", str(exc))
        said = " ".join(b.get("text", "") for b in body["messages"][-1]["content"])
        if said in _ERRORS:
            return error(*_ERRORS[said])
        answer = self._answer(body)
        if parts[3] == "converse":
            return 200, "application/json", json.dumps(answer).encode()
        return 200, "application/vnd.amazon.eventstream", self._stream(answer, said)
