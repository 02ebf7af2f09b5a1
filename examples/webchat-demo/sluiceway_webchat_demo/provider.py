"""The provider for the demo site: the template for a provider of a real site.

The login needs no code: the provider table's ``login`` sub-table describes the
form (see README.md), and :class:`~sluiceway_webchat.WebChatProvider` fills it
in a fresh browser context, keeps the ``sid`` cookie and the ``access_token``
from localStorage, and has the core seal and keep them. What a site-specific
provider writes is the chat call: the site's request shape, and its answer,
whole or streamed, mapped to OpenAI objects.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
from sluiceway_webchat import ChunkMaker, WebChatProvider, text_completion

from sluiceway import ChatRequest, ModelEntry, UpstreamError
from sluiceway.api import Session

__all__ = ["DemoChatProvider"]

_decode = msgspec.json.Decoder().decode


def _site_messages(request: ChatRequest) -> list[dict[str, str]]:
    """The site takes plain role/text pairs: content parts are joined as text."""
    messages = []
    for message in request.messages:
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        messages.append({"role": str(message.get("role")), "content": str(content or "")})
    return messages


class DemoChatProvider(WebChatProvider):
    """``type = "webchat-demo"``: chat through the demo site's ``/api/chat``."""

    default_models = (ModelEntry(name="demo-chat"),)

    async def answer(self, session: Session, request: ChatRequest) -> dict[str, Any]:
        # post() raises SessionRejected on 401/403: the base class logs in again
        # and calls this method once more.
        response = await self.post(
            session, "/api/chat", {"messages": _site_messages(request), "stream": False}
        )
        try:
            data = _decode(await response.read())
        except msgspec.DecodeError as exc:
            raise UpstreamError(f"Provider {self.name!r} sent something that is not JSON.",
                                code="upstream_invalid_response") from exc
        finally:
            await response.aclose()
        tokens = data.get("tokens", {})
        return text_completion(request, str(data["reply"]),
                               prompt_tokens=tokens.get("in"), completion_tokens=tokens.get("out"))

    async def stream_answer(
        self, session: Session, request: ChatRequest
    ) -> AsyncIterator[dict[str, Any]]:
        response = await self.post(
            session, "/api/chat", {"messages": _site_messages(request), "stream": True}
        )
        chunks = ChunkMaker(request)
        try:
            yield chunks.first()
            pending = b""
            finished = False
            async for data in response.aiter_bytes():
                pending += data
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if not line.strip():
                        continue
                    event = _decode(line)
                    if event.get("type") == "delta":
                        yield chunks.text(str(event["text"]))
                    elif event.get("type") == "done":
                        finished = True
                        yield chunks.finish("stop")
                        tokens = event.get("tokens", {})
                        yield chunks.usage(int(tokens.get("in", 0)), int(tokens.get("out", 0)))
            if not finished:
                # Never a silent cut: the OpenAI SDK would take it for a whole answer.
                raise UpstreamError(f"Provider {self.name!r} ended its answer early.",
                                    code="upstream_incomplete")
        finally:
            await response.aclose()
