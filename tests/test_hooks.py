"""One ``test_hook_<name>`` per hook, each driving the hook for real.

The plugins are in-process objects whose methods carry ``@sluiceway.hookimpl``,
passed to the gateway as ``plugins=[(name, obj)]``; the gateway is served on a
real socket by ``gateway_factory`` and driven with httpx or the OpenAI SDK.
tests/test_docs.py fails if a hook has no test here.

The code between ``# [docs:NAME]`` and ``# [/docs:NAME]`` is shown verbatim in
docs/hooks.md, and tests/test_docs.py fails if the two drift apart: the
examples in the docs are the code tested here.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import click
import httpx
import msgspec
import openai
import pytest
from click.testing import CliRunner
from openai.types.chat import ChatCompletionMessageParam

import sluiceway
from sluiceway.cli import build_cli
from sluiceway.plugins import load_plugins
from sluiceway.testing import RunningServer

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Factory = Callable[..., RunningServer]

USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "abc"}]


# --------------------------------------------------------------------------
# register_provider_types
# --------------------------------------------------------------------------

# [docs:register_provider_types]
class ReverseOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Keys of a ``type = "reverse"`` provider table, besides name/type/models."""

    prefix: str = ""


class ReverseProvider:
    """Answers with the last message reversed."""

    def __init__(self, options: ReverseOptions) -> None:
        self.prefix = options.prefix

    def answer(self, request: sluiceway.ChatRequest) -> str:
        return self.prefix + str(request.messages[-1]["content"])[::-1]

    async def chat(self, request: sluiceway.ChatRequest) -> dict[str, Any]:
        return {
            "id": "chatcmpl-reverse", "object": "chat.completion", "created": 0,
            "model": request.upstream_model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": self.answer(request)}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }

    async def stream(self, request: sluiceway.ChatRequest) -> AsyncIterator[dict[str, Any]]:
        for char in self.answer(request):
            yield {
                "id": "chatcmpl-reverse", "object": "chat.completion.chunk", "created": 0,
                "model": request.upstream_model,
                "choices": [{"index": 0, "delta": {"content": char}, "finish_reason": None}],
            }

    async def aclose(self) -> None:
        pass


class ReversePlugin:
    @sluiceway.hookimpl
    def register_provider_types(self, register: Callable[[sluiceway.ProviderType], None]) -> None:
        register(sluiceway.ProviderType(
            name="reverse",
            factory=lambda ctx: ReverseProvider(ctx.options),
            config_model=ReverseOptions,
        ))
# [/docs:register_provider_types]


REVERSE_CONFIG: dict[str, Any] = {
    "providers": [{
        "name": "rev", "type": "reverse", "prefix": "> ",
        "models": ["backwards", {"name": "alias", "upstream": "backwards-v2"}],
    }],
}


def test_hook_register_provider_types(gateway_factory: Factory) -> None:
    server = gateway_factory(REVERSE_CONFIG, plugins=[("reverse", ReversePlugin())])
    with openai.OpenAI(api_key="unused", base_url=server.base_url, max_retries=0) as client:
        reply = client.chat.completions.create(model="backwards", messages=USER)
        assert reply.choices[0].message.content == "> cba"
        # A model table maps a public name to the provider's own id for it.
        alias = client.chat.completions.create(model="alias", messages=USER)
        assert alias.model == "backwards-v2"
        stream = client.chat.completions.create(
            model="backwards", messages=USER, stream=True,
        )
        assert "".join(chunk.choices[0].delta.content or "" for chunk in stream) == "> cba"
        assert sorted(m.id for m in client.models.list()) == ["alias", "backwards"]
        with pytest.raises(openai.NotFoundError) as missing:
            client.chat.completions.create(model="forwards", messages=USER)
        assert missing.value.code == "model_not_found"

    # The provider's config_model validates its table: unknown keys name the key.
    bad = {"providers": [{"name": "rev", "type": "reverse", "colour": "red"}]}
    with pytest.raises(sluiceway.ConfigError, match=r"providers\[0\]\.colour: unknown key"):
        sluiceway.create_app(bad, plugins=[("reverse", ReversePlugin())])
    # A type that no listed plugin registered.
    with pytest.raises(sluiceway.ConfigError, match=r"unknown provider type 'reverse'"):
        sluiceway.create_app(REVERSE_CONFIG)
    # The same type name from two plugins: an error naming both.
    with pytest.raises(sluiceway.PluginError) as twice:
        sluiceway.create_app({}, plugins=[("reverse", ReversePlugin()), ("again", ReversePlugin())])
    assert str(twice.value) == (
        "plugin 'again' registers provider type 'reverse', already registered by plugin 'reverse'"
    )


# --------------------------------------------------------------------------
# register_routes
# --------------------------------------------------------------------------

# [docs:register_routes]
async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    ctx: sluiceway.RequestContext = scope[sluiceway.CONTEXT_KEY]
    body = b'{"hello": "world", "request_id": "%s"}' % ctx.request_id.encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


class HelloPlugin:
    @sluiceway.hookimpl
    def register_routes(self, register: Callable[[sluiceway.Route], None]) -> None:
        register(sluiceway.Route("/hello", hello, methods=("GET",), name="hello", public=True))
# [/docs:register_routes]


class ClashPlugin:
    @sluiceway.hookimpl
    def register_routes(self, register: Callable[[sluiceway.Route], None]) -> None:
        register(sluiceway.Route("/healthz", hello))


def test_hook_register_routes(gateway_factory: Factory) -> None:
    server = gateway_factory({}, plugins=[("hello", HelloPlugin())])
    with httpx.Client(base_url=server.url) as client:
        response = client.get("/hello")
        assert response.status_code == 200
        assert response.json() == {"hello": "world", "request_id": response.headers["x-request-id"]}
        # A well-formed incoming request id is kept; anything else is replaced.
        assert client.get("/hello", headers={"x-request-id": "trace-42"}).json()["request_id"] == (
            "trace-42"
        )
        assert client.get("/hello", headers={"x-request-id": "a b"}).json()["request_id"] != "a b"
        refused = client.post("/hello")
        assert refused.status_code == 405
        assert refused.headers["allow"] == "GET"
        assert refused.json()["error"]["code"] == "method_not_allowed"

    # A plugin that takes `config` gets the gateway's, and may route by its options.
    class Configured:
        @sluiceway.hookimpl
        def register_routes(self, register: Callable[[sluiceway.Route], None],
                            config: sluiceway.Config) -> None:
            path = config.plugin_options("configured").get("path", "/default")
            register(sluiceway.Route(path, hello, public=True))

    gateway = sluiceway.create_app({"plugin": {"configured": {"path": "/chosen"}}},
                                   plugins=[("configured", Configured())])
    assert [r.item.path for r in gateway.registry.routes if r.plugin == "configured"] == [
        "/chosen"]

    # A path and method the core already serves: create_app refuses, naming both owners.
    with pytest.raises(sluiceway.PluginError) as clash:
        sluiceway.create_app({}, plugins=[("clash", ClashPlugin())])
    assert str(clash.value) == (
        "plugin 'clash' registers GET /healthz, already registered by plugin 'sluiceway.core'"
    )


# --------------------------------------------------------------------------
# register_middleware
# --------------------------------------------------------------------------

# [docs:register_middleware]
class Stamp:
    """Notes each request it sees and stamps the response with ``x-stamp``."""

    def __init__(self, app: ASGIApp, label: str, seen: list[str]) -> None:
        self.app = app
        self.label = label
        self.header = (b"x-stamp", label.encode())
        self.seen = seen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan, websocket: straight through, untouched
            await self.app(scope, receive, send)
            return
        self.seen.append(self.label)

        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), self.header]
            await send(message)

        await self.app(scope, receive, stamped)


