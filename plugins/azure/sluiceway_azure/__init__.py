"""sluiceway provider for Azure OpenAI.

Enable it in plugins.toml; each model's ``upstream`` is a deployment name::

    [gateway]
    plugins = ["azure"]

    [[providers]]
    name = "azure"
    type = "azure"
    endpoint = "https://my-resource.openai.azure.com"
    api_version = "2024-10-21"
    api_key = "env:AZURE_OPENAI_API_KEY"
    models = [{ name = "gpt-4o", upstream = "my-gpt4o-deployment" }]

Instead of a key, a Microsoft Entra application whose tokens the gateway fetches
and renews::

    entra = { tenant_id = "...", client_id = "...", client_secret = "env:AZURE_CLIENT_SECRET" }
"""

from __future__ import annotations

from collections.abc import Callable

from sluiceway.api import ProviderContext, ProviderType, hookimpl

from .config import AzureOptions, EntraOptions
from .entra import EntraTokenError, EntraTokens
from .provider import AzureProvider, AzureResponsesProvider

__all__ = [
    "AzureOptions",
    "AzureProvider",
    "AzureResponsesProvider",
    "EntraOptions",
    "EntraTokenError",
    "EntraTokens",
    "register_provider_types",
]


def _create(ctx: ProviderContext) -> AzureProvider:
    options: AzureOptions = ctx.options
    return AzureResponsesProvider(ctx) if options.responses_api else AzureProvider(ctx)


@hookimpl
def register_provider_types(register: Callable[[ProviderType], None]) -> None:
    register(ProviderType(
        name="azure",
        factory=_create,
        config_model=AzureOptions,
        description="Azure OpenAI deployments (api-version, API keys or Microsoft Entra).",
    ))
