"""sluiceway provider for the Google Gemini API.

Enable it in plugins.toml::

    [gateway]
    plugins = ["gemini"]

    [[providers]]
    name = "gemini"
    type = "gemini"
    api_key = "env:GEMINI_API_KEY"
    models = ["gemini-2.5-flash", { name = "embed", upstream = "gemini-embedding-001" }]

OpenAI (and, through the gateway's translation, Anthropic) clients speak to it
as to any model: requests become ``generateContent`` bodies and answers come
back as chat completions (see :mod:`sluiceway_gemini.request` and
:mod:`sluiceway_gemini.response` for the rules).
"""

from __future__ import annotations

from collections.abc import Callable

from sluiceway.api import ProviderContext, ProviderType, hookimpl

from .config import GeminiOptions
from .provider import GeminiProvider
from .request import gemini_request
from .response import completion, error_from_response

__all__ = [
    "GeminiOptions",
    "GeminiProvider",
    "completion",
    "error_from_response",
    "gemini_request",
    "register_provider_types",
]


def _create(ctx: ProviderContext) -> GeminiProvider:
    return GeminiProvider(ctx)


@hookimpl
def register_provider_types(register: Callable[[ProviderType], None]) -> None:
    register(ProviderType(
        name="gemini",
        factory=_create,
        config_model=GeminiOptions,
        description="Google Gemini API (generateContent, streaming, tools, embeddings).",
    ))