class StampPlugin:
    def __init__(self, name: str, seen: list[str]) -> None:
        self.name = name
        self.seen = seen

    @sluiceway.hookimpl
    def register_middleware(self, register: Callable[[sluiceway.Middleware], None]) -> None:
        for slot in ("edge", "before_auth", "after_auth"):
            label = f"{self.name}:{slot}"
            register(sluiceway.Middleware(
                label, lambda app, gateway, label=label: Stamp(app, label, self.seen), slot=slot,
            ))
# [/docs:register_middleware]


def test_hook_register_middleware(
    gateway_factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEAM_A_KEY", "sk-team-a")
    seen: list[str] = []
    server = gateway_factory(
        AUTH_CONFIG,
        plugins=[("first", StampPlugin("first", seen)), ("second", StampPlugin("second", seen)),
                 ("keys", KeysPlugin())],
    )
    with httpx.Client(base_url=server.base_url) as client:
        ok = client.get("/models", headers={"authorization": "Bearer sk-team-a"})
        assert ok.status_code == 200
        # In a slot, the plugin listed first is outermost: it sees the request
        # first and the response last.
        assert seen == ["first:edge", "second:edge", "first:before_auth", "second:before_auth",
                        "first:after_auth", "second:after_auth"]
        assert ok.headers.get_list("x-stamp") == [
            "second:after_auth", "first:after_auth", "second:before_auth", "first:before_auth",
            "second:edge", "first:edge"]
        seen.clear()
        refused = client.get("/models")
        assert refused.status_code == 401
        # before_auth ran; the auth chain refused, so after_auth never did.
        assert seen == ["first:edge", "second:edge", "first:before_auth", "second:before_auth"]
        # The refusal is rendered by the request context, between the edge and the
        # other slots: only edge middleware sees it go out.
        assert refused.headers.get_list("x-stamp") == ["second:edge", "first:edge"]

    # Non-http scopes pass through each registered middleware untouched.
    gateway = server.gateway
    reached: list[Scope] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append(scope)

    async def nothing() -> Message:
        return {}

    async def ignore(message: Message) -> None:
        pass

    async def pass_through() -> None:
        for registered in gateway.registry.middleware:
            app = registered.item.factory(inner, gateway)
            await app({"type": "lifespan"}, nothing, ignore)
            await app({"type": "websocket", "path": "/ws"}, nothing, ignore)

    seen.clear()
    asyncio.run(pass_through())
    assert reached == [{"type": "lifespan"}, {"type": "websocket", "path": "/ws"}] * 6
    assert seen == []


# --------------------------------------------------------------------------
# register_auth_strategies
# --------------------------------------------------------------------------

# [docs:register_auth_strategies]
class StaticKeysOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[auth.static-keys]``: key id -> secret, e.g. ``team-a = "env:TEAM_A_KEY"``."""

    keys: dict[str, sluiceway.Secret]


class StaticKeys:
    """Accepts ``Authorization: Bearer <secret>`` for any configured secret."""

    def __init__(self, options: StaticKeysOptions) -> None:
        self.key_ids = {secret.reveal(): key_id for key_id, secret in options.keys.items()}

    async def authenticate(self, ctx: sluiceway.RequestContext) -> sluiceway.Principal | None:
        header = ctx.header(b"authorization")
        if header is None or not header.startswith("Bearer "):
            return None  # no credential of ours: the next strategy in the chain is asked
        key_id = self.key_ids.get(header.removeprefix("Bearer "))
        if key_id is None:
            raise sluiceway.AuthenticationFailed("Incorrect API key provided.")
        return sluiceway.Principal(key_id=key_id)


class TrustedHeader:
    """Accepts ``x-user`` as set by a trusted proxy in front of the gateway."""

    async def authenticate(self, ctx: sluiceway.RequestContext) -> sluiceway.Principal | None:
        user = ctx.header(b"x-user")
        return sluiceway.Principal(key_id=f"user:{user}") if user else None


class KeysPlugin:
    @sluiceway.hookimpl
    def register_auth_strategies(
        self, register: Callable[[sluiceway.AuthStrategyType], None]
    ) -> None:
        register(sluiceway.AuthStrategyType(
            "static-keys", lambda options, gateway: StaticKeys(options), StaticKeysOptions,
        ))
        register(sluiceway.AuthStrategyType(
            "trusted-header", lambda options, gateway: TrustedHeader(),
        ))
# [/docs:register_auth_strategies]


AUTH_CONFIG: dict[str, Any] = {
    "auth": {
        "chain": ["static-keys", "trusted-header"],
        "static-keys": {"keys": {"team-a": "env:TEAM_A_KEY"}},
    },
}


async def whoami(scope: Scope, receive: Receive, send: Send) -> None:
    principal = scope[sluiceway.CONTEXT_KEY].principal
    body = principal.key_id.encode() if principal else b"nobody"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


class WhoAmIPlugin:
    @sluiceway.hookimpl
    def register_routes(self, register: Callable[[sluiceway.Route], None]) -> None:
        register(sluiceway.Route("/whoami", whoami))


def test_hook_register_auth_strategies(
    gateway_factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEAM_A_KEY", "sk-team-a")
    plugins = [("keys", KeysPlugin()), ("whoami", WhoAmIPlugin())]
    server = gateway_factory(AUTH_CONFIG, plugins=plugins)
    with httpx.Client(base_url=server.url) as client:
        bearer = {"authorization": "Bearer sk-team-a"}
        assert client.get("/whoami", headers=bearer).text == "team-a"
        # The first strategy found no bearer token; the second accepted x-user.
        assert client.get("/whoami", headers={"x-user": "ada"}).text == "user:ada"

        missing = client.get("/whoami")
        assert missing.status_code == 401
        assert missing.json() == {"error": {
            "message": "Missing credentials: send your API key as 'Authorization: Bearer <key>' "
            "(or in an 'x-api-key' header).",
            "type": "authentication_error", "code": "missing_api_key", "param": None,
        }}
        assert missing.headers["x-request-id"].startswith("req_")
        # A credential that is present but wrong ends the chain: x-user is not asked.
        wrong = client.get("/whoami", headers={"authorization": "Bearer nope", "x-user": "ada"})
        assert wrong.status_code == 401
        assert wrong.json()["error"]["code"] == "invalid_api_key"
        # Public routes skip the chain; unknown paths do not (no probing without a key).
        assert client.get("/healthz").status_code == 200
        assert client.get("/no/such/path").status_code == 401
        assert client.get("/no/such/path", headers=bearer).status_code == 404

    with openai.OpenAI(api_key="sk-team-a", base_url=server.base_url, max_retries=0) as sdk:
        assert list(sdk.models.list()) == []
    with openai.OpenAI(api_key="sk-wrong", base_url=server.base_url, max_retries=0) as sdk:
        with pytest.raises(openai.AuthenticationError):
            sdk.models.list()

    # [auth.<name>] options are validated by the strategy's config_model.
    typo = {"auth": {"chain": ["static-keys"], "static-keys": {"kyes": {}}}}
    with pytest.raises(sluiceway.ConfigError, match=r"auth\.static-keys\.kyes: unknown key"):
        sluiceway.create_app(typo, plugins=plugins)
    monkeypatch.delenv("TEAM_A_KEY")
    with pytest.raises(sluiceway.ConfigError, match="environment variable TEAM_A_KEY is not set"):
        sluiceway.create_app(AUTH_CONFIG, plugins=plugins)
    with pytest.raises(sluiceway.ConfigError, match=r"auth\.chain\[0\]: unknown auth strategy"):
        sluiceway.create_app({"auth": {"chain": ["jwt"]}}, plugins=plugins)


# --------------------------------------------------------------------------
# register_commands
# --------------------------------------------------------------------------

# [docs:register_commands]
class GreeterPlugin:
    @sluiceway.hookimpl
    def register_commands(self, cli: click.Group) -> None:
        @cli.command()
        @click.option("--name", default="world", help="Who to greet.")
        def greet(name: str) -> None:
            """Say hello (a plugin's own command)."""
            click.echo(f"hello, {name}")
# [/docs:register_commands]


# The same plugin as an installed distribution, so that `sluiceway` finds it
# through its entry point, as it finds every real plugin.
GREETER_DIST = {
    "pyproject.toml": """
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "sluiceway-hooktest-greeter"
        version = "0.0.1"

        [project.entry-points.sluiceway]
        hooktest-greeter = "sluiceway_hooktest_greeter"

        [tool.setuptools]
        py-modules = ["sluiceway_hooktest_greeter"]
    """,
    "sluiceway_hooktest_greeter.py": """
        import click
        import sluiceway

        @sluiceway.hookimpl
        def register_commands(cli):
            @cli.command()
            @click.option("--name", default="world", help="Who to greet.")
            def greet(name):
                \"\"\"Say hello (a plugin's own command).\"\"\"
                click.echo(f"hello, {name}")
    """,
}


@pytest.fixture
def greeter_installed(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    source = tmp_path_factory.mktemp("greeter-src")
    target = tmp_path_factory.mktemp("greeter-site")
    for name, text in GREETER_DIST.items():
        (source / name).write_text(textwrap.dedent(text))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(source)],
        check=True, capture_output=True,
    )
    monkeypatch.syspath_prepend(str(target))
    yield target
    sys.modules.pop("sluiceway_hooktest_greeter", None)


def test_hook_register_commands(greeter_installed: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    config = tmp_path / "plugins.toml"
    config.write_text('[gateway]\nplugins = ["hooktest-greeter"]\n')
    cli = build_cli(str(config))
    assert {"serve", "check", "plugins", "greet"} <= set(cli.commands)
    result = runner.invoke(cli, ["greet", "--name", "Ada"])
    assert (result.exit_code, result.output) == (0, "hello, Ada\n")
    # Only listed plugins are imported, so an unlisted one adds nothing.
    config.write_text("[gateway]\nplugins = []\n")
    assert "greet" not in build_cli(str(config)).commands

    # The in-process form of the same plugin, registered by object.
    group = click.Group("sluiceway")
    plugin_set = load_plugins([], extra=[("greeter", GreeterPlugin())])
    assert [p.name for p, _ in plugin_set.call_each("register_commands", cli=group)] == ["greeter"]
    assert runner.invoke(group, ["greet"]).output == "hello, world\n"


# --------------------------------------------------------------------------
# register_event_sinks
# --------------------------------------------------------------------------

# [docs:register_event_sinks]
class Tally:
    """Counts requests by status and keeps the time to first token of streams.

    ``handle`` runs on the event loop for every event: it only updates memory."""

    def __init__(self) -> None:
        self.by_status: dict[int, int] = {}
        self.ttft: list[float] = []
        self.seen: list[sluiceway.events.Event] = []

    def handle(self, event: sluiceway.events.Event) -> None:
        self.seen.append(event)
        if isinstance(event, sluiceway.events.RequestEnded):
            self.by_status[event.status] = self.by_status.get(event.status, 0) + 1
        elif isinstance(event, sluiceway.events.FirstToken):
            self.ttft.append(event.ttft)


class TallyPlugin:
    def __init__(self, tally: Tally) -> None:
        self.tally = tally

    @sluiceway.hookimpl
    def register_event_sinks(self, register: Callable[[sluiceway.EventSinkType], None]) -> None:
        register(sluiceway.EventSinkType("tally", lambda gateway: self.tally))
# [/docs:register_event_sinks]


class BrokenSinkPlugin:
    @sluiceway.hookimpl
    def register_event_sinks(self, register: Callable[[sluiceway.EventSinkType], None]) -> None:
        class Broken:
            def handle(self, event: sluiceway.events.Event) -> None:
                raise RuntimeError("this sink is broken")

        register(sluiceway.EventSinkType("broken", lambda gateway: Broken()))


def test_hook_register_event_sinks(gateway_factory: Factory) -> None:
    tally = Tally()
    server = gateway_factory(REVERSE_CONFIG, plugins=[
        ("reverse", ReversePlugin()), ("broken", BrokenSinkPlugin()), ("tally", TallyPlugin(tally)),
    ])
    with openai.OpenAI(api_key="unused", base_url=server.base_url, max_retries=0) as client:
        plain = client.chat.completions.with_raw_response.create(model="backwards",
                                                                 messages=USER)
        streamed = list(client.chat.completions.create(model="alias", messages=USER,
                                                       stream=True))
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="forwards", messages=USER)
    # RequestEnded comes once the last byte is sent: the client may see its answer
    # a moment before the gateway records the end.
    for _ in range(200):
        if sum(tally.by_status.values()) == 3:
            break
        time.sleep(0.01)
    # A failing sink is counted and logged; the requests were answered all the same.
    assert plain.http_response.status_code == 200 and streamed
    assert server.gateway.events.failures["broken"] >= 10
    assert tally.by_status == {200: 2, 404: 1}
    assert len(tally.ttft) == 1 and tally.ttft[0] > 0

    def kinds(request_id: str) -> list[str]:
        return [type(e).__name__ for e in tally.seen if e.request_id == request_id]

    plain_id = plain.http_response.headers["x-request-id"]
    assert kinds(plain_id) == ["RequestStarted", "AttemptStarted", "AttemptEnded",
                               "RequestEnded"]
    ended = [e for e in tally.seen if isinstance(e, sluiceway.events.RequestEnded)]
    first = ended[0]
    assert (first.route, first.model, first.provider, first.status, first.stream) == (
        "chat", "backwards", "rev", 200, False)
    assert first.usage == {"prompt_tokens": 1, "completion_tokens": 1}
    assert first.attempts == 1 and first.upstream is not None and first.overhead is not None
    assert 0 <= first.overhead <= first.duration
    assert ended[1].stream and ended[1].model == "alias"
    assert (ended[2].status, ended[2].error_code, ended[2].provider) == (
        404, "model_not_found", None)
    attempt = next(e for e in tally.seen if isinstance(e, sluiceway.events.AttemptEnded))
    assert (attempt.deployment, attempt.status, attempt.next) == ("rev/backwards", 200, "done")


# --------------------------------------------------------------------------
# register_call_policies
# --------------------------------------------------------------------------

# [docs:register_call_policies]
class CallQuota:
    """Allows each key a number of model calls, refuses the rest with 429, and
    tallies the tokens of every call once it is settled."""

    kinds = frozenset({"chat", "messages"})

    def __init__(self, name: str, calls: int) -> None:
        self.name = name
        self.calls = calls
        self.used: dict[str, int] = {}
        self.tokens: dict[str, int] = {}
        self.settled: list[tuple[str, int, str | None]] = []

    async def admit(self, call: sluiceway.ModelCall) -> sluiceway.Settle | None:
        key = call.key_id or "anonymous"
        used = self.used.get(key, 0)
        if used >= self.calls:
            raise sluiceway.RateLimited(f"{key} has used its {self.calls} calls.",
                                        code="quota_exceeded", retry_after=60)
        self.used[key] = used + 1
        # Sent with the answer (a stream's start), or with the error.
        call.headers["x-calls-left"] = str(self.calls - used - 1)

        async def settle(call: sluiceway.ModelCall) -> None:
            # Exactly once per admitted call: answered, failed, or hung up on.
            if call.usage is not None:
                self.tokens[key] = self.tokens.get(key, 0) + call.usage.total_tokens
            error = call.error.code if call.error is not None else None
            self.settled.append((call.model, call.status, error))

        return settle


class QuotaPlugin:
    def __init__(self, quota: CallQuota) -> None:
        self.quota = quota

    @sluiceway.hookimpl
    def register_call_policies(
        self, register: Callable[[sluiceway.CallPolicyType], None]
    ) -> None:
        register(sluiceway.CallPolicyType(self.quota.name, lambda gateway: self.quota))
# [/docs:register_call_policies]


class NoAliasPlugin:
    """Refuses calls for the model ``alias``, after the quota admitted them."""

    @sluiceway.hookimpl
    def register_call_policies(
        self, register: Callable[[sluiceway.CallPolicyType], None]
    ) -> None:
        class NoAlias:
            name = "no-alias"
            kinds = frozenset({"chat"})

            async def admit(self, call: sluiceway.ModelCall) -> None:
                if call.model == "alias":
                    raise sluiceway.PermissionDenied("Not that one.", code="no_alias")

        register(sluiceway.CallPolicyType("no-alias", lambda gateway: NoAlias()))


class FailingSettlePlugin:
    """A policy whose settlement raises: logged, and the answer is unchanged."""

    @sluiceway.hookimpl
    def register_call_policies(
        self, register: Callable[[sluiceway.CallPolicyType], None]
    ) -> None:
        class Failing:
            name = "failing"
            kinds = frozenset({"chat"})

            async def admit(self, call: sluiceway.ModelCall) -> sluiceway.Settle:
                async def settle(call: sluiceway.ModelCall) -> None:
                    raise RuntimeError("the ledger is gone")

                return settle

        register(sluiceway.CallPolicyType("failing", lambda gateway: Failing()))


def test_hook_register_call_policies(
    gateway_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    quota = CallQuota("quota", calls=3)
    server = gateway_factory(REVERSE_CONFIG, plugins=[
        ("reverse", ReversePlugin()), ("quota", QuotaPlugin(quota)),
        ("no-alias", NoAliasPlugin()), ("failing", FailingSettlePlugin()),
    ])
    with openai.OpenAI(api_key="unused", base_url=server.base_url, max_retries=0) as client:
        plain = client.chat.completions.with_raw_response.create(model="backwards",
                                                                 messages=USER)
        # An unknown model is no model call: never admitted, never counted.
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="forwards", messages=USER)
        # Refused by the policy after the quota: the quota's call is settled as a 403.
        with pytest.raises(openai.PermissionDeniedError) as denied:
            client.chat.completions.create(model="alias", messages=USER)
        streamed = client.chat.completions.with_raw_response.create(
            model="backwards", messages=USER, stream=True)
        chunks = list(streamed.parse())
        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(model="backwards", messages=USER)
    assert plain.http_response.headers["x-calls-left"] == "2"
    assert denied.value.response.headers["x-calls-left"] == "1"
    assert streamed.http_response.headers["x-calls-left"] == "0" and chunks
    assert (refused.value.code, refused.value.response.headers["retry-after"]) == (
        "quota_exceeded", "60")
    assert quota.settled == [("backwards", 200, None), ("alias", 403, "no_alias"),
                             ("backwards", 200, None)]
    # The plain answer's usage (the stream's reverse provider reports none).
    assert quota.tokens == {"anonymous": 2}
    failures = [r.getMessage() for r in caplog.records if r.name == "sluiceway.calls"]
    assert failures == ["call policy 'failing' failed to settle a call: RuntimeError: "
                        "the ledger is gone"]


def test_a_call_policy_must_have_admit_and_kinds() -> None:
    class Bad:
        name = "bad"

    class BadPlugin:
        @sluiceway.hookimpl
        def register_call_policies(
            self, register: Callable[[sluiceway.CallPolicyType], None]
        ) -> None:
            register(sluiceway.CallPolicyType("bad", lambda gateway: Bad()))

    with pytest.raises(sluiceway.PluginError, match="call policy 'bad' needs an async admit"):
        sluiceway.create_app(REVERSE_CONFIG, plugins=[("reverse", ReversePlugin()),
                                                      ("bad", BadPlugin())])


# --------------------------------------------------------------------------
# lifespan
# --------------------------------------------------------------------------

# [docs:lifespan]
class ConnectionPlugin:
    """Opens a resource when the gateway starts and closes it when it stops."""

    def __init__(self, name: str, events: list[str]) -> None:
        self.name = name
        self.events = events

    @sluiceway.hookimpl
    def lifespan(self, gateway: sluiceway.Gateway) -> AbstractAsyncContextManager[None]:
        @contextlib.asynccontextmanager
        async def connection() -> AsyncIterator[None]:
            # Providers are already built: a plugin may look them up here.
            self.events.append(f"open {self.name} (providers: {sorted(gateway.providers)})")
            try:
                yield
            finally:
                self.events.append(f"close {self.name}")

        return connection()
# [/docs:lifespan]


class BrokenStartPlugin:
    @sluiceway.hookimpl
    def lifespan(self, gateway: sluiceway.Gateway) -> AbstractAsyncContextManager[None]:
        @contextlib.asynccontextmanager
        async def refuse() -> AsyncIterator[None]:
            raise sluiceway.StartupError("the licence server is unreachable")
            yield

        return refuse()


def test_hook_lifespan(gateway_factory: Factory) -> None:
    events: list[str] = []
    server = gateway_factory(REVERSE_CONFIG, plugins=[
        ("reverse", ReversePlugin()),
        ("a", ConnectionPlugin("a", events)), ("b", ConnectionPlugin("b", events)),
    ])
    assert httpx.get(server.url + "/readyz").json() == {"status": "ready"}
    # Entered once, in plugins.toml order, after the providers were built.
    assert events == ["open a (providers: ['rev'])", "open b (providers: ['rev'])"]
    server.stop()
    # Exited in reverse order at shutdown.
    assert events[2:] == ["close b", "close a"]
    assert server.gateway.providers == {}

    # A StartupError aborts startup; what was already open is closed again.
    events.clear()
    gateway = sluiceway.create_app({}, plugins=[
        ("a", ConnectionPlugin("a", events)), ("broken", BrokenStartPlugin()),
    ])
    with pytest.raises(sluiceway.StartupError, match="licence server is unreachable"):
        asyncio.run(gateway.startup())
    assert events == ["open a (providers: [])", "close a"]
    assert not gateway.started


class PooledMiddleware:
    """A middleware that owns a resource: the gateway enters its ``lifespan()``."""

    def __init__(self, app: sluiceway.components.ASGIApp, events: list[str]) -> None:
        self.app = app
        self.events = events

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        self.events.append("open pool")
        try:
            yield
        finally:
            self.events.append("close pool")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


class PooledMiddlewarePlugin:
    def __init__(self, events: list[str]) -> None:
        self.events = events

    @sluiceway.hookimpl
    def register_middleware(self, register: Callable[[sluiceway.Middleware], None]) -> None:
        register(sluiceway.Middleware(
            "pooled", lambda app, gateway: PooledMiddleware(app, self.events),
        ))


def test_middleware_lifespan_is_entered_with_the_gateway(gateway_factory: Factory) -> None:
    events: list[str] = []
    server = gateway_factory(REVERSE_CONFIG, plugins=[
        ("reverse", ReversePlugin()), ("pooled", PooledMiddlewarePlugin(events)),
        ("a", ConnectionPlugin("a", events)),
    ])
    assert httpx.get(server.url + "/readyz").json() == {"status": "ready"}
    # After the plugins' own lifespans; closed before them.
    assert events == ["open a (providers: ['rev'])", "open pool"]
    server.stop()
    assert events[2:] == ["close pool", "close a"]


def test_middleware_sees_the_model_call_after_the_endpoint(
    gateway_factory: Callable[..., RunningServer],
) -> None:
    seen: list[dict[str, object]] = []

    def observe(app: sluiceway.components.ASGIApp, gateway: sluiceway.Gateway) -> object:
        async def middleware(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await app(scope, receive, send)
            if scope["type"] == "http":
                call = scope[sluiceway.CONTEXT_KEY].call
                seen.append({"provider": call.deployment.provider_name,
                             "usage": call.usage.to_openai() if call.usage else None})

        return middleware

    class Observer:
        @sluiceway.hookimpl
        def register_middleware(self, register: Callable[[sluiceway.Middleware], None]) -> None:
            register(sluiceway.Middleware("observer", observe))  # type: ignore[arg-type]

    server = gateway_factory(
        {"gateway": {"plugins": ["mock"]},
         "providers": [{"name": "mock", "type": "mock", "models": ["mock-gpt"]}]},
        plugins=[("observer", Observer())],
    )
    with openai.OpenAI(api_key="x", base_url=server.base_url, max_retries=0) as client:
        plain = client.chat.completions.create(
            model="mock-gpt", messages=[{"role": "user", "content": "hi"}]
        )
        list(client.chat.completions.create(
            model="mock-gpt", messages=[{"role": "user", "content": "hi"}], stream=True
        ))
    # The middleware runs on after the last byte went out: wait for it (bounded).
    for _ in range(200):
        if len(seen) == 2:
            break
        time.sleep(0.01)
    assert plain.usage is not None
    usage = seen[0]["usage"]
    assert isinstance(usage, dict) and seen[0]["provider"] == "mock"
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (
        plain.usage.prompt_tokens, plain.usage.completion_tokens, plain.usage.total_tokens)
    # The client did not ask for the usage chunk, but middleware still sees the usage.
    assert seen[1]["provider"] == "mock" and seen[1]["usage"] == seen[0]["usage"]


def test_a_stream_that_fails_after_it_started_ends_as_a_failure(
    gateway_factory: Factory, fake_openai: Callable[..., Any]
) -> None:
    from sluiceway.testing.faults import Close

    fake = fake_openai(chunks=4)
    fake.script(Close(after_chunks=2))
    tally = Tally()
    server = gateway_factory({
        "gateway": {"plugins": ["openai"]},
        "providers": [{"name": "up", "type": "openai", "base_url": fake.url,
                       "api_key": "sk-test", "models": ["fake-model"]}],
    }, plugins=[("tally", TallyPlugin(tally))])
    with openai.OpenAI(api_key="unused", base_url=server.base_url, max_retries=0) as client:
        with pytest.raises(openai.APIError):
            list(client.chat.completions.create(model="fake-model", messages=USER,
                                                stream=True))
    for _ in range(200):
        if any(isinstance(e, sluiceway.events.RequestEnded) for e in tally.seen):
            break
        time.sleep(0.01)
    (ended,) = [e for e in tally.seen if isinstance(e, sluiceway.events.RequestEnded)]
    # The 200 had gone out; the end still says the stream failed, and why.
    assert (ended.status, ended.stream) == (200, True)
    assert ended.error_type is not None and ended.error_code is not None
