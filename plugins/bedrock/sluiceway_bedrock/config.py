"""The ``[[providers]]`` table of a ``bedrock`` provider."""

from __future__ import annotations

import os
from typing import Any

import msgspec

from sluiceway.api import HttpOptions, Secret

__all__ = ["AwsCredentials", "BedrockOptions"]


class AwsCredentials(msgspec.Struct, frozen=True):
    """An access key (and, for temporary credentials, its session token)."""

    access_key_id: str
    secret_access_key: str
    session_token: str | None = None


class BedrockOptions(HttpOptions, forbid_unknown_fields=True, kw_only=True):
    """Options of one AWS Bedrock runtime endpoint.

    ``region`` defaults to ``AWS_REGION`` (then ``AWS_DEFAULT_REGION``); requests
    go to ``https://bedrock-runtime.{region}.amazonaws.com/model/{model}/converse``
    (``base_url`` overrides the host, for a VPC endpoint). Requests are signed
    with SigV4 using ``access_key_id`` / ``secret_access_key`` / ``session_token``
    (``"env:VAR"``), by default ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``
    and ``AWS_SESSION_TOKEN``, read once at startup. A Bedrock API key
    (``api_key``, sent as a bearer token) replaces signing.
    ``additional_model_request_fields`` goes with every request, as Converse's
    ``additionalModelRequestFields`` (a model's own parameters, such as ``top_k``).
    """

    region: str | None = None
    base_url: str | None = None
    access_key_id: Secret | None = None
    secret_access_key: Secret | None = None
    session_token: Secret | None = None
    additional_model_request_fields: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.resolved_region() is None:
            raise ValueError("no region: set region, or AWS_REGION / AWS_DEFAULT_REGION")
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("give access_key_id and secret_access_key together")
        # A request is signed for its exact URL: parameters added after would break it.
        if self.query or any(key.query for key in self.api_keys or ()):
            raise ValueError("query is not supported: Bedrock's requests are signed")

    def resolved_region(self) -> str | None:
        return self.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")

    def endpoint(self) -> str:
        region = self.resolved_region()
        return (self.base_url or f"https://bedrock-runtime.{region}.amazonaws.com").rstrip("/")

    def credentials(self) -> AwsCredentials | None:
        """The access key to sign with: the table's, else the environment's (``None``
        when neither gives one)."""
        if self.access_key_id is not None and self.secret_access_key is not None:
            token = self.session_token.reveal() if self.session_token is not None else None
            return AwsCredentials(self.access_key_id.reveal(), self.secret_access_key.reveal(),
                                  token)
        key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
        if not key or not secret:
            return None
        return AwsCredentials(key, secret, os.environ.get("AWS_SESSION_TOKEN") or None)
