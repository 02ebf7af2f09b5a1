"""What a call policy may do with a call's answer (``sluiceway.calls.answers``):
answer the call itself with a recording, and put output stages on its send.
Over a real gateway and a fake upstream, driven with httpx and the openai SDK."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

import sluiceway
from sluiceway.api import InvalidRequest, Recording
from sluiceway.testing import EventRecorder, RunningServer
from sluiceway.testing.fakes import FakeOpenAI

StartGateway = Callable[..., RunningServer]
HI = [{"role": "user", "content": "hi"}]


class Policies:
    """An in-process plugin registering the given policies, in order."""

    def __init__(self, *policies: Any) -> None:
        self.policies = policies

    @sluiceway.hookimpl
    def register_call_policies(self, register: Callable[[sluiceway.CallPolicyType], None]) -> None:
        for policy in self.policies:
            register(sluiceway.CallPolicyType(policy.name, lambda gateway, p=policy: p))


class Staged:
    """Adds a stage that marks the start's headers with its name and, when
    ``shout``, upper-cases every body part; ``fail_at`` raises on that message
    (1: the response's start)."""

    kinds = frozenset({"chat"})

    def __init__(self, name: str, *, shout: bool = False, fail_at: int | None = None) -> None:
        self.name, self.shout, self.fail_at = name, shout, fail_at
        self.seen: list[bytes] = []

    async def admit(self, call: sluiceway.ModelCall) -> None:
        def stage(send: sluiceway.Send) -> sluiceway.Send:
            parts = 0

            async def staged(message: Any) -> None:
                nonlocal parts
                parts += 1
                if parts == self.fail_at:
                    raise InvalidRequest("Stopped by a stage.", code="stage_stopped")
                if message["type"] == "http.response.start":
                    headers = [(k, v) for k, v in message["headers"]
                               if not (self.shout and k == b"content-length")]
                    order = dict(headers).get(b"x-stages", b"")
                    headers = [(k, v) for k, v in headers if k != b"x-stages"]
                    headers.append((b"x-stages", order + self.name.encode() + b";"))
                    message = {**message, "headers": headers}
                elif message["type"] == "http.response.body":
                    self.seen.append(message.get("body", b""))
                    if self.shout:
                        message = {**message, "body": shout(message.get("body", b""))}
                await send(message)

            return staged

        call.add_output(stage)


def shout(body: bytes) -> bytes:
    return body.replace(b"echo", b"ECHO").replace(b"hi", b"HI")


class Answering:
    """Answers every call with ``recording`` (the policies after it are not asked)."""

    kinds = frozenset({"chat"})

    def __init__(self, name: str, recording: Recording) -> None:
        self.name, self.recording = name, recording
        self.asked = 0

    async def admit(self, call: sluiceway.ModelCall) -> None:
        self.asked += 1
        call.headers["x-answered"] = "yes"
        call.answer_with(self.recording, by=self.name)


def config(fake: FakeOpenAI) -> dict[str, Any]:
    return {"gateway": {"plugins": ["openai"]},
            "providers": [{"name": "up", "type": "openai", "base_url": fake.url,
                           "api_key": "sk-up", "max_retries": 0, "models": ["m"]}]}


def chat(server: RunningServer, **body: Any) -> httpx.Response:
    return httpx.post(f"{server.base_url}/chat/completions",
                      json={"model": "m", "messages": HI, **body})


def test_stages_see_and_change_whole_and_streamed_answers_first_added_outermost(
    fake_openai: Callable[..., FakeOpenAI], gateway_factory: StartGateway,
) -> None:
    outer, inner = Staged("outer"), Staged("inner", shout=True)
    server = gateway_factory(config(fake_openai(chunks=3)), plugins=[
        ("policies", Policies(outer, inner))])
    whole = chat(server)
    assert whole.status_code == 200 and whole.headers["x-stages"] == "inner;outer;"
    assert whole.json()["choices"][0]["message"]["content"] == "ECHO: HI"
    # The outer stage saw what the inner one let through.
    assert outer.seen[-1] == whole.content and b"ECHO: HI" in outer.seen[-1]
    assert b"echo: hi" in inner.seen[-1]
    outer.seen.clear()
    inner.seen.clear()
    streamed = chat(server, stream=True)
    assert streamed.headers["x-stages"] == "inner;outer;"
    assert len(inner.seen) > 2 and streamed.content.endswith(b"data: [DONE]\n\n")
    assert b"".join(outer.seen) == streamed.content == b"".join(map(shout, inner.seen))
    assert streamed.content != b"".join(inner.seen)


def test_a_stage_that_raises_before_the_start_turns_the_answer_into_that_error(
    fake_openai: Callable[..., FakeOpenAI], gateway_factory: StartGateway,
) -> None:
    server = gateway_factory(config(fake_openai()), plugins=[
        ("policies", Policies(Staged("stopper", fail_at=1)))])
    refused = chat(server)
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert (error["code"], error["message"]) == ("stage_stopped", "Stopped by a stage.")
    assert refused.headers["x-request-id"]


def test_a_stage_that_raises_mid_stream_ends_it_with_an_error_frame(
    fake_openai: Callable[..., FakeOpenAI], gateway_factory: StartGateway,
) -> None:
    stopper = Staged("stopper", fail_at=4)  # the start, two chunks, then this
    server = gateway_factory(config(fake_openai(chunks=5)), plugins=[
        ("policies", Policies(stopper))])
    client = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    received = []
    with pytest.raises(openai.APIError, match="Stopped by a stage"):
        for chunk in client.chat.completions.create(model="m", messages=HI,  # type: ignore[arg-type]
                                                    stream=True):
            received.append(chunk)
    assert len(received) == 2
    # The error frame went out through the stage, after the two parts before it.
    last = json.loads(stopper.seen[-1].removeprefix(b"data: "))
    assert last["error"]["code"] == "stage_stopped" and len(stopper.seen) == 3


def test_a_policy_answers_the_call_itself_with_a_recording(
    fake_openai: Callable[..., FakeOpenAI], gateway_factory: StartGateway,
) -> None:
    fake = fake_openai()
    body = b'{"id": "chatcmpl-recorded", "object": "chat.completion", "choices": []}'
    answering = Answering("answering", Recording(b"application/json", (body,), time.time()))
    after, outer = Staged("after"), Staged("outer")
    recorder = EventRecorder()
    server = gateway_factory(config(fake), plugins=[
        ("policies", Policies(outer, answering, after)), recorder.plugin()])
    answer = chat(server)
    assert answer.status_code == 200 and answer.content == body
    assert answer.headers["x-answered"] == "yes"
    # No upstream, and the policy after the one that answered was not asked.
    assert fake.requests == [] and after.seen == [] and answering.asked == 1
    # The replay went out through the stages of the policies before it.
    assert outer.seen == [body] and answer.headers["x-stages"] == "outer;"
    end = recorder.ended(answer.headers["x-request-id"])
    assert (end.answered_by, end.attempts, end.provider) == ("answering", 0, None)
    assert end.usage == {"prompt_tokens": 0, "completion_tokens": 0}
    # A recorded stream is replayed part by part, as server-sent events.
    frames = (b'data: {"choices": []}\n\n', b"data: [DONE]\n\n")
    answering.recording = Recording(b"text/event-stream; charset=utf-8", frames, time.time())
    streamed = chat(server, stream=True)
    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert streamed.headers["cache-control"] == "no-cache"
    assert streamed.content == b"".join(frames)
