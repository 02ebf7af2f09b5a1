"""The cache's semantic mode: a request near enough in meaning to an earlier
one is answered with that one's answer.

The prompt's text is embedded through the gateway's own ``POST /v1/embeddings``
route (:meth:`Gateway.subrequest`, with the caller's credentials: the embedding
is a request of that key, limited, priced and reported like any other) and
looked up in a vector index, `usearch <https://github.com/unum-cloud/usearch>`_'s
HNSW, by cosine similarity. Only requests alike in everything but their text
are compared: the index is partitioned by kind, model, stream, scope owner, the
conversation's roles and every other field of the body. Conversations with
anything but text (images, tool calls and results, documents) are looked up
exactly only.

The index lives in the process (Redis 7 has no vector search without a
module): each instance learns the vectors of the answers it kept, and finds the
recordings in the configured storage, so instances sharing Redis share the
answers but each builds its own index.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import msgspec
import numpy as np
from usearch.index import Index

from sluiceway.api import Gateway, ModelCall

from .keys import CacheKeys
from .options import SemanticOptions

__all__ = ["SemanticCache", "SemanticIndex", "prompt_text"]

log = logging.getLogger("sluiceway.cache")

_encode = msgspec.json.Encoder(order="sorted").encode
# The fields that hold the text compared by meaning; the rest must match exactly.
_TEXT_FIELDS = frozenset({"messages", "system", "input", "instructions"})
# Credentials the auth strategies read, passed on to the embedding request.
_CREDENTIALS = (b"authorization", b"x-api-key")
_LOG_EVERY = 60.0


def _text_of(content: object) -> str | None:
    """The text of a message's content; ``None`` if it holds anything but text."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return None if content is not None else ""
    pieces = []
    for block in content:
        if not isinstance(block, Mapping) or block.get("type") not in (
                "text", "input_text", "output_text"):
            return None
        text = block.get("text")
        if not isinstance(text, str):
            return None
        pieces.append(text)
    return "\n".join(pieces)


def prompt_text(body: Mapping[str, Any]) -> tuple[str, list[str]] | None:
    """The conversation of a chat or Messages body as text (``role: text`` lines)
    and its roles; ``None`` when it holds anything but text."""
    lines: list[str] = []
    roles: list[str] = []
    system = body.get("system")
    if system is not None:
        text = _text_of(system)
        if text is None:
            return None
        lines.append(f"system: {text}")
        roles.append("system")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    for message in messages:
        if not isinstance(message, Mapping) or message.get("tool_calls"):
            return None
        role, text = str(message.get("role", "")), _text_of(message.get("content"))
        if text is None:
            return None
        lines.append(f"{role}: {text}")
        roles.append(role)
    return "\n".join(lines), roles


class SemanticIndex:
    """Vectors of kept answers, per partition, at most ``max_entries`` in all
    (the oldest are forgotten first)."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._indexes: dict[str, Index] = {}
        # label -> (partition, cache key), oldest first.
        self._labels: OrderedDict[int, tuple[str, str]] = OrderedDict()
        self._next_label = 0

    def __len__(self) -> int:
        return len(self._labels)

    def add(self, partition: str, vector: np.ndarray, key: str) -> None:
        index = self._indexes.get(partition)
        if index is None or index.ndim != len(vector):
            # A first vector, or another embedding model: a fresh index.
            if index is not None:
                self._drop(partition)
            index = Index(ndim=len(vector), metric="cos", dtype="f32")
            self._indexes[partition] = index
        label = self._next_label
        self._next_label += 1
        index.add(label, vector)
        self._labels[label] = (partition, key)
        while len(self._labels) > self.max_entries:
            oldest, _ = next(iter(self._labels.items()))
            self.forget(oldest)

    def nearest(self, partition: str, vector: np.ndarray) -> tuple[int, str, float] | None:
        """The label, cache key and cosine similarity of the nearest vector."""
        index = self._indexes.get(partition)
        if index is None or index.ndim != len(vector) or len(index) == 0:
            return None
        matches = index.search(vector, 1)
        if len(matches.keys) == 0:
            return None
        label = int(matches.keys[0])
        found = self._labels.get(label)
        if found is None:
            return None
        return label, found[1], 1.0 - float(matches.distances[0])

    def forget(self, label: int) -> None:
        found = self._labels.pop(label, None)
        if found is None:
            return
        index = self._indexes.get(found[0])
        if index is not None:
            index.remove(label)
            if len(index) == 0:
                del self._indexes[found[0]]

    def _drop(self, partition: str) -> None:
        for label in [n for n, (p, _) in self._labels.items() if p == partition]:
            del self._labels[label]
        del self._indexes[partition]


class SemanticCache:
    """Embeds a call's prompt through the gateway and finds the nearest kept one."""

    def __init__(self, options: SemanticOptions, gateway: Gateway, keys: CacheKeys) -> None:
        self.options = options
        self.gateway = gateway
        self.keys = keys
        self.index = SemanticIndex(options.max_entries)
        self._failed_logged = -_LOG_EVERY

    def partition(self, call: ModelCall, roles: list[str]) -> str:
        """Which calls this one may be compared with: alike in all but the text."""
        body = {k: v for k, v in call.body.items()
                if k not in self.keys.ignored and k not in _TEXT_FIELDS}
        material = _encode([call.kind, call.model, call.stream, self.keys.owner(call),
                            self.keys.anthropic_headers(call), roles, body])
        return hashlib.blake2b(material, digest_size=20).hexdigest()

    def text(self, call: ModelCall) -> tuple[str, list[str]] | None:
        """The call's prompt text and roles, or ``None`` when it cannot be compared."""
        return prompt_text(call.request.body)

    async def embed(self, call: ModelCall, text: str) -> np.ndarray | None:
        """The prompt's vector, from the gateway's own embeddings route; ``None``
        (and a warning, at most once a minute) when that fails."""
        headers = [(name, value) for name, value in call.context.scope["headers"]
                   if name in _CREDENTIALS]
        body = msgspec.json.encode({"model": self.options.model, "input": text,
                                    "encoding_format": "float"})
        answer = await self.gateway.subrequest("POST", "/v1/embeddings", body=body,
                                               headers=headers)
        try:
            if answer.status != 200:
                raise ValueError(f"status {answer.status}")
            vector = np.asarray(answer.json()["data"][0]["embedding"], dtype=np.float32)
            if vector.ndim != 1 or not len(vector) or not np.all(np.isfinite(vector)):
                raise ValueError("not a vector")
        except (ValueError, KeyError, IndexError, TypeError, msgspec.DecodeError) as exc:
            now = time.monotonic()
            if now - self._failed_logged >= _LOG_EVERY:
                self._failed_logged = now
                log.warning("cache: the semantic lookup could not embed the prompt with "
                            "model %r (%s): looked up exactly only", self.options.model, exc)
            return None
        return vector
