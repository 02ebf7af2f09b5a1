"""Model routing: which provider instance serves a public model name, under which id."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .components import ModelInfo
from .errors import NotFound, PermissionDenied, StartupError

if TYPE_CHECKING:
    from .components import Principal, Provider

__all__ = ["Deployment", "ModelAccess", "ModelRouter"]


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


@dataclass(frozen=True, slots=True)
class Deployment:
    """One place a model can be served: a provider instance and its id for the model."""

    provider_name: str
    provider: Provider
    upstream_model: str


class ModelRouter:
    """Resolves a request's ``model`` to a deployment; unknown names are 404 ``model_not_found``."""

    def __init__(self) -> None:
        self._deployments: dict[str, Deployment] = {}
        self._models: list[ModelInfo] = []

    def add(self, public_name: str, deployment: Deployment) -> None:
        """Map a public model name to a deployment; a name served twice is a startup error."""
        existing = self._deployments.get(public_name)
        if existing is not None:
            raise StartupError(
                f"model {public_name!r} is served by both provider {existing.provider_name!r} "
                f"and provider {deployment.provider_name!r}; give one of them another name"
            )
        self._deployments[public_name] = deployment
        self._models.append(ModelInfo(public_name, owned_by=deployment.provider_name))

    def resolve(self, model: str) -> Deployment:
        deployment = self._deployments.get(model)
        if deployment is None:
            raise self.not_found(model)
        return deployment

    @staticmethod
    def not_found(model: str) -> NotFound:
        """The 404 for a model that does not exist, or that the caller may not see."""
        return NotFound(
            f"The model '{model}' does not exist or you do not have access to it.",
            code="model_not_found",
            param="model",
        )

    def models(self) -> Iterable[ModelInfo]:
        return tuple(self._models)
