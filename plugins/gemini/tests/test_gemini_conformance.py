"""The provider conformance suite on the gemini provider, against FakeGemini."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from sluiceway_gemini.testing import FakeGemini

from sluiceway.testing.conformance import HttpProviderConformance


class TestGeminiConformance(HttpProviderConformance):
    plugins = ("gemini",)
    model = "gemini-2.5-flash"

    @pytest.fixture
    def upstream_url(self, serve_asgi: Callable[..., Any]) -> str:
        return str(serve_asgi(FakeGemini(key="gemini-key")).url)

    def provider_table(self, url: str) -> dict[str, Any]:
        return {"type": "gemini", "base_url": url, "api_key": "gemini-key",
                "models": [self.model]}

    def error_body(self, status: int) -> bytes:
        return json.dumps({"error": {"code": status, "message": f"Conformance {status}.",
                                     "status": "UNAVAILABLE"}}).encode()
