"""The core's own routes, registered like any plugin's (as the built-in ``sluiceway.core``)."""

from __future__ import annotations

from collections.abc import Callable

from ...components import Route
from ...plugins.hookspecs import hookimpl
from .chat import chat_completions
from .embeddings import embeddings
from .health import healthz, readyz
from .info import info
from .messages import count_tokens, messages
from .models import list_models, retrieve_model
from .responses import responses

__all__ = ["register_routes"]


@hookimpl(trylast=True)
def register_routes(register: Callable[[Route], None]) -> None:
    """The OpenAI-compatible API (chat, embeddings, models), the Anthropic Messages API
    and the health checks."""
    register(Route("/v1/chat/completions", chat_completions, ("POST",), name="chat",
                   calls_model=True))
    register(Route("/v1/responses", responses, ("POST",), name="responses",
                   calls_model=True))
    register(Route("/v1/embeddings", embeddings, ("POST",), name="embeddings",
                   calls_model=True))
    register(Route("/v1/messages", messages, ("POST",), name="messages",
                   dialect="anthropic", calls_model=True))
    # Counting is not a model call: limits and model-call metrics leave it alone.
    register(Route("/v1/messages/count_tokens", count_tokens, ("POST",),
                   name="count_tokens", dialect="anthropic"))
    register(Route("/v1/models", list_models, ("GET",), name="models"))
    register(Route("/v1/models/{model}", retrieve_model, ("GET",), name="model"))
    register(Route("/info", info, ("GET",), name="info"))
    register(Route("/healthz", healthz, ("GET",), name="healthz", public=True))
    register(Route("/readyz", readyz, ("GET",), name="readyz", public=True))
