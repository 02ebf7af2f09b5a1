"""The ``cache`` call policy: answers replayed from earlier identical requests.

``admit`` looks the call up (unless its ``Cache-Control`` says ``no-cache`` or
``no-store``): a fresh entry answers the call (:meth:`ModelCall.answer_with`:
no upstream, usage and cost zero), replayed as it went out the first time, a
stream as the same server-sent events. On a miss it puts a recorder on the
call's way out (:func:`sluiceway.api.record_answer`); a successful answer is
kept once its last byte has gone, a failed, cut or oversized one never.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from sluiceway.api import Gateway, ModelCall, PolicyDecided, Recording, Settle, record_answer

from .keys import CacheKeys, Directives, cache_directives
from .options import PLUGIN, CacheOptions, parse_options
from .store import AnswerStore, MemoryAnswers, RedisAnswers

if TYPE_CHECKING:
    from .semantic import SemanticCache

__all__ = ["CachePolicy", "create_policy"]

log = logging.getLogger("sluiceway.cache")

# Responses that continue upstream state: a replay would not continue it.
_STATEFUL = ("previous_response_id", "conversation", "background")


class CachePolicy:
    """Answers calls from the cache, and keeps the answers of those it could not."""

    def __init__(self, options: CacheOptions, store: AnswerStore, *, name: str = PLUGIN,
                 semantic: SemanticCache | None = None) -> None:
        self.name = name
        self.semantic = semantic
        self.options = options
        self.store = store
        self.kinds: frozenset[str] = frozenset(options.kinds)
        self.keys = CacheKeys(options.scope, options.ignore_fields)
        self._models = (re.compile("|".join(fnmatch.translate(p) for p in options.models))
                        if options.models else None)
        self._max_entry = int(options.max_entry_size)

    def lifespan(self) -> AbstractAsyncContextManager[None]:
        """Entered by the gateway at startup: closes the Redis client at shutdown."""
        return self.store.lifespan()

    def cacheable(self, call: ModelCall) -> bool:
        """Whether the call's answer may be kept and replayed at all."""
        if self._models is not None and not self._models.match(call.model):
            return False
        if call.kind == "responses":
            body = call.body
            return not any(body.get(field) for field in _STATEFUL)
        return True

    async def admit(self, call: ModelCall) -> Settle | None:
        """Answer from the cache on a hit; on a miss, record the answer to keep it."""
        directives: Directives = cache_directives(call.context.header(b"cache-control"))
        if directives.no_store or not self.cacheable(call):
            self._decided(call, "bypass")
            return None
        key = self.keys.key(call)
        if not directives.no_cache and self._answer(call, await self.store.get(key),
                                                    directives, "exact"):
            return None
        near: tuple[str, Any] | None = None
        semantic = self.semantic
        if semantic is not None and call.kind != "embeddings":
            near = await self._semantic_lookup(call, semantic, directives)
            if near is None and call.answer is not None:
                return None  # answered by meaning
        self._decided(call, "miss", "semantic" if near is not None else "exact")

        async def keep(recording: Recording) -> None:
            await self.store.put(key, recording)
            if near is not None:
                assert semantic is not None
                semantic.index.add(near[0], near[1], key)
            if call.events_enabled:
                call.emit(PolicyDecided(request_id=call.request_id, policy=self.name,
                                        rule="exact" if near is None else "semantic",
                                        action="stored", stage="output",
                                        key_id=call.key_id, model=call.model))

        call.add_output(record_answer(call, keep, max_bytes=self._max_entry))
        return None

    def _answer(self, call: ModelCall, found: Recording | None, directives: Directives,
                rule: str) -> bool:
        """Answer the call with ``found`` if there is one fresh enough."""
        if found is None:
            return False
        age = found.age()
        if directives.max_age is not None and age > directives.max_age:
            return False
        self._decided(call, "hit", rule)
        call.headers["age"] = str(int(age))
        call.answer_with(found, by=self.name)
        return True

    async def _semantic_lookup(self, call: ModelCall, semantic: SemanticCache,
                               directives: Directives) -> tuple[str, Any] | None:
        """Answer the call by meaning if a kept prompt is near enough; else the
        partition and vector to keep its answer under (``None``: not comparable)."""
        found = semantic.text(call)
        if found is None:
            return None
        text, roles = found
        vector = await semantic.embed(call, text)
        if vector is None:
            return None
        partition = semantic.partition(call, roles)
        if not directives.no_cache:
            nearest = semantic.index.nearest(partition, vector)
            if nearest is not None and nearest[2] >= semantic.options.threshold:
                label, key, similarity = nearest
                recording = await self.store.get(key)
                if recording is None:
                    semantic.index.forget(label)  # its answer expired or was evicted
                elif self._answer(call, recording, directives, "semantic"):
                    call.headers["x-sluiceway-cache-similarity"] = f"{similarity:.4f}"
                    return None
        return partition, vector

    def _decided(self, call: ModelCall, action: str, rule: str = "exact") -> None:
        if self.options.status_header:
            call.headers["x-sluiceway-cache"] = action
        if call.events_enabled:
            call.emit(PolicyDecided(request_id=call.request_id, policy=self.name,
                                    rule=rule, action=action, key_id=call.key_id,
                                    model=call.model))


def create_policy(gateway: Gateway) -> CachePolicy:
    """The ``factory(gateway)`` of the registered call policy."""
    config = gateway.config
    # Without a storage of its own, answers are kept where [state] keeps shared state.
    options = parse_options({"storage": config.shared_storage(), **config.plugin_options(PLUGIN)},
                            source=config.source)
    store: AnswerStore
    if options.storage == "memory://":
        store = MemoryAnswers(float(options.ttl), int(options.max_memory))
    else:
        store = RedisAnswers(options.storage, float(options.ttl), key_prefix=options.key_prefix)
    policy = CachePolicy(options, store)
    if options.semantic is not None:
        # numpy and the vector index are imported only when they are used.
        from .semantic import SemanticCache

        policy.semantic = SemanticCache(options.semantic, gateway, policy.keys)
    return policy
