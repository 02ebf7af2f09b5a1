"""``POST /v1/embeddings``: a model call like chat, answered whole."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from ...errors import InvalidRequest, UpstreamError
from ...wire.embeddings import decode_vector, encode_vector, parse_embeddings_request
from ...wire.usage import Usage
from ..context import CONTEXT_KEY

if TYPE_CHECKING:
    from ...calls.router import Deployment
    from ...components import EmbeddingsRequest, Receive, Scope, Send

__all__ = ["embeddings"]


async def embeddings(scope: Scope, receive: Receive, send: Send) -> None:
    """Validate, route, and answer with the vectors in the encoding asked for."""
    ctx = scope[CONTEXT_KEY]
    request = parse_embeddings_request(await ctx.json(), request_id=ctx.request_id)
    call = ctx.gateway.calls.prepare("embeddings", ctx, request)
    if not any(_embeds(deployment) for deployment in call.group.deployments):
        providers = sorted({d.provider_name for d in call.group.deployments})
        named = ", ".join(map(repr, providers))
        whose = f"provider {named} has" if len(providers) == 1 else f"providers {named} have"
        raise InvalidRequest(
            f"The model {request.model!r} does not serve embeddings (its {whose} none).",
            param="model", code="model_not_supported",
        )
    # An alias may mix providers: only those with embeddings are tried.
    call.serves = _embeds

    async def attempt(deployment: Deployment) -> dict[str, Any]:
        embed = deployment.capabilities.embeddings
        assert embed is not None  # call.serves
        answer = _checked(await embed(request), deployment.provider_name)
        call.usage = Usage.from_openai(answer.get("usage"))
        _encode_as_asked(answer, request, deployment.provider_name)
        return answer

    await ctx.gateway.calls.whole(call, attempt, send)


def _embeds(deployment: Deployment) -> bool:
    return deployment.capabilities.embeddings is not None


def _checked(answer: object, provider: str) -> dict[str, Any]:
    data = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(answer, dict) or not isinstance(data, list):
        raise UpstreamError(f"Provider {provider!r} answered with something that is not a "
                            "list of embeddings.", code="upstream_invalid_response")
    return answer


def _encode_as_asked(answer: dict[str, Any], request: EmbeddingsRequest, provider: str) -> None:
    """Vectors in the encoding the client asked for, whatever the provider sent:
    floats are packed for base64 (what the SDKs ask for by default), base64 is
    unpacked for float."""
    packed = request.encoding_format == "base64"
    try:
        for item in answer["data"]:
            vector = item.get("embedding") if isinstance(item, dict) else None
            if packed and isinstance(vector, list):
                item["embedding"] = encode_vector(vector)
            elif not packed and isinstance(vector, str):
                item["embedding"] = decode_vector(vector)
    except (struct.error, TypeError, ValueError):
        raise UpstreamError(f"Provider {provider!r} answered with an embedding that is not "
                            "a list of numbers.", code="upstream_invalid_response") from None
