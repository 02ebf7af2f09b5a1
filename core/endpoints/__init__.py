"""The core's own routes, registered like any plugin's (as the built-in ``sluiceway.core``)."""

from __future__ import annotations

from collections.abc import Callable

from ..components import Route
from ..hookspecs import hookimpl
from .chat import chat_completions
from .health import healthz, readyz
from .models import list_models, retrieve_model

__all__ = ["register_routes"]


@hookimpl(trylast=True)
def register_routes(register: Callable[[Route], None]) -> None:
    """The OpenAI-compatible API and the health checks."""
    register(Route("/v1/chat/completions", chat_completions, ("POST",), name="chat",
                   calls_model=True))
    register(Route("/v1/models", list_models, ("GET",), name="models"))
    register(Route("/v1/models/{model}", retrieve_model, ("GET",), name="model"))
    register(Route("/healthz", healthz, ("GET",), name="healthz", public=True))
    register(Route("/readyz", readyz, ("GET",), name="readyz", public=True))
