"""sluiceway mounted inside other ASGI apps, over real sockets."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType

import httpx
import openai
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

import sluiceway
from sluiceway.testing import RunningServer

from ..conftest import CONTROLLED_CONFIG, ControlledPlugin

EXAMPLES = Path(__file__).parent.parent.parent / "examples"
MESSAGES = [{"role": "user", "content": "hi"}]


class CountingLifespan:
    """Counts how often the gateway's startup and shutdown really ran."""

    def __init__(self) -> None:
        self.entered = 0
        self.exited = 0

    @sluiceway.hookimpl
    def lifespan(self, gateway: sluiceway.Gateway) -> object:
        @asynccontextmanager
        async def manage() -> AsyncIterator[None]:
            self.entered += 1
            await asyncio.sleep(0.05)  # a slow startup widens any race on first requests
            yield
            self.exited += 1

        return manage()


def _load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mounted_in_starlette_with_the_lifespan_chained(
    serve_asgi: Callable[..., RunningServer], controlled_plugin: tuple[str, ControlledPlugin]
) -> None:
    counter = CountingLifespan()
    gateway = sluiceway.create_app(
        CONTROLLED_CONFIG, plugins=[controlled_plugin, ("counter", counter)]
    )

    async def home(request: object) -> PlainTextResponse:
        return PlainTextResponse("host app")

    host = Starlette(
        routes=[Route("/", home), Mount("/llm", app=gateway)], lifespan=gateway.lifespan
    )
    server = serve_asgi(host)
    assert gateway.started and counter.entered == 1  # started by the host's lifespan
    client = openai.OpenAI(api_key="x", base_url=server.url + "/llm/v1", max_retries=0)
    reply = client.chat.completions.create(model="ctl-model", messages=MESSAGES)
    assert reply.choices[0].message.content == "done"
    streamed = [
        c.choices[0].delta.content
        for c in client.chat.completions.create(model="ctl-model", messages=MESSAGES, stream=True)
    ]
    assert streamed == ["part0 ", "part1 ", "part2 "]
    assert [m.id for m in client.models.list()] == ["ctl-model"]
    assert httpx.get(server.url + "/").text == "host app"
    missing = httpx.get(server.url + "/llm/v1/nothing-here")
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == "Invalid URL (GET /v1/nothing-here)."
    server.stop()
    assert counter.exited == 1 and not gateway.started


async def test_mounted_without_a_lifespan_starts_once_under_concurrent_first_requests(
    serve_asgi: Callable[..., RunningServer], controlled_plugin: tuple[str, ControlledPlugin]
) -> None:
    counter = CountingLifespan()
    gateway = sluiceway.create_app(
        CONTROLLED_CONFIG, plugins=[controlled_plugin, ("counter", counter)]
    )
    server = serve_asgi(Starlette(routes=[Mount("/llm", app=gateway)]))
    assert not gateway.started
    client = openai.AsyncOpenAI(api_key="x", base_url=server.url + "/llm/v1", max_retries=0)
    replies = await asyncio.gather(
        *(client.chat.completions.create(model="ctl-model", messages=MESSAGES) for _ in range(20))
    )
    assert [r.choices[0].message.content for r in replies] == ["done"] * 20
    assert counter.entered == 1
    await client.close()


def test_fastapi_example_serves_the_default_stack(
    serve_asgi: Callable[..., RunningServer],
) -> None:
    example = _load_example("mount_in_fastapi")
    server = serve_asgi(example.app)
    assert example.gateway.started
    assert httpx.get(server.url + "/").json() == {"app": "my app", "llm": "/llm/v1"}
    client = openai.OpenAI(api_key="sk-anything", base_url=server.url + "/llm/v1")
    model = client.models.list().data[0].id
    reply = client.chat.completions.create(model=model, messages=MESSAGES)
    assert reply.choices[0].message.content
    chunks = list(
        client.chat.completions.create(
            model=model, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].usage is not None
    server.stop()
    assert not example.gateway.started


def test_starlette_example_serves_the_default_stack(
    serve_asgi: Callable[..., RunningServer],
) -> None:
    example = _load_example("mount_in_starlette")
    server = serve_asgi(example.app)
    client = openai.OpenAI(api_key="sk-anything", base_url=server.url + "/llm/v1")
    model = client.models.list().data[0].id
    assert client.chat.completions.create(model=model, messages=MESSAGES).choices[0].message.content


class FailingProviderPlugin:
    """A provider type whose factory fails, as a bad credential would make it."""

    def __init__(self) -> None:
        self.attempts = 0

    @sluiceway.hookimpl
    def register_provider_types(self, register: Callable[[sluiceway.ProviderType], None]) -> None:
        def fail(ctx: sluiceway.ProviderContext) -> sluiceway.Provider:
            self.attempts += 1
            raise sluiceway.StartupError("the upstream refused our key")

        register(sluiceway.ProviderType("failing", fail))


async def test_a_lazy_start_that_fails_answers_503_and_is_not_retried_at_once(
    serve_asgi: Callable[..., RunningServer],
) -> None:
    plugin = FailingProviderPlugin()
    gateway = sluiceway.create_app(
        {"providers": [{"name": "f", "type": "failing", "models": ["m"]}]},
        plugins=[("failing", plugin)],
    )
    server = serve_asgi(Starlette(routes=[Mount("/llm", app=gateway)]))
    async with httpx.AsyncClient() as client:
        responses = await asyncio.gather(
            *(
                client.post(
                    server.url + "/llm/v1/chat/completions",
                    json={"model": "m", "messages": MESSAGES},
                )
                for _ in range(10)
            )
        )
    for response in responses:
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "startup_failed"
        assert response.headers["x-request-id"]
        assert "refused our key" not in response.text
    assert plugin.attempts == 1  # concurrent first requests shared one attempt
