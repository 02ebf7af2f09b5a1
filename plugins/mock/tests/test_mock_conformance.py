"""The provider conformance suite on the mock provider (no upstream: the part for
HTTP providers does not apply)."""

from __future__ import annotations

from typing import Any

from sluiceway.testing.conformance import ProviderConformance


class TestMockConformance(ProviderConformance):
    plugins = ("mock",)
    model = "mock-gpt"

    def provider_table(self, url: str) -> dict[str, Any]:
        # Slow tokens: a hang-up lands mid-stream.
        return {"type": "mock", "models": [self.model], "token_delay": "30ms"}
