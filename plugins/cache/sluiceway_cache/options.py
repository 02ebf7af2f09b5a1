"""``[plugin.cache]``: what is cached, for whom, for how long, and where."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from sluiceway.api import ByteSize, Duration, check_storage_url, validate_options

__all__ = ["DEFAULT_IGNORED", "PLUGIN", "CacheOptions", "SemanticOptions", "parse_options"]

PLUGIN = "cache"

# Body fields that do not change what the model answers: left out of the key,
# so two requests differing only in them share an entry.
DEFAULT_IGNORED = (
    "user",
    "metadata",
    "safety_identifier",
    "prompt_cache_key",
    "prompt_cache_retention",
    "service_tier",
    "store",
)

CacheKind = Literal["chat", "messages", "responses", "embeddings"]


class SemanticOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[plugin.cache.semantic]``: answer requests near in meaning to a kept one."""

    # The embeddings model (a name clients may ask the gateway for) that embeds prompts.
    model: Annotated[str, msgspec.Meta(min_length=1)]
    # The cosine similarity from which two prompts count as the same request.
    threshold: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)] = 0.95
    # Vectors this instance keeps (the oldest are forgotten first).
    max_entries: Annotated[int, msgspec.Meta(ge=1)] = 10_000


class CacheOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[plugin.cache]``."""

    # How long an answer is kept.
    ttl: Duration = Duration(3600)
    # Whose answers a request may get: its own key's ("key"), its team's
    # ("team", keys without a team keep to themselves) or anyone's ("shared").
    scope: Literal["key", "team", "shared"] = "key"
    # The calls that are cached. Responses are not by default: a response's id
    # names state the upstream keeps, which a replay does not create.
    kinds: list[CacheKind] = msgspec.field(
        default_factory=lambda: ["chat", "messages", "embeddings"])
    # Glob patterns of the model names (as clients ask for them) to cache; empty: all.
    models: list[str] = msgspec.field(default_factory=list)
    # Body fields left out of the key (they do not change the answer).
    ignore_fields: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_IGNORED))
    # An answer larger than this is not kept.
    max_entry_size: ByteSize = ByteSize(1 << 20)
    # In memory: the most the entries may take together (least recently used go first).
    max_memory: ByteSize = ByteSize(64 << 20)
    # "memory://" (this process) or a Redis URL (shared by every instance);
    # by default where [state] keeps shared state.
    storage: str = "memory://"
    key_prefix: str = "sluiceway:cache:"
    # The x-sluiceway-cache response header (hit, miss, bypass).
    status_header: bool = True
    # Also answer a chat, Messages or Responses request whose prompt is near in
    # meaning to a kept one's; absent: exact matches only.
    semantic: SemanticOptions | None = None

    def __post_init__(self) -> None:
        self.ttl = Duration.parse(self.ttl)
        if not self.ttl >= 1:
            raise ValueError("ttl must be at least 1s")
        self.max_entry_size = ByteSize.parse(self.max_entry_size)
        self.max_memory = ByteSize.parse(self.max_memory)
        if not 0 < self.max_entry_size <= self.max_memory:
            raise ValueError("max_entry_size must be more than 0 and at most max_memory")
        if not self.kinds:
            raise ValueError("kinds must name at least one kind of call")
        check_storage_url(self.storage)


def parse_options(raw: object, *, source: str) -> CacheOptions:
    """Validate ``[plugin.cache]``; an error names the file and the key."""
    return validate_options(raw, CacheOptions, source=source, key=f"plugin.{PLUGIN}")
