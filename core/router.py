"""Model routing: which provider instance serves a public model name, under which id."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .components import ModelInfo
from .errors import NotFound, StartupError

if TYPE_CHECKING:
    from .components import Provider

__all__ = ["Deployment", "ModelRouter"]


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
            raise NotFound(
                f"The model '{model}' does not exist or you do not have access to it.",
                code="model_not_found",
                param="model",
            )
        return deployment

    def models(self) -> Iterable[ModelInfo]:
        return tuple(self._models)
