"""The provider conformance suite (``sluiceway.testing.conformance``) on the openai
provider, against FakeOpenAI."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from sluiceway.testing.conformance import HttpProviderConformance
from sluiceway.testing.fakes import FakeOpenAI


class TestOpenAIConformance(HttpProviderConformance):
    plugins = ("openai",)
    model = "gpt-x"

    @pytest.fixture
    def upstream_url(self, fake_openai: Callable[..., FakeOpenAI]) -> str:
        return fake_openai(chunks=4).url.removesuffix("/v1")

    def provider_table(self, url: str) -> dict[str, Any]:
        return {"type": "openai", "base_url": url + "/v1", "api_key": "sk-conformance",
                "models": [{"name": self.model, "upstream": "real-model"}]}
