"""The pure parts of the Anthropic ingress: error statuses, types and headers on
the Anthropic dialect, request validation, the count_tokens estimate, and stop
sequences on the way back."""

from __future__ import annotations

from typing import Any

import pytest

from sluiceway import (
    AuthenticationFailed,
    GatewayError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    ServiceUnavailable,
    UpstreamError,
    UpstreamTimeout,
)
from sluiceway.errors import RequestTimeout
from sluiceway.wire.anthropic import error_event, error_headers, error_status, error_type
from sluiceway.wire.anthropic_request import chat_request, parse_messages_request
from sluiceway.wire.anthropic_stream import AnthropicEventStream
from sluiceway.wire.estimate import estimate_input_tokens
from sluiceway.wire.messages_to_chat import anthropic_message

HI: list[Any] = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(("error", "status", "kind"), [
    (InvalidRequest("x"), 400, "invalid_request_error"),
    (AuthenticationFailed("x"), 401, "authentication_error"),
    (PermissionDenied("x"), 403, "permission_error"),
    (NotFound("x"), 404, "not_found_error"),
    (MethodNotAllowed("x"), 405, "invalid_request_error"),
    (RequestTimeout("x"), 408, "invalid_request_error"),
    (PayloadTooLarge("x"), 413, "request_too_large"),
    (RateLimited("x"), 429, "rate_limit_error"),
    (GatewayError("x"), 500, "api_error"),
    (UpstreamError("x"), 502, "api_error"),
    (UpstreamError("x", code="upstream_overloaded"), 529, "overloaded_error"),
    (ServiceUnavailable("x"), 529, "overloaded_error"),
    (ServiceUnavailable("x", code="server_shutdown"), 529, "overloaded_error"),
    (UpstreamTimeout("x"), 504, "timeout_error"),
])
def test_statuses_and_types_follow_anthropic(error: GatewayError, status: int, kind: str
                                             ) -> None:
    assert (error_status(error), error_type(error)) == (status, kind)


@pytest.mark.parametrize(("headers", "expected"), [
    ({"retry-after": "7", "retry-after-ms": "7000"},
     {"retry-after": "7", "retry-after-ms": "7000"}),
    ({"retry-after": "60"}, {"retry-after": "60"}),
    ({"retry-after": "120", "retry-after-ms": "120000"},
     {"retry-after": "60", "retry-after-ms": "60000", "x-should-retry": "false"}),
    ({"Retry-After": "600"}, {"retry-after": "60", "x-should-retry": "false"}),
    ({"retry-after-ms": "61000", "x-should-retry": "true"},
     {"retry-after-ms": "60000", "x-should-retry": "true"}),
    ({"retry-after": "Wed, 21 Oct 2037 07:28:00 GMT", "allow": "POST"}, {"allow": "POST"}),
    ({"retry-after": "inf"}, {}),
    ({}, {}),
])
def test_retry_after_is_capped_for_the_anthropic_sdk(
    headers: dict[str, str], expected: dict[str, str]
) -> None:
    assert error_headers(headers) == expected


def test_a_rate_limit_far_away_tells_the_sdk_not_to_retry() -> None:
    error = RateLimited("Slow down.", retry_after=3600)
    assert error_headers(error.headers) == {
        "retry-after": "60", "retry-after-ms": "60000", "x-should-retry": "false"}


def test_error_event_is_a_named_frame() -> None:
    frame = error_event(UpstreamError("gone", code="upstream_overloaded"))
    assert frame == (b'event: error\ndata: {"type":"error","error":'
                     b'{"type":"overloaded_error","message":"gone"}}\n\n')


