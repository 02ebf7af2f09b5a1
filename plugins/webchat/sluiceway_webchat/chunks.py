"""Building OpenAI objects from a site's own answers: what a subclass's ``answer``
and ``stream_answer`` return.

A site answers in its own shape (a JSON reply, lines of deltas, HTML...); these
helpers make the OpenAI ``chat.completion`` and ``chat.completion.chunk`` objects
the core frames for clients, so a subclass only maps text and usage.
"""

from __future__ import annotations

import time
from typing import Any

from sluiceway.api import ChatRequest, chunk_object, completion_id, completion_object, usage_object

__all__ = ["ChunkMaker", "text_completion"]


def _usage(prompt_tokens: int | None, completion_tokens: int | None) -> dict[str, Any] | None:
    if prompt_tokens is None or completion_tokens is None:
        return None
    return usage_object(prompt_tokens, completion_tokens)


def text_completion(
    request: ChatRequest, text: str, *, finish_reason: str = "stop",
    prompt_tokens: int | None = None, completion_tokens: int | None = None,
) -> dict[str, Any]:
    """A ``chat.completion`` whose one choice says ``text``."""
    return completion_object(
        id=completion_id(), model=request.upstream_model,
        choices=[{"index": 0, "finish_reason": finish_reason,
                  "message": {"role": "assistant", "content": text}}],
        usage=_usage(prompt_tokens, completion_tokens),
    )


class ChunkMaker:
    """The chunks of one streamed answer, sharing an id and a creation time:
    ``first()`` (the role), ``text(delta)`` per piece, ``finish(reason)``, then
    ``usage(prompt, completion)`` when the site says how much it used."""

    def __init__(self, request: ChatRequest) -> None:
        self.id = completion_id()
        self.model = request.upstream_model
        self.created = int(time.time())

    def _chunk(self, choices: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
        return chunk_object(id=self.id, model=self.model, created=self.created,
                            choices=choices, **fields)

    def first(self) -> dict[str, Any]:
        return self._chunk([{"index": 0, "delta": {"role": "assistant", "content": ""},
                             "finish_reason": None}])

    def text(self, delta: str) -> dict[str, Any]:
        return self._chunk([{"index": 0, "delta": {"content": delta}, "finish_reason": None}])

    def finish(self, reason: str = "stop") -> dict[str, Any]:
        return self._chunk([{"index": 0, "delta": {}, "finish_reason": reason}])

    def usage(self, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
        return self._chunk([], usage=usage_object(prompt_tokens, completion_tokens))
