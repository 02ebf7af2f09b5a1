"""The parsed requests the core hands to providers and call policies.

Each keeps the client's JSON as parsed (``body``) so that a provider can forward
fields the core does not know about, beside the few fields the core checked and
relies on; ``upstream_model`` is set per attempt to the id the chosen deployment
knows the model by.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ChatRequest", "EmbeddingsRequest", "MessagesRequest", "ResponsesRequest"]


class ChatRequest:
    """A validated chat-completions request.

    ``body`` is the client's JSON exactly as parsed (the canonical OpenAI shape),
    so a provider can forward fields the core does not know about. The core has
    already checked the fields it relies on and set ``upstream_model``, the id
    the chosen provider knows the model by.
    """

    __slots__ = (
        "body",
        "include_usage",
        "messages",
        "model",
        "request_id",
        "stream",
        "upstream_model",
    )

    def __init__(
        self,
        body: dict[str, Any],
        *,
        model: str,
        messages: list[dict[str, Any]],
        stream: bool = False,
        include_usage: bool = False,
        upstream_model: str | None = None,
        request_id: str = "",
    ) -> None:
        self.body = body
        self.model = model
        self.messages = messages
        self.stream = stream
        self.include_usage = include_usage
        self.upstream_model = upstream_model or model
        self.request_id = request_id

    @property
    def max_tokens(self) -> int | None:
        """``max_completion_tokens`` or, failing that, the older ``max_tokens``."""
        value = self.body.get("max_completion_tokens", self.body.get("max_tokens"))
        return value if isinstance(value, int) else None


class MessagesRequest:
    """A validated Anthropic Messages request (``POST /v1/messages`` and
    ``/v1/messages/count_tokens``), for providers that speak Anthropic natively.

    ``body`` is the client's JSON exactly as parsed, in Anthropic's shape; send it
    on with only ``model`` replaced by ``upstream_model``. ``beta`` and
    ``version`` are the client's ``anthropic-beta`` and ``anthropic-version``
    headers (``None`` when absent). ``messages`` is ``body["messages"]``.
    """

    __slots__ = (
        "beta",
        "body",
        "messages",
        "model",
        "request_id",
        "stream",
        "upstream_model",
        "version",
    )

    def __init__(
        self,
        body: dict[str, Any],
        *,
        model: str,
        messages: list[dict[str, Any]],
        stream: bool = False,
        upstream_model: str | None = None,
        request_id: str = "",
        beta: str | None = None,
        version: str | None = None,
    ) -> None:
        self.body = body
        self.model = model
        self.messages = messages
        self.stream = stream
        self.upstream_model = upstream_model or model
        self.request_id = request_id
        self.beta = beta
        self.version = version


class EmbeddingsRequest:
    """A validated embeddings request: ``inputs`` in order (texts, or token-id
    arrays), the ``encoding_format`` the client asked for and ``dimensions`` if
    given; ``body`` is the client's JSON exactly as parsed, for pass-through."""

    __slots__ = ("body", "dimensions", "encoding_format", "inputs", "messages", "model",
                 "request_id", "upstream_model")

    def __init__(
        self,
        body: dict[str, Any],
        *,
        model: str,
        inputs: list[str] | list[list[int]],
        encoding_format: str = "float",
        dimensions: int | None = None,
        upstream_model: str | None = None,
        request_id: str = "",
    ) -> None:
        self.body = body
        self.model = model
        self.inputs = inputs
        self.encoding_format = encoding_format
        self.dimensions = dimensions
        self.upstream_model = upstream_model or model
        self.request_id = request_id
        # Routing's prefix affinity reads a conversation; an embedding has none.
        self.messages: list[dict[str, Any]] = []


class ResponsesRequest:
    """A Responses API request (``POST /v1/responses``), for providers that serve
    the Responses API natively: ``body`` is the client's JSON exactly as parsed;
    send it on with only ``model`` replaced by ``upstream_model``. Providers that
    do not get the canonical :class:`ChatRequest` translated from it instead."""

    __slots__ = ("body", "model", "request_id", "stream", "upstream_model")

    def __init__(
        self,
        body: dict[str, Any],
        *,
        model: str,
        stream: bool = False,
        upstream_model: str | None = None,
        request_id: str = "",
    ) -> None:
        self.body = body
        self.model = model
        self.stream = stream
        self.upstream_model = upstream_model or model
        self.request_id = request_id
