"""``POST /v1/embeddings``: the request checked, and the answer in OpenAI's shape.

``input`` is a string, a list of strings, a list of token ids, or a list of
lists of token ids (at most 2048 items, none empty). ``encoding_format`` is
``"float"`` (lists of numbers) or ``"base64"`` (each vector as little-endian
float32 bytes, base64-encoded: what the OpenAI SDKs ask for by default and
decode themselves). ``dimensions``, when given, is a positive integer.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Sequence
from typing import Any

from ..components import EmbeddingsRequest
from ..errors import InvalidRequest

__all__ = [
    "MAX_INPUTS",
    "decode_vector",
    "embeddings_object",
    "encode_vector",
    "parse_embeddings_request",
]

# OpenAI's own cap on the number of inputs in one request.
MAX_INPUTS = 2048


def _invalid(message: str, param: str, code: str = "invalid_value") -> InvalidRequest:
    return InvalidRequest(message, param=param, code=code)


def _is_tokens(value: object) -> bool:
    return isinstance(value, list) and all(
        isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value)


def _inputs(value: object) -> list[str] | list[list[int]]:
    if isinstance(value, str):
        if not value:
            raise _invalid("'input' cannot be an empty string.", "input")
        return [value]
    if not isinstance(value, list) or not value:
        raise _invalid("'input' must be a non-empty string, a list of strings, a list of "
                       "token ids or a list of lists of token ids.", "input",
                       "invalid_type" if not isinstance(value, list) else "invalid_value")
    if _is_tokens(value):  # one input of token ids, however long
        return [value]
    if len(value) > MAX_INPUTS:
        raise _invalid(f"Too many inputs: {len(value)} (at most {MAX_INPUTS}).", "input")
    if all(isinstance(item, str) for item in value):
        for index, item in enumerate(value):
            if not item:
                raise _invalid("An input cannot be an empty string.", f"input[{index}]")
        return list(value)
    for index, item in enumerate(value):
        if not _is_tokens(item) or not item:
            raise _invalid("'input' must be strings or token arrays, not a mix, and none "
                           "may be empty.", f"input[{index}]")
    return list(value)


def parse_embeddings_request(body: object, *, request_id: str = "") -> EmbeddingsRequest:
    """Validate a parsed embeddings body; raise ``InvalidRequest`` naming the ``param``."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_request_body")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _invalid("Missing required parameter: 'model'.", "model",
                       "missing_required_parameter")
    if "input" not in body:
        raise _invalid("Missing required parameter: 'input'.", "input",
                       "missing_required_parameter")
    inputs = _inputs(body["input"])
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise _invalid(f"Invalid value for 'encoding_format': {encoding!r} (expected 'float' "
                       "or 'base64').", "encoding_format")
    dimensions = body.get("dimensions")
    if dimensions is not None and (
        not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1
    ):
        raise _invalid("'dimensions' must be a positive integer.", "dimensions")
    return EmbeddingsRequest(body, model=model, inputs=inputs, encoding_format=encoding,
                             dimensions=dimensions, request_id=request_id)


def encode_vector(vector: Sequence[float]) -> str:
    """A vector as OpenAI's base64 form: little-endian float32, base64-encoded."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def decode_vector(packed: str) -> list[float]:
    """A vector from OpenAI's base64 form (little-endian float32)."""
    raw = base64.b64decode(packed, validate=True)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def embeddings_object(
    vectors: Sequence[Sequence[float]], *, model: str, prompt_tokens: int,
    encoding_format: str = "float",
) -> dict[str, Any]:
    """The OpenAI ``list`` of ``embedding`` objects, with usage."""
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": index,
             "embedding": encode_vector(vector) if encoding_format == "base64" else list(vector)}
            for index, vector in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
