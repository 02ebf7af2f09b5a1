"""sluiceway's embedded mock provider: a model simulator to develop and load-test against.

Registers the provider type ``mock``. It answers in the exact OpenAI shapes,
deterministically (same seed, model, messages and request ``seed``: same
answer), with exact usage under its own public tokenizer
(:func:`sluiceway_mock.text.count_tokens`), tool calls whose arguments match the
tool's schema, JSON that matches a ``response_format`` schema, reasoning text
for reasoning models, simulated latency, and faults injected by rate or on
request. See the plugin's README for every option.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

import msgspec

from sluiceway.api import Duration, ProviderContext, ProviderType, hookimpl

from .provider import MockProvider

__all__ = ["MockOptions", "MockProvider", "register_provider_types"]

_Rate = Annotated[float, msgspec.Meta(ge=0, le=1)]
_Count = Annotated[int, msgspec.Meta(ge=0)]


class MockOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The keys of a ``[[providers]]`` table of type ``mock`` (besides name, type, models).

    Rates are fractions of requests in ``[0, 1]``; constraints live in the field
    types rather than ``__post_init__`` so that a bad value is reported at its
    own key (``providers[0].error_rate``), not at the table.
    """

    # Latency: before the first token, then between streamed tokens.
    ttft: Duration = Duration(0)
    token_delay: Duration = Duration(0)
    # Seeds both the text and the fault draws.
    seed: int = 0
    # Natural answer length (and reasoning length, for reasoning models), in tokens.
    response_tokens: _Count = 24
    # Models (public name or upstream id) that think aloud in ``reasoning_content``.
    reasoning_models: list[str] = msgspec.field(default_factory=list)
    # Fails before any output with 502 upstream_error.
    error_rate: _Rate = 0.0
    # Refused with 429 and Retry-After: rate_limit_retry_after.
    rate_limit_rate: _Rate = 0.0
    rate_limit_retry_after: Duration = Duration(1)
    # Waits ``stall`` longer before the first token (to exercise timeouts).
    stall_rate: _Rate = 0.0
    stall: Duration = Duration(30)
    # A stream fails halfway through; a non-streamed request fails with 502.
    drop_rate: _Rate = 0.0
    # Lets a request force a fault with ``metadata.mock_fault`` (never in production).
    allow_request_faults: bool = False
    # A prompt of at least prompt_cache_min_tokens whose leading messages were sent
    # before reads them from a simulated cache: cached_tokens in usage, and a first
    # token that much sooner.
    prompt_cache: bool = True
    prompt_cache_min_tokens: _Count = 1024
    # The length of an embedding when the request gives no ``dimensions``.
    embedding_dimensions: Annotated[int, msgspec.Meta(ge=1, le=8192)] = 1536
    # "hash": a random unit vector per text (any two texts are far apart);
    # "words": the text's words hashed into the vector, so texts that share
    # words are near each other (for semantic caches and search demos).
    embeddings: Literal["hash", "words"] = "hash"


def _build(context: ProviderContext) -> MockProvider:
    options = context.options
    assert isinstance(options, MockOptions)
    return MockProvider(context.name, options, context.models)


@hookimpl
def register_provider_types(register: Callable[[ProviderType], None]) -> None:
    """Register the ``mock`` provider type."""
    register(ProviderType(
        "mock", _build, config_model=MockOptions,
        description="Simulated models: deterministic text, tools, JSON, latency and faults.",
    ))
