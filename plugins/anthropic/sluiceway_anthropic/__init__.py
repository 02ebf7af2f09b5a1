"""sluiceway provider for the Anthropic Messages API.

Clients keep speaking OpenAI chat completions; this provider translates each
request to Anthropic Messages and each answer (streamed or not) back. Enable it
in plugins.toml::

    [gateway]
    plugins = ["anthropic"]

    [[providers]]
    name = "claude"
    type = "anthropic"
    api_key = "env:ANTHROPIC_API_KEY"
    models = [{ name = "claude", upstream = "claude-sonnet-4-5" }]
"""

from __future__ import annotations

from collections.abc import Callable

from sluiceway.api import ProviderContext, ProviderType, hookimpl

from .config import AnthropicOptions
from .errors import AnthropicStatusError
from .provider import AnthropicProvider

__all__ = [
    "AnthropicOptions",
    "AnthropicProvider",
    "AnthropicStatusError",
    "register_provider_types",
]


def _create(ctx: ProviderContext) -> AnthropicProvider:
    return AnthropicProvider(ctx)


@hookimpl
def register_provider_types(register: Callable[[ProviderType], None]) -> None:
    register(ProviderType(
        name="anthropic",
        factory=_create,
        config_model=AnthropicOptions,
        description="Anthropic Messages API (OpenAI chat completions translated both ways).",
    ))
