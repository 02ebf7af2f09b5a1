"""The ``[[providers]]`` table of an ``openai`` provider."""

from __future__ import annotations

from urllib.parse import urlsplit

from sluiceway.api import HttpOptions, KeyOptions

__all__ = ["KeyOptions", "OpenAIOptions"]


class OpenAIOptions(HttpOptions, forbid_unknown_fields=True, kw_only=True):
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
    ``responses_api`` says whether ``/v1/responses`` goes to the upstream's own
    Responses API (``{base_url}/responses``) or is translated to chat completions.
    """

    base_url: str
    # Serve /v1/responses by the upstream's own Responses API ({base_url}/responses),
    # so previous_response_id, reasoning items and built-in tools work, instead of
    # translating to chat completions. None: on for api.openai.com only, as most
    # OpenAI-compatible servers have no Responses API.
    responses_api: bool | None = None

    def serves_responses(self) -> bool:
        """Whether the upstream is taken to serve the Responses API."""
        if self.responses_api is not None:
            return self.responses_api
        return urlsplit(self.base_url).hostname == "api.openai.com"
