"""The provider conformance suite on the anthropic provider, against FakeAnthropic."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from sluiceway_anthropic.testing import FakeAnthropic

from sluiceway.testing.conformance import HttpProviderConformance


class TestAnthropicConformance(HttpProviderConformance):
    plugins = ("anthropic",)
    model = "claude-x"
    prompt = "hi"

    @pytest.fixture
    def upstream_url(self, serve_asgi: Callable[..., Any]) -> str:
        return str(serve_asgi(FakeAnthropic()).url)

    def provider_table(self, url: str) -> dict[str, Any]:
        return {"type": "anthropic", "base_url": url, "api_key": "sk-ant-conformance",
                "models": [{"name": self.model, "upstream": "claude-sonnet-4"}]}

    def error_body(self, status: int) -> bytes:
        return json.dumps({"type": "error", "error": {
            "type": "api_error", "message": f"Conformance error {status}."}}).encode()
