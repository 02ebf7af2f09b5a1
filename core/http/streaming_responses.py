"""Relaying a streamed answer as the Responses API's server-sent events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec

from ..errors import GatewayError
from ..wire.responses_stream import Event, ResponsesEventStream
from ..wire.sse import event_frame
from ..wire.usage import Usage
from .streaming import SSE_HEADERS, DisconnectWatch, Finish, first_token, stream_failed

if TYPE_CHECKING:
    from ..calls import ModelCall
    from ..components import Send

__all__ = ["relay_responses_stream"]

_encode = msgspec.json.Encoder().encode
Header = tuple[bytes, bytes]
StreamOpener = Callable[[], Awaitable[tuple[Any, AsyncIterator[Any], list[Header]]]]


def _frames(events: list[Event]) -> bytes:
    return b"".join(event_frame(name, _encode(data)) for name, data in events)


async def relay_responses_stream(
    call: ModelCall, send: Send, open_stream: StreamOpener, finish: Finish,
    body: dict[str, Any],
) -> None:
    """Open a stream (its first chunk, the rest, and response headers) and send it
    as Responses events; ``finish()`` (the call's settlement) runs just before the
    last frame, ``response.completed``. The client's hang-up is watched from the
    start, so it also cancels the wait for the first chunk."""
    watcher = DisconnectWatch(call.context)
    translator = ResponsesEventStream(body)
    committed = False
    chunks: AsyncIterator[Any] | None = None

    def render(chunk: Any) -> bytes:
        events = translator.feed(chunk)
        if translator.usage is not None:
            call.usage = Usage.from_openai(translator.usage)
        return _frames(events)

    def error_frame(error: GatewayError) -> bytes:
        return _frames([translator.error(error.code, error.message, error.param)])

    try:
        first, chunks, headers = await open_stream()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [*SSE_HEADERS, *headers]})
        committed = True
        await send({"type": "http.response.body",
                    "body": _frames(translator.start()) + render(first), "more_body": True})
        first_token(call)
        async for chunk in chunks:
            frames = render(chunk)
            if frames:
                await send({"type": "http.response.body", "body": frames, "more_body": True})
        tail = _frames(translator.finish())
        await finish()
        await send({"type": "http.response.body", "body": tail, "more_body": False})
    except (asyncio.CancelledError, Exception) as exc:
        await stream_failed(call, send, exc, committed=committed, finish=finish,
                            frame=error_frame)
    finally:
        watcher.stop()
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
