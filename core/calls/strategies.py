"""Routing strategies: the order in which a model group's deployments are tried.

Each strategy returns every deployment of the group, best first; the dispatch
loop takes the first one that is healthy and falls over to the next. All of
them run in microseconds and keep no per-request state.

* ``fallback``: the configured order.
* ``weighted``: a weighted random first pick, then the rest weighted the same way.
* ``least-busy``: fewest requests in flight first.
* ``lowest-latency``: lowest moving-average latency first; a deployment with
  no measurement yet goes first, so every one gets measured.
* ``prefix-affinity``: requests whose prompts share a prefix go to the same
  deployment (for self-hosted replicas with prefix caches), by consistent
  hashing, so adding a replica moves only the prefixes that land on it.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from .router import Deployment, Routable

__all__ = ["STRATEGIES", "StrategyName", "make_strategy", "prompt_prefix"]

StrategyName = Literal["fallback", "weighted", "least-busy", "lowest-latency", "prefix-affinity"]
Strategy = Callable[["Routable"], list["Deployment"]]

# How much of the prompt decides affinity: enough to tell system prompts and
# conversations apart, little enough to hash in a microsecond or two.
PREFIX_CHARS = 2048
VIRTUAL_NODES = 64
MAX_RING_POINTS = 4096


def prompt_prefix(request: Routable, limit: int = PREFIX_CHARS) -> bytes:
    """The first ``limit`` characters of the conversation, as the cache would see them."""
    parts: list[str] = []
    size = 0
    for message in request.messages:
        content = message.get("content")
        if isinstance(content, list):
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        if not isinstance(content, str):
            continue
        parts.append(f"{message.get('role', '')}:{content}\n")
        size += len(parts[-1])
        if size >= limit:
            break
    return "".join(parts)[:limit].encode("utf-8", "surrogatepass")


def _hash(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def make_strategy(
    name: StrategyName, deployments: Sequence[Deployment], rng: random.Random | None = None
) -> Strategy:
    """Build the ordering function for one group."""
    items = list(deployments)
    rng = rng or random.Random()
    if name == "fallback" or len(items) == 1:
        return lambda request: items
    if name == "weighted":
        weights = [d.weight for d in items]

        def weighted(request: Routable) -> list[Deployment]:
            pool, pool_weights, order = list(items), list(weights), []
            while pool:
                index = rng.choices(range(len(pool)), pool_weights)[0]
                order.append(pool.pop(index))
                pool_weights.pop(index)
            return order

        return weighted
    if name == "least-busy":
        return lambda request: sorted(items, key=lambda d: d.health.inflight)
    if name == "lowest-latency":

        def by_latency(d: Deployment) -> float:
            return -1.0 if d.health.latency is None else d.health.latency

        return lambda request: sorted(items, key=by_latency)
    if name == "prefix-affinity":
        return _ring(items)
    raise ValueError(f"unknown strategy {name!r}")


def _ring(items: list[Deployment]) -> Strategy:
    # Virtual nodes in proportion to weight, the lightest getting VIRTUAL_NODES,
    # and at most MAX_RING_POINTS in all.
    lightest = min(d.weight for d in items)
    shares = [d.weight / lightest for d in items]
    scale = min(float(VIRTUAL_NODES), MAX_RING_POINTS / sum(shares))
    points: list[tuple[int, int]] = sorted(
        (_hash(f"{d.provider_name}/{d.upstream_model}#{v}".encode()), index)
        for index, d in enumerate(items)
        for v in range(max(1, round(scale * shares[index])))
    )
    keys = [p[0] for p in points]

    def by_prefix(request: Routable) -> list[Deployment]:
        start = bisect.bisect(keys, _hash(prompt_prefix(request))) % len(points)
        order: list[Deployment] = []
        seen: set[int] = set()
        # Walk the ring from the prefix's point: the owner first, then the
        # owners that would take over if it were gone, in ring order.
        for offset in range(len(points)):
            index = points[(start + offset) % len(points)][1]
            if index not in seen:
                seen.add(index)
                order.append(items[index])
                if len(order) == len(items):
                    break
        return order

    return by_prefix


STRATEGIES: tuple[str, ...] = (
    "fallback",
    "weighted",
    "least-busy",
    "lowest-latency",
    "prefix-affinity",
)

