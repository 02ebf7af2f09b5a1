"""sluiceway provider for AWS Bedrock's Converse API.

Enable it in plugins.toml; credentials come from the usual AWS environment
variables unless the table gives them::

    [gateway]
    plugins = ["bedrock"]

    [[providers]]
    name = "bedrock"
    type = "bedrock"
    region = "us-east-1"
    models = [{ name = "claude-sonnet", upstream = "us.anthropic.claude-sonnet-4-20250514-v1:0" }]
"""

from __future__ import annotations

from collections.abc import Callable

from sluiceway.api import ProviderContext, ProviderType, hookimpl

from .config import AwsCredentials, BedrockOptions
from .converse import converse_request, openai_completion
from .errors import error_from_response
from .provider import BedrockProvider

__all__ = [
    "AwsCredentials",
    "BedrockOptions",
    "BedrockProvider",
    "converse_request",
    "error_from_response",
    "openai_completion",
    "register_provider_types",
]


def _create(ctx: ProviderContext) -> BedrockProvider:
    return BedrockProvider(ctx)


@hookimpl
def register_provider_types(register: Callable[[ProviderType], None]) -> None:
    register(ProviderType(
        name="bedrock",
        factory=_create,
        config_model=BedrockOptions,
        description="AWS Bedrock Converse and ConverseStream (SigV4 or a Bedrock API key).",
    ))
