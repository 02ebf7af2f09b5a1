"""The provider conformance suite on the bedrock provider, against FakeBedrock
(every request still SigV4-checked, through the suite's proxy)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from sluiceway_bedrock.testing import FakeBedrock

from sluiceway.testing.conformance import HttpProviderConformance


class TestBedrockConformance(HttpProviderConformance):
    plugins = ("bedrock",)
    model = "claude"

    @pytest.fixture
    def upstream_url(self, serve_asgi: Callable[..., Any]) -> str:
        return str(serve_asgi(FakeBedrock(access_key_id="AKIDCONF", secret_access_key="s",
                                          region="us-west-2")).url)

    def provider_table(self, url: str) -> dict[str, Any]:
        return {"type": "bedrock", "base_url": url, "region": "us-west-2",
                "access_key_id": "AKIDCONF", "secret_access_key": "s",
                "models": [{"name": self.model,
                            "upstream": "anthropic.claude-3-5-haiku-20241022-v1:0"}]}

    def error_body(self, status: int) -> bytes:
        return json.dumps({"message": f"Conformance error {status}."}).encode()
