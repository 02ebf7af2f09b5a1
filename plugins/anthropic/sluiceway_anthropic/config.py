"""The ``[[providers]]`` table of an ``anthropic`` provider."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from sluiceway import Duration, Secret
from sluiceway.keys import KeyOptions, check_key_options

__all__ = ["AnthropicOptions"]


class AnthropicOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Options of one Anthropic Messages API upstream.

    ``base_url`` is the API root without the version: requests go to
    ``{base_url}/v1/messages``. ``api_key`` is written ``"env:VAR"`` and sent as
    ``x-api-key``. ``default_max_tokens`` is used when the client sets no
    ``max_tokens`` (Anthropic requires one). ``read_timeout`` bounds each wait
    for bytes (the first token, and each gap between events), not the whole answer.
    """

    base_url: str = "https://api.anthropic.com"
    api_key: Secret | None = None
    # Several weighted keys instead of api_key; a refused or rate-limited key rests.
    api_keys: Annotated[list[KeyOptions], msgspec.Meta(min_length=1)] | None = None
    key_cooldown: Duration = Duration(60)
    anthropic_version: str = "2023-06-01"
    default_max_tokens: Annotated[int, msgspec.Meta(ge=1)] = 4096
    # None: as many as the provider's `concurrency`, so requests never queue in the client.
    max_connections: Annotated[int, msgspec.Meta(ge=1)] | None = None
    connect_timeout: Duration = Duration(5)
    read_timeout: Duration = Duration(60)
    pool_timeout: Duration = Duration(5)
    backend: Literal["aiohttp", "httpx2"] = "aiohttp"

    def __post_init__(self) -> None:
        check_key_options(self.api_key, self.api_keys)
