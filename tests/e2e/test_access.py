"""A principal's model allow-list, and routes whose parameter holds a model id."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest

import sluiceway
from sluiceway.testing import RunningServer

MESSAGES = [{"role": "user", "content": "hi"}]


class HeaderKeys:
    """An auth strategy: ``Bearer team-a`` may use ``mock-*`` only; ``Bearer root`` anything."""

    async def authenticate(self, ctx: sluiceway.RequestContext) -> sluiceway.Principal | None:
        header = ctx.header(b"authorization")
        if header is None:
            return None
        token = header.removeprefix("Bearer ")
        if token == "team-a":
            return sluiceway.Principal("key-a", allowed_models=("mock-*",))
        if token == "root":
            return sluiceway.Principal("key-root")
        raise sluiceway.AuthenticationFailed("Unknown key.")


class HeaderKeysPlugin:
    @sluiceway.hookimpl
    def register_auth_strategies(
        self, register: Callable[[sluiceway.AuthStrategyType], None]
    ) -> None:
        register(sluiceway.AuthStrategyType("header-keys", lambda options, gw: HeaderKeys()))


CONFIG = {
    "gateway": {"plugins": ["mock"]},
    "auth": {"chain": ["header-keys"]},
    "providers": [
        {"name": "mock", "type": "mock", "models": ["mock-gpt", "meta-llama/Llama-3-8B"]},
    ],
}


@pytest.fixture
def server(gateway_factory: Callable[..., RunningServer]) -> RunningServer:
    return gateway_factory(CONFIG, plugins=[("header-keys", HeaderKeysPlugin())])


def test_allowed_models_are_enforced(server: RunningServer) -> None:
    team_a = openai.OpenAI(api_key="team-a", base_url=server.base_url, max_retries=0)
    assert team_a.chat.completions.create(model="mock-gpt", messages=MESSAGES).choices
    with pytest.raises(openai.PermissionDeniedError) as info:
        team_a.chat.completions.create(model="meta-llama/Llama-3-8B", messages=MESSAGES)
    assert info.value.code == "model_not_allowed"
    assert info.value.param == "model"
    assert [m.id for m in team_a.models.list()] == ["mock-gpt"]
    with pytest.raises(openai.NotFoundError):
        team_a.models.retrieve("meta-llama/Llama-3-8B")  # hidden, not confirmed


def test_model_ids_with_slashes_are_retrievable(server: RunningServer) -> None:
    root = openai.OpenAI(api_key="root", base_url=server.base_url, max_retries=0)
    assert [m.id for m in root.models.list()] == ["mock-gpt", "meta-llama/Llama-3-8B"]
    assert root.models.retrieve("meta-llama/Llama-3-8B").id == "meta-llama/Llama-3-8B"
    encoded = httpx.get(
        server.base_url + "/models/meta-llama%2FLlama-3-8B",
        headers={"authorization": "Bearer root"},
    )
    assert encoded.json()["id"] == "meta-llama/Llama-3-8B"


def test_a_parameter_route_that_would_shadow_the_core_is_refused() -> None:
    async def endpoint(scope: object, receive: object, send: object) -> None:
        raise AssertionError("never called")

    class Shadow:
        @sluiceway.hookimpl
        def register_routes(self, register: Callable[[sluiceway.Route], None]) -> None:
            register(sluiceway.Route("/v1/models/{id}", endpoint, ("get",)))

    with pytest.raises(sluiceway.PluginError) as info:
        sluiceway.create_app({}, plugins=[("shadow", Shadow())])
    assert str(info.value) == (
        "plugin 'shadow' registers /v1/models/{id}, which clashes with /v1/models/{model} "
        "registered by plugin 'sluiceway.core'"
    )


def test_async_hook_implementations_are_refused() -> None:
    class Async:
        @sluiceway.hookimpl
        async def register_routes(self, register: Callable[[sluiceway.Route], None]) -> None:
            pass

    with pytest.raises(sluiceway.PluginError) as info:
        sluiceway.create_app({}, plugins=[("async", Async())])
    assert "implements register_routes as an async function" in str(info.value)


def test_a_middleware_factory_that_fails_names_its_plugin(tmp_path: Path) -> None:
    def broken(app: object, gateway: object) -> object:
        raise KeyError("redis_url")

    class Broken:
        @sluiceway.hookimpl
        def register_middleware(self, register: Callable[[sluiceway.Middleware], None]) -> None:
            register(sluiceway.Middleware("limiter", broken))  # type: ignore[arg-type]

    with pytest.raises(sluiceway.PluginError) as info:
        sluiceway.create_app({}, plugins=[("broken", Broken())])
    assert str(info.value) == (
        "plugin 'broken': middleware 'limiter' failed to build: KeyError: 'redis_url'"
    )
