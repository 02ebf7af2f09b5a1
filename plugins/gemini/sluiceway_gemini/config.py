"""The ``[[providers]]`` table of a ``gemini`` provider."""

from __future__ import annotations

from sluiceway.api import HttpOptions

__all__ = ["GeminiOptions"]


class GeminiOptions(HttpOptions, forbid_unknown_fields=True, kw_only=True):
    """Options of one Gemini API upstream.

    ``base_url`` is the API root without the version; requests go to
    ``{base_url}/{api_version}/models/{model}:generateContent`` (and
    ``:streamGenerateContent?alt=sse``, ``:countTokens``,
    ``:batchEmbedContents``). ``api_key`` is written ``"env:VAR"`` and sent as
    ``x-goog-api-key``.
    """

    base_url: str = "https://generativelanguage.googleapis.com"
    api_version: str = "v1beta"