@pytest.mark.parametrize(("body", "message"), [
    ([], "The request body must be a JSON object."),
    ({"model": "m", "messages": HI}, "max_tokens: Field required"),
    ({"max_tokens": 5, "messages": HI}, "model: Field required"),
    ({"model": "m", "max_tokens": 5, "messages": []},
     "messages: Expected `array` of length >= 1"),
    ({"model": "m", "max_tokens": 0, "messages": HI}, "max_tokens: Expected `int` >= 1"),
    ({"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]},
     "messages.0.role: Invalid enum value 'system'"),
    ({"model": "m", "max_tokens": 5, "messages": [{"role": "user"}]},
     "messages.0.content: Field required"),
    ({"model": "m", "max_tokens": 5, "messages": HI, "temperature": 1.5},
     "temperature: Expected `float` <= 1.0"),
    ({"model": "m", "max_tokens": 5, "messages": HI, "stream": "yes"},
     "stream: Expected `bool | null`, got `str`"),
    ({"model": "m", "max_tokens": 5, "messages": HI * 3}, "messages: too many messages: 3 "
                                                         "(at most 2)."),
])
def test_invalid_requests_are_named_as_anthropic_does(body: Any, message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_messages_request(body, max_messages=2)
    assert caught.value.message == message


def test_a_valid_request_keeps_the_clients_body() -> None:
    body = {"model": "m", "max_tokens": 5, "messages": HI, "stream": True,
            "container": "c-1", "tools": [{"type": "bash_20250124", "name": "bash"}]}
    request = parse_messages_request(body, request_id="req_1", beta="b1", version="2023-06-01")
    assert request.body is body and request.messages is body["messages"]
    assert (request.model, request.upstream_model, request.stream) == ("m", "m", True)
    assert (request.request_id, request.beta, request.version) == ("req_1", "b1", "2023-06-01")


def test_count_only_takes_no_max_tokens_and_never_streams() -> None:
    request = parse_messages_request({"model": "m", "messages": HI, "stream": True},
                                     count_only=True)
    assert request.stream is False


def test_chat_request_is_the_canonical_form() -> None:
    request = parse_messages_request({"model": "m", "max_tokens": 5, "messages": HI,
                                      "system": "Be brief.", "stream": True})
    request.upstream_model = "m-v2"
    chat = chat_request(request)
    assert chat.messages == [{"role": "system", "content": "Be brief."}, *HI]
    assert (chat.model, chat.upstream_model, chat.stream) == ("m", "m-v2", True)
    assert chat.body["stream_options"] == {"include_usage": True}
    assert chat.max_tokens == 5


def test_the_estimate_counts_text_tools_and_attachments() -> None:
    small = estimate_input_tokens({"messages": HI})
    assert small == 1 + 3
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": "A" * 100_000}}
    body = {
        "system": [{"type": "text", "text": "s" * 40}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "t" * 40}, image]},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "h" * 40},
                                              {"type": "tool_use", "name": "f", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "x",
                                          "content": [{"type": "text", "text": "r" * 40}]}]},
        ],
        "tools": [{"name": "f", "input_schema": {"type": "object"}}],
    }
    tools = len('[{"name":"f","input_schema":{"type":"object"}}]')
    chars = 40 * 4 + len("f") + len("{}") + tools
    assert estimate_input_tokens(body) == -(-chars // 4) + 3 * 3 + 1600


def _chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": "c", "model": "m", "choices": [{"index": 0, "delta": delta,
                                                  "finish_reason": finish, **extra}]}


def test_a_named_stop_sequence_is_stop_sequence_streamed_and_whole() -> None:
    stream = AnthropicEventStream(model="m")
    stream.feed(_chunk({"content": "Hello"}))
    stream.feed(_chunk({}, "stop", stop_reason="END"))
    delta = stream.finish()[-2][1]["delta"]
    assert delta == {"stop_reason": "stop_sequence", "stop_sequence": "END"}
    whole = anthropic_message({"choices": [{"index": 0, "finish_reason": "stop",
                                            "stop_reason": "END",
                                            "message": {"role": "assistant", "content": "Hi"}}]})
    assert (whole["stop_reason"], whole["stop_sequence"]) == ("stop_sequence", "END")


@pytest.mark.parametrize("stop_reason", [None, 151643, ""])
def test_without_a_named_sequence_stop_is_end_turn(stop_reason: Any) -> None:
    stream = AnthropicEventStream(model="m")
    stream.feed(_chunk({"content": "Hello"}))
    stream.feed(_chunk({}, "stop", stop_reason=stop_reason))
    assert stream.finish()[-2][1]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
