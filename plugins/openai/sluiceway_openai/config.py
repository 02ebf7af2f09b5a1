"""The ``[[providers]]`` table of an ``openai`` provider."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from sluiceway import Duration, Secret
from sluiceway.keys import KeyOptions, check_key_options

__all__ = ["KeyOptions", "OpenAIOptions"]


class OpenAIOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Options of one OpenAI-compatible upstream.

    ``base_url`` is the API root including its version, e.g.
    ``"https://api.openai.com/v1"``; requests go to ``{base_url}/chat/completions``.
    ``api_key`` is written ``"env:VAR"``; it is sent as ``Authorization: Bearer``.
    ``api_keys`` instead lists several keys (see :class:`KeyOptions`), one picked
    by weight per request; a key the upstream refuses (401/403) or rate-limits
    (429) rests for ``key_cooldown`` (429: for its Retry-After) while the others
    carry on. ``read_timeout`` bounds each wait for bytes (the first token, and
    each gap between chunks), not the whole answer. ``pool_timeout`` bounds the
    wait for a free connection when all ``max_connections`` are busy.
    """

    base_url: str
    api_key: Secret | None = None
    api_keys: Annotated[list[KeyOptions], msgspec.Meta(min_length=1)] | None = None
    key_cooldown: Duration = Duration(60)
    # None: as many as the provider's `concurrency`, so requests never queue in the client.
    max_connections: Annotated[int, msgspec.Meta(ge=1)] | None = None
    connect_timeout: Duration = Duration(5)
    read_timeout: Duration = Duration(60)
    pool_timeout: Duration = Duration(5)
    backend: Literal["aiohttp", "httpx2"] = "aiohttp"

    def __post_init__(self) -> None:
        check_key_options(self.api_key, self.api_keys)
