"""The cache key of a call: its normalised request, hashed.

Two requests share an entry when they would get the same answer: the same kind
of call, model (the name the client asked for), stream or not, and body once
the fields that do not change the answer (``user``, ``metadata``...) are left
out. The body is encoded with sorted keys, so the order a client writes its
fields in does not matter; the values themselves (messages, tools,
temperature...) are compared exactly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import msgspec

from sluiceway.api import MessagesRequest, ModelCall

__all__ = ["CacheKeys", "Directives", "cache_directives"]

_encode = msgspec.json.Encoder(order="sorted").encode


class CacheKeys:
    """Makes the keys of calls; ``scope`` says whose answers a call may share."""

    __slots__ = ("ignored", "scope")

    def __init__(self, scope: str, ignored: Iterable[str]) -> None:
        self.scope = scope
        self.ignored = frozenset(ignored) | {"stream"}

    def owner(self, call: ModelCall) -> str:
        """Whose entries the call reads and writes: ``""`` when shared."""
        if self.scope == "shared":
            return ""
        principal = call.principal
        if principal is None:
            return "-"
        if self.scope == "team":
            team = principal.attributes.get("team")
            if isinstance(team, str) and team:
                return "team:" + team
        return "key:" + principal.key_id

    @staticmethod
    def anthropic_headers(call: ModelCall) -> list[str | None] | None:
        """Anthropic's beta and version headers: they change what the model may answer."""
        request = call.request
        if isinstance(request, MessagesRequest):
            return [request.beta, request.version]
        return None

    def key(self, call: ModelCall) -> str:
        """The hex digest naming the call's entry."""
        body = {k: v for k, v in call.body.items() if k not in self.ignored}
        material = _encode([call.kind, call.model, call.stream, self.owner(call),
                            self.anthropic_headers(call), body])
        return hashlib.blake2b(material, digest_size=20).hexdigest()


class Directives:
    """What a request's ``Cache-Control`` asks: ``no_store`` (neither read nor
    write the cache), ``no_cache`` (do not answer from it, but keep the fresh
    answer), ``max_age`` (take only an entry at most this many seconds old)."""

    __slots__ = ("max_age", "no_cache", "no_store")

    def __init__(self, no_store: bool = False, no_cache: bool = False,
                 max_age: int | None = None) -> None:
        self.no_store = no_store
        self.no_cache = no_cache
        self.max_age = max_age


_NONE = Directives()


def cache_directives(header: str | None) -> Directives:
    """The directives of a ``Cache-Control`` header (unknown ones are ignored, as
    HTTP caches do)."""
    if not header:
        return _NONE
    found = Directives()
    for directive in header.lower().split(","):
        name, _, value = directive.strip().partition("=")
        if name == "no-store":
            found.no_store = True
        elif name == "no-cache":
            found.no_cache = True
        elif name == "max-age":
            value = value.strip().strip('"')
            if value.isdecimal():
                found.max_age = int(value)
    return found
