"""Azure OpenAI: the OpenAI API at deployment URLs, with an ``api-version``.

The wire format is OpenAI's, so the ``openai`` provider does the work (pass-through
bodies and stream chunks, error mapping, weighted keys); this one places each
request at its deployment and carries Azure's credentials.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING
from urllib.parse import quote

import msgspec
from sluiceway_openai import OpenAIProvider, OpenAIResponsesProvider

from .entra import EntraTokens

if TYPE_CHECKING:
    from sluiceway.api import ProviderContext

    from .config import AzureOptions

__all__ = ["AzureProvider", "AzureResponsesProvider"]


def _api_key(secret: str) -> dict[str, str]:
    return {"api-key": secret}


def _bearer(secret: str) -> dict[str, str]:
    return {"authorization": "Bearer " + secret}


class AzureProvider(OpenAIProvider):
    """One ``[[providers]]`` table of type ``azure``."""

    def __init__(self, ctx: ProviderContext) -> None:
        options: AzureOptions = ctx.options
        endpoint = options.endpoint.rstrip("/")
        self._v1 = options.api_version == "v1"
        credential = _api_key
        if options.entra_token is not None:
            # A static Entra token is carried like a key, by the same machinery (the
            # context's clients list is shared, so the gateway still closes them).
            ctx = dataclasses.replace(ctx, options=msgspec.structs.replace(
                options, api_key=options.entra_token, entra_token=None))
            credential = _bearer
        super().__init__(
            ctx, base_url=f"{endpoint}/openai/v1" if self._v1 else f"{endpoint}/openai",
            credential=credential,
            query=None if self._v1 else {"api-version": options.api_version},
        )
        if options.entra is not None:
            tokens = EntraTokens(ctx.name, options.entra, ctx.http_client())
            self.tokens: EntraTokens | None = tokens
            self.auth_headers = tokens.headers
        else:
            self.tokens = None

    def url(self, path: str, model: str) -> str:
        if self._v1 or path == "responses":
            return f"{self._base}/{path}"
        return f"{self._base}/deployments/{quote(model, safe='')}/{path}"


class AzureResponsesProvider(AzureProvider, OpenAIResponsesProvider):
    """An ``azure`` provider with ``responses_api`` on: ``/v1/responses`` goes to the
    resource's own Responses API (the deployment named in ``model``)."""
