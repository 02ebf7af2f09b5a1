"""sluiceway provider for OpenAI and OpenAI-compatible upstreams.

Enable it in plugins.toml and point a provider at the upstream::

    [gateway]
    plugins = ["openai"]

    [[providers]]
    name = "openai"
    type = "openai"
    base_url = "https://api.openai.com/v1"
    api_key = "env:OPENAI_API_KEY"
    models = [{ name = "gpt-4o-mini" }, { name = "fast", upstream = "gpt-4o-mini" }]

Several keys, picked by weight per request, instead of ``api_key``::

    api_keys = [
        { key = "env:OPENAI_KEY_1", weight = 2, name = "primary" },
        { key = "env:OPENAI_KEY_2", models = ["gpt-4o*"], name = "gpt4o-only" },
    ]

``/v1/responses`` goes to the upstream's own Responses API when ``responses_api``
is true (the default for api.openai.com), and is translated to chat completions
otherwise.
"""

from __future__ import annotations

from collections.abc import Callable

from sluiceway.api import ProviderContext, ProviderType, hookimpl

from .config import KeyOptions, OpenAIOptions
from .errors import UpstreamAuthError, UpstreamHTTPError, UpstreamStatusError
from .provider import OpenAIProvider
from .responses import OpenAIResponsesProvider

__all__ = [
    "KeyOptions",
    "OpenAIOptions",
    "OpenAIProvider",
    "OpenAIResponsesProvider",
    "UpstreamAuthError",
    "UpstreamHTTPError",
    "UpstreamStatusError",
    "register_provider_types",
]


def _create(ctx: ProviderContext) -> OpenAIProvider:
    options: OpenAIOptions = ctx.options
    return OpenAIResponsesProvider(ctx) if options.serves_responses() else OpenAIProvider(ctx)


@hookimpl
def register_provider_types(register: Callable[[ProviderType], None]) -> None:
    register(ProviderType(
        name="openai",
        factory=_create,
        config_model=OpenAIOptions,
        description="OpenAI and OpenAI-compatible chat-completions upstreams (pass-through).",
    ))
