"""The ``[[providers]]`` table of an ``openai`` provider."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from sluiceway import Duration, Secret

__all__ = ["OpenAIOptions"]


class OpenAIOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Options of one OpenAI-compatible upstream.

    ``base_url`` is the API root including its version, e.g.
    ``"https://api.openai.com/v1"``; requests go to ``{base_url}/chat/completions``.
    ``api_key`` is written ``"env:VAR"``; it is sent as ``Authorization: Bearer``.
    ``read_timeout`` bounds each wait for bytes (the first token, and each gap
    between chunks), not the whole answer.
    """

    base_url: str
    api_key: Secret | None = None
    max_connections: Annotated[int, msgspec.Meta(ge=1)] = 100
    connect_timeout: Duration = Duration(5)
    read_timeout: Duration = Duration(60)
    backend: Literal["aiohttp", "httpx2"] = "aiohttp"
