"""The ``[[providers]]`` table of an ``anthropic`` provider."""

from __future__ import annotations

from typing import Annotated

import msgspec

from sluiceway.api import HttpOptions

__all__ = ["AnthropicOptions"]


class AnthropicOptions(HttpOptions, forbid_unknown_fields=True, kw_only=True):
    """Options of one Anthropic Messages API upstream.

    ``base_url`` is the API root without the version: requests go to
    ``{base_url}/v1/messages``. ``api_key`` is written ``"env:VAR"`` and sent as
    ``x-api-key``. ``default_max_tokens`` is used when the client sets no
    ``max_tokens`` (Anthropic requires one). ``read_timeout`` bounds each wait
    for bytes (the first token, and each gap between events), not the whole answer.
    """

    base_url: str = "https://api.anthropic.com"
    anthropic_version: str = "2023-06-01"
    default_max_tokens: Annotated[int, msgspec.Meta(ge=1)] = 4096
