"""The ``[[providers]]`` table of an ``azure`` provider."""

from __future__ import annotations

from typing import Annotated

import msgspec

from sluiceway.api import Duration, HttpOptions, Secret

__all__ = ["AzureOptions", "EntraOptions"]


class EntraOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A Microsoft Entra ID application (client credentials) whose tokens the
    gateway fetches and renews: ``tenant_id``, ``client_id``, ``client_secret``
    (``"env:VAR"``). ``authority`` and ``scope`` are the public cloud's unless
    given (sovereign clouds differ). A token is renewed ``refresh_before`` its
    expiry, or at 90 % of its life if that is sooner."""

    tenant_id: str
    client_id: str
    client_secret: Secret
    authority: str = "https://login.microsoftonline.com"
    scope: str = "https://cognitiveservices.azure.com/.default"
    refresh_before: Duration = Duration(300)


class AzureOptions(HttpOptions, forbid_unknown_fields=True, kw_only=True):
    """Options of one Azure OpenAI resource.

    ``endpoint`` is the resource's address (``https://NAME.openai.azure.com``);
    each model's ``upstream`` is a *deployment* name. Requests go to
    ``{endpoint}/openai/deployments/{deployment}/chat/completions?api-version=...``
    (and ``/embeddings``); with ``api_version = "v1"``, to the v1 API instead
    (``{endpoint}/openai/v1/chat/completions``, the deployment in ``model``).

    Credentials, one of: ``api_key`` / ``api_keys`` (sent as ``api-key``),
    ``entra_token`` (a Microsoft Entra bearer token you renew yourself), or
    ``entra`` (an application whose tokens the gateway fetches and renews).
    ``responses_api`` sends ``/v1/responses`` to the resource's own Responses
    API (``{endpoint}/openai/responses``, or ``/openai/v1/responses``).
    """

    endpoint: str
    api_version: Annotated[str, msgspec.Meta(min_length=1)] = "2024-10-21"
    entra_token: Secret | None = None
    entra: EntraOptions | None = None
    responses_api: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        given = [name for name, value in (
            ("api_key/api_keys", self.api_key or self.api_keys), ("entra_token", self.entra_token),
            ("entra", self.entra)) if value is not None]
        if len(given) != 1:
            raise ValueError("give one of api_key (or api_keys), entra_token and entra"
                             + (f", not {' and '.join(given)}" if given else ""))
