"""The provider conformance suite on the azure provider, against FakeOpenAI at
Azure's deployment paths."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from sluiceway.testing.conformance import HttpProviderConformance
from sluiceway.testing.fakes import FakeOpenAI


class TestAzureConformance(HttpProviderConformance):
    plugins = ("azure",)
    model = "gpt-4o"

    @pytest.fixture
    def upstream_url(self, fake_openai: Callable[..., FakeOpenAI]) -> str:
        return fake_openai(chunks=4).url.removesuffix("/v1")

    def provider_table(self, url: str) -> dict[str, Any]:
        return {"type": "azure", "endpoint": url, "api_key": "azure-key",
                "models": [{"name": self.model, "upstream": "my-deployment"}]}
