"""``GET /v1/models`` and ``GET /v1/models/{model}``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..context import CONTEXT_KEY
from ..responses import send_json

if TYPE_CHECKING:
    from ...components import ModelInfo, Receive, Scope, Send

__all__ = ["list_models", "retrieve_model"]


def _model_object(model: ModelInfo) -> dict[str, Any]:
    return {"id": model.id, "object": "model", "created": model.created, "owned_by": model.owned_by}


async def list_models(scope: Scope, receive: Receive, send: Send) -> None:
    """Every model of every provider, in the OpenAI list shape."""
    ctx = scope[CONTEXT_KEY]
    access = ctx.gateway.access
    models = [
        _model_object(m) for m in ctx.gateway.router.models() if access.allows(ctx.principal, m.id)
    ]
    await send_json(send, 200, {"object": "list", "data": models})


async def retrieve_model(scope: Scope, receive: Receive, send: Send) -> None:
    """One model, or 404 ``model_not_found``."""
    ctx = scope[CONTEXT_KEY]
    router = ctx.gateway.router
    name = scope["path_params"]["model"]
    router.resolve(name)
    if not ctx.gateway.access.allows(ctx.principal, name):
        raise router.not_found(name)  # do not confirm that a hidden model exists
    model = next(m for m in router.models() if m.id == name)
    await send_json(send, 200, _model_object(model))
