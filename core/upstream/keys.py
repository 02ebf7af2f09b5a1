"""Weighted upstream credentials for one provider, with per-key rest periods.

A provider with several API keys for the same upstream (separate quotas,
separate organisations, a key only some models may use) builds a
:class:`KeyRing` once and asks it for a key on every request::

    ring = KeyRing([ApiKey("sk-a", weight=3, name="primary"), ApiKey("sk-b", name="spare")])
    key = ring.pick("gpt-4o")           # by weight, among keys that serve the model
    ...                                 # upstream says 429, retry-after 20
    ring.rest(key, 20)                  # not picked again for 20 s
    ring.has_alternative("gpt-4o", excluding=key)   # may the caller retry at once?

Errors from :meth:`KeyRing.pick`:

    PermissionDenied (403, kind client)    no key may use this model
    RateLimited (429, kind rate_limit)     every key that may is resting;
                                           retry_after = until the first wakes

No I/O, no module state: a pick is one pass over the keys. Not thread-safe (one
ring per provider, used from the serving loop).
"""

from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from fnmatch import translate
from typing import Annotated
from urllib.parse import urlencode

import msgspec

from ..config.values import Secret
from ..errors import ConfigError, GatewayError, PermissionDenied, RateLimited
from ..wire.headers import retry_after_seconds

__all__ = [
    "ApiKey",
    "Credentials",
    "KeyOptions",
    "KeyRing",
    "check_headers",
    "check_key_options",
    "key_ring",
    "revealed",
]


class KeyOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One entry of a provider's ``api_keys`` table list.

    ``key`` is written ``"env:VAR"``. ``weight`` is its share of the traffic among
    the keys that may serve a model. ``models`` lists glob patterns of *upstream*
    model ids the key may be used for (all when absent). ``name`` appears in logs
    and errors instead of the secret (default ``key-1``, ``key-2``... by position).
    ``headers`` and ``query`` go with every request sent with this key (over the
    provider's own), e.g. an organisation or project header per key; their
    values may be ``"env:VAR"``.
    """

    key: Secret
    weight: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    models: Annotated[list[str], msgspec.Meta(min_length=1)] | None = None
    name: str | None = None
    headers: dict[str, Secret] | None = None
    query: dict[str, Secret] | None = None

    def __post_init__(self) -> None:
        check_headers(self.headers)


_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def check_headers(headers: Mapping[str, Secret] | None) -> None:
    """Header names that are HTTP tokens and values on one line, or ``ValueError``."""
    for name, value in (headers or {}).items():
        if not _TOKEN.match(name):
            raise ValueError(f"{name!r} is not a valid header name")
        if "\r" in value.reveal() or "\n" in value.reveal():
            raise ValueError(f"the value of header {name!r} spans lines")


def revealed(values: Mapping[str, Secret] | None, *, lower: bool = False) -> dict[str, str]:
    """A table of ``Secret`` values, read (names lower-cased for headers)."""
    return {(name.lower() if lower else name): value.reveal()
            for name, value in (values or {}).items()}


def check_key_options(api_key: Secret | None, api_keys: Sequence[KeyOptions] | None) -> None:
    """For a provider options struct's ``__post_init__``: one way of giving keys, unique names."""
    if api_key is not None and api_keys is not None:
        raise ValueError("api_key and api_keys are mutually exclusive: use one of them")
    names = [key.name or f"key-{n}" for n, key in enumerate(api_keys or (), 1)]
    duplicate = next((name for name in names if names.count(name) > 1), None)
    if duplicate is not None:
        raise ValueError(f"two api_keys are named {duplicate!r}")


def key_ring(api_key: Secret | None, api_keys: Sequence[KeyOptions] | None) -> KeyRing | None:
    """The ring for a provider's ``api_key`` or ``api_keys`` option (``None``: no key)."""
    if api_keys is not None:
        return KeyRing([
            ApiKey(
                entry.key.reveal(),
                weight=entry.weight,
                models=tuple(entry.models) if entry.models is not None else None,
                name=entry.name or f"key-{n}",
                headers=revealed(entry.headers, lower=True),
                query=revealed(entry.query),
            )
            for n, entry in enumerate(api_keys, 1)
        ])
    if api_key is not None:
        return KeyRing([ApiKey(api_key.reveal(), name="api_key")])
    return None


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One upstream credential.

    ``weight`` is its share of the traffic among keys that may serve a model;
    ``models`` is a tuple of glob patterns (``"gpt-4o*"``) limiting which
    upstream models it is used for (``None``: all); ``name`` identifies it in
    logs and errors (a :class:`KeyRing` names unnamed keys ``key-1``, ``key-2``...).
    ``headers`` and ``query`` are sent with every request that uses the key. The
    secret (and those, which may hold secrets) is never part of ``repr``.
    """

    secret: str = field(repr=False)
    weight: float = 1.0
    models: tuple[str, ...] | None = None
    name: str = ""
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    query: Mapping[str, str] = field(default_factory=dict, repr=False)


class KeyRing:
    """Picks a key for each request by weight, skipping keys that are resting.

    ``rng`` is anything with ``random() -> float`` in ``[0, 1)`` (default: a new
    ``random.Random``); ``clock`` returns monotonic seconds (default
    ``time.monotonic``). Both are injectable so tests neither depend on chance
    nor sleep.
    """

    __slots__ = ("_clock", "_index", "_patterns", "_rng", "_until", "keys")

    def __init__(
        self,
        keys: Sequence[ApiKey],
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not keys:
            raise ValueError("a KeyRing needs at least one key")
        named = [k if k.name else replace(k, name=f"key-{n}") for n, k in enumerate(keys, 1)]
        seen: set[str] = set()
        for key in named:
            if not (math.isfinite(key.weight) and key.weight > 0):
                raise ValueError(f"key {key.name!r}: weight must be a positive number")
            if key.models is not None and not key.models:
                raise ValueError(f"key {key.name!r}: models is empty (leave it out for all)")
            if key.name in seen:
                raise ValueError(f"two keys are named {key.name!r}")
            seen.add(key.name)
        self.keys: tuple[ApiKey, ...] = tuple(named)
        self._index = {key.name: i for i, key in enumerate(self.keys)}
        self._patterns: list[re.Pattern[str] | None] = [
            None if key.models is None else re.compile("|".join(map(translate, key.models)))
            for key in self.keys
        ]
        self._until = [0.0] * len(self.keys)
        self._rng = rng or random.Random()
        self._clock = clock

    def _serves(self, i: int, model: str) -> bool:
        pattern = self._patterns[i]
        return pattern is None or pattern.match(model) is not None

    def pick(self, model: str) -> ApiKey:
        """A key for ``model``, chosen by weight among the keys that serve it and
        are awake. Raises ``PermissionDenied`` if none serves it, ``RateLimited``
        if all that do are resting."""
        now = self._clock()
        awake: list[int] = []
        total = 0.0
        soonest = math.inf
        for i, key in enumerate(self.keys):
            if not self._serves(i, model):
                continue
            if self._until[i] > now:
                soonest = min(soonest, self._until[i])
                continue
            awake.append(i)
            total += key.weight
        if not awake:
            if soonest == math.inf:
                raise PermissionDenied(
                    f"No upstream key of this provider may be used for model {model!r}.",
                    code="model_not_allowed",
                    param="model",
                )
            raise RateLimited(
                f"Every upstream key for model {model!r} is resting after rate limits "
                "or refusals.",
                code="upstream_keys_resting",
                retry_after=soonest - now,
            )
        point = self._rng.random() * total
        for i in awake:
            point -= self.keys[i].weight
            if point < 0:
                return self.keys[i]
        return self.keys[awake[-1]]  # float rounding at the very top of the range

    def rest(self, key: ApiKey, seconds: float) -> None:
        """Do not pick ``key`` for ``seconds`` (an existing longer rest stands)."""
        i = self._index[key.name]
        self._until[i] = max(self._until[i], self._clock() + max(seconds, 0.0))

    def resting_for(self, key: ApiKey) -> float:
        """Seconds until ``key`` may be picked again (0 when it is awake)."""
        return max(0.0, self._until[self._index[key.name]] - self._clock())

    def serves(self, model: str) -> bool:
        """Whether any key, resting or not, may be used for ``model``."""
        return any(self._serves(i, model) for i in range(len(self.keys)))

    def blame(
        self,
        key: ApiKey,
        error: GatewayError,
        model: str,
        *,
        cooldown: float,
        retry_after: float | None = None,
    ) -> None:
        """Rest ``key`` as ``error`` warrants, and set ``error.alternate`` when another
        key may serve ``model`` at once (the core then retries immediately).

        A refused key (kind ``auth``) rests for ``cooldown``, unless it is the last
        one that may serve the model: resting it would only hide the problem
        behind "every key is resting". A rate-limited key rests for the
        upstream's ``retry_after``, or ``cooldown`` when it gave none.
        """
        if error.kind == "auth":
            if self.has_alternative(model, excluding=key):
                self.rest(key, cooldown)
                error.alternate = True
        elif error.kind == "rate_limit":
            self.rest(key, cooldown if retry_after is None else retry_after)
            error.alternate = self.has_alternative(model, excluding=key)

    def has_alternative(self, model: str, *, excluding: ApiKey) -> bool:
        """Whether a key other than ``excluding`` serves ``model`` and is awake."""
        now = self._clock()
        return any(
            key.name != excluding.name and self._until[i] <= now and self._serves(i, model)
            for i, key in enumerate(self.keys)
        )


class Credentials:
    """A provider's keys and the request headers for each, built once at startup.

    ``credential(secret)`` gives the headers that carry a key (``{"authorization":
    "Bearer ..."}``, ``{"x-api-key": ...}``); a key's own ``headers`` come over
    those. ``query`` (the provider's query parameters, a key's own over them)
    is kept per key as the string to append to a URL (:meth:`query_for`). Every
    model the provider lists must be servable by some key, or the provider does
    not start.
    """

    __slots__ = ("_anonymous", "_by_key", "_query", "cooldown", "provider", "ring")

    def __init__(
        self,
        provider: str,
        api_key: Secret | None,
        api_keys: Sequence[KeyOptions] | None,
        *,
        cooldown: float,
        base_headers: dict[str, str],
        credential: Callable[[str], dict[str, str]],
        models: Sequence[str] = (),
        query: Mapping[str, str] | None = None,
    ) -> None:
        self.provider = provider
        self.cooldown = cooldown
        self.ring = key_ring(api_key, api_keys)
        streaming = {**base_headers, "accept": "text/event-stream"}
        self._anonymous = (base_headers, streaming)
        self._by_key: dict[str, tuple[dict[str, str], dict[str, str]]] = {}
        self._query: dict[str | None, str] = {None: urlencode(query or {})}
        for key in self.ring.keys if self.ring is not None else ():
            carried = {**credential(key.secret), **key.headers}
            self._by_key[key.name] = ({**base_headers, **carried}, {**streaming, **carried})
            self._query[key.name] = urlencode({**(query or {}), **key.query})
        for model in models if self.ring is not None else ():
            assert self.ring is not None
            if not self.ring.serves(model):
                raise ConfigError(
                    f"provider {provider!r}: no entry of api_keys may be used for model "
                    f"{model!r} (check each key's models)"
                )

    def pick(self, model: str, *, stream: bool) -> tuple[ApiKey | None, dict[str, str]]:
        """A key for ``model`` and the headers to send it with."""
        if self.ring is None:
            return None, self._anonymous[stream]
        key = self.ring.pick(model)
        return key, self._by_key[key.name][stream]

    def query_for(self, key: ApiKey | None) -> str:
        """The query string (without ``?``) for requests with ``key``; may be empty."""
        return self._query[key.name if key is not None else None]

    def blame(
        self, key: ApiKey | None, error: GatewayError, model: str, headers: Mapping[str, str]
    ) -> None:
        """Rest ``key`` as the upstream's answer (``error`` and its ``headers``) warrants."""
        if key is not None and self.ring is not None:
            self.ring.blame(
                key, error, model, cooldown=self.cooldown,
                retry_after=retry_after_seconds(headers),
            )
