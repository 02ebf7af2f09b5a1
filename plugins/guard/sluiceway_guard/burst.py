"""Key bursts, as a call policy: a key that sends more than ``burst_rps`` model
calls per second (counted over ``burst_window``) is blocked for ``block_for``."""

from __future__ import annotations

import logging
import math

from sluiceway.api import Gateway, LimitDecided, ModelCall, RateLimited

from .middleware import PLUGIN, Owner, create_store, load_options, seconds
from .options import GuardOptions
from .store import GuardStore, MemoryGuardStore

__all__ = ["RETRY_AFTER_CAP", "BurstPolicy", "create_burst_policy"]

# The OpenAI SDK does not retry at all past a Retry-After of 120 s (and the
# gateway never advertises more): a longer block also says x-should-retry: false.
RETRY_AFTER_CAP = 120.0

log = logging.getLogger("sluiceway.guard")


class BurstPolicy(Owner):
    """Refuses the calls of a blocked key: 429 ``burst_limit_exceeded`` with
    ``Retry-After`` (at most 120 s; beyond that, ``x-should-retry: false`` too).
    Calls without a principal (authentication off) pass."""

    kinds = frozenset({"chat", "messages", "count_tokens", "responses", "embeddings"})

    def __init__(
        self, options: GuardOptions | None = None, *, store: GuardStore | None = None,
        name: str = "guard:burst",
    ) -> None:
        self.name = name
        self.options = options if options is not None else GuardOptions()
        self.store: GuardStore = store if store is not None else (
            create_store(self.options) if self.options.bursts else MemoryGuardStore(self.options))
        self.enabled = self.options.bursts

    async def admit(self, call: ModelCall) -> None:
        """Count the call against its key; refuse it while the key is blocked."""
        principal = call.principal
        if not self.enabled or principal is None:
            return
        key = principal.key_id
        burst = await self.store.hit(key)
        if burst.blocked_for <= 0:
            return
        options = self.options
        if burst.new:
            log.warning(
                "guard: blocked key %s for %s: more than %d requests within %s",
                key, seconds(burst.blocked_for), options.burst_limit,
                seconds(options.burst_window),
            )
        left = burst.blocked_for
        if call.events_enabled:
            call.emit(LimitDecided(request_id=call.request_id, policy=PLUGIN, limit="burst",
                                   allowed=False, key_id=key))
        headers = {"x-should-retry": "false"} if left > RETRY_AFTER_CAP else {}
        raise RateLimited(
            f"Key {key} sent more than {options.burst_limit} requests within "
            f"{seconds(options.burst_window)}: it is blocked for {math.ceil(left)} "
            "more seconds.",
            code="burst_limit_exceeded", retry_after=left, headers=headers,
        )


def create_burst_policy(gateway: Gateway) -> BurstPolicy:
    """The ``factory(gateway)`` of the registered call policy."""
    return BurstPolicy(load_options(gateway))
