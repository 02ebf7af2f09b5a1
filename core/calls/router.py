"""Model routing: which deployments serve a public model name, in what order.

A *deployment* is one provider instance serving one upstream model id. A
*model group* is what a client asks for by name: every model a provider lists
is a group of one deployment, and each ``[[aliases]]`` entry is a group of
several, tried in the order its strategy gives (:mod:`sluiceway.calls.strategies`).
Deployments of the same provider share its pool; deployments of the same
provider and upstream model share their health, whichever groups they are in.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..components import ModelInfo, ProviderCapabilities
from ..errors import NotFound, PermissionDenied

if TYPE_CHECKING:
    from ..components import Principal, Provider
    from .health import DeploymentHealth
    from .pools import SlotPool
    from .strategies import Strategy

__all__ = ["Deployment", "ModelAccess", "ModelGroup", "ModelRouter", "Routable"]


class Routable(Protocol):
    """What routing reads and writes on a request, whatever its dialect
    (``ChatRequest``, ``MessagesRequest``): ``messages`` (prefix affinity reads
    their text) and ``upstream_model`` (set to the chosen deployment's id)."""

    messages: list[dict[str, Any]]
    upstream_model: str


@dataclass(frozen=True, slots=True, eq=False)
class Deployment:
    """One place a model can be served: a provider instance and its id for the model."""

    provider_name: str
    provider: Provider
    upstream_model: str
    pool: SlotPool
    health: DeploymentHealth
    weight: float = 1.0
    # Resolved from the provider when the deployment is built.
    capabilities: ProviderCapabilities = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.capabilities is None:
            object.__setattr__(self, "capabilities", ProviderCapabilities.of(self.provider))


@dataclass(slots=True, eq=False)
class ModelGroup:
    """A public model name and the deployments that serve it."""

    name: str
    deployments: list[Deployment]
    strategy: Strategy
    max_retries: int = 2
    timeout: float = 300.0
    fallback_on: frozenset[str] = field(default_factory=frozenset)
    owned_by: str = ""

    def order(self, request: Routable) -> list[Deployment]:
        """Every deployment, best first, for this request."""
        return self.strategy(request)


class ModelRouter:
    """Resolves a request's ``model`` to its group; unknown names are 404 ``model_not_found``."""

    def __init__(self) -> None:
        self._groups: dict[str, ModelGroup] = {}

    def add(self, group: ModelGroup) -> None:
        if group.name in self._groups:
            raise ValueError(f"model {group.name!r} is already routed")
        self._groups[group.name] = group

    def resolve(self, model: str) -> ModelGroup:
        group = self._groups.get(model)
        if group is None:
            raise self.not_found(model)
        return group

    @staticmethod
    def not_found(model: str) -> NotFound:
        """The 404 for a model that does not exist, or that the caller may not see."""
        return NotFound(
            f"The model '{model}' does not exist or you do not have access to it.",
            code="model_not_found",
            param="model",
        )

    def groups(self) -> Iterable[ModelGroup]:
        return tuple(self._groups.values())

    def models(self) -> Iterable[ModelInfo]:
        return tuple(ModelInfo(g.name, owned_by=g.owned_by) for g in self._groups.values())


class ModelAccess:
    """Checks a principal's ``allowed_models`` globs, compiled once per pattern set."""

    __slots__ = ("_compiled",)

    MAX_PATTERN_SETS = 1024

    def __init__(self) -> None:
        self._compiled: dict[tuple[str, ...], re.Pattern[str]] = {}

    def allows(self, principal: Principal | None, model: str) -> bool:
        if principal is None or principal.allowed_models is None:
            return True
        patterns = principal.allowed_models
        compiled = self._compiled.get(patterns)
        if compiled is None:
            if len(self._compiled) >= self.MAX_PATTERN_SETS:
                self._compiled.clear()
            compiled = self._compiled[patterns] = re.compile(
                "|".join(fnmatch.translate(p) for p in patterns) or "(?!)"
            )
        return compiled.match(model) is not None

    def check(self, principal: Principal | None, model: str) -> None:
        """Raise 403 ``model_not_allowed`` unless the principal may use ``model``."""
        if not self.allows(principal, model):
            raise PermissionDenied(
                f"Your credential may not use the model '{model}'.",
                code="model_not_allowed",
                param="model",
            )
