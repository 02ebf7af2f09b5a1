"""The objects plugins register, and the protocols the request path calls.

Hooks run once, at build time, and register these; the request path then calls
the registered objects directly (never ``pm.hook.*``). Each registration is
validated and tagged with the plugin that made it (see :mod:`sluiceway.plugins.registry`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from .requests import ChatRequest, EmbeddingsRequest, MessagesRequest, ResponsesRequest

if TYPE_CHECKING:
    from .calls.call import CallPolicy
    from .config.settings import ModelEntry
    from .http.app import Gateway
    from .http.context import RequestContext
    from .upstream.client import UpstreamClient, UpstreamLimits

__all__ = [
    "ASGIApp",
    "AuthStrategy",
    "AuthStrategyType",
    "CallPolicyType",
    "ChatRequest",
    "EmbeddingsRequest",
    "MessagesRequest",
    "Middleware",
    "MiddlewareSlot",
    "ModelInfo",
    "Principal",
    "Provider",
    "ProviderCapabilities",
    "ProviderContext",
    "ProviderType",
    "ResponsesRequest",
    "Route",
]

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# "edge": outside the request context, so it sees every response the gateway sends
# (errors included) and may answer before anything is counted (CORS preflights).
MiddlewareSlot = Literal["edge", "before_auth", "after_auth"]


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A model as listed by ``GET /v1/models``."""

    id: str
    owned_by: str
    created: int = 0


@runtime_checkable
class Provider(Protocol):
    """One configured provider instance (one ``[[providers]]`` table).

    ``chat`` returns an OpenAI ``chat.completion`` object. ``stream`` yields
    OpenAI ``chat.completion.chunk`` objects (or, on a pass-through fast path,
    each chunk's JSON already encoded as ``bytes``); the core does the SSE
    framing and the final ``[DONE]``. A provider should end a stream with a
    usage chunk (``choices: []``) whenever it knows usage: the core forwards it
    only to clients that asked for ``stream_options.include_usage``.

    Failures are raised as :class:`~sluiceway.errors.GatewayError` subclasses
    (``UpstreamError``, ``UpstreamTimeout``, ``RateLimited``...). ``aclose``
    releases what the provider opened itself; it is called once, at shutdown.

    Optionally, a provider may have a ``default_models`` attribute (a sequence
    of :class:`~sluiceway.ModelEntry`): the models it serves when its
    ``[[providers]]`` table lists none.

    Optional methods, found once when the stack is built (see
    :class:`ProviderCapabilities`; they are not part of this protocol's
    ``isinstance`` check):

    * ``async count_tokens(request: ChatRequest) -> int``: the input tokens of a
      request, for ``/v1/messages/count_tokens`` (without it the core estimates).
    * ``async embeddings(request: EmbeddingsRequest) -> dict``: an OpenAI list
      of embeddings with usage, for ``/v1/embeddings``.
    * A provider that serves the Responses API natively serves
      ``/v1/responses`` without the translation to chat completions (so
      ``previous_response_id``, reasoning items and built-in tools work):
      ``async responses(request: ResponsesRequest) -> dict`` (a ``response``
      object) and ``responses_stream(request) -> AsyncIterator[tuple[str,
      bytes]]`` (each event's type and its JSON data as received; raise on an
      ``error`` event, and if the stream ends without ``response.completed``,
      ``response.incomplete`` or ``response.failed``).
    * A provider that speaks the Anthropic Messages API natively serves
      ``/v1/messages`` without a translation to the canonical shape and back:
      ``async anthropic_messages(request: MessagesRequest) -> dict`` (an
      Anthropic ``message``), ``anthropic_messages_stream(request) ->
      AsyncIterator[tuple[str, bytes]]`` (each event's name and its JSON data
      as received; raise on an ``error`` event, and if the stream ends before
      ``message_stop``), and ``async anthropic_count_tokens(request) -> int``.
    """

    async def chat(self, request: ChatRequest) -> dict[str, Any]: ...

    def stream(self, request: ChatRequest) -> AsyncIterator[dict[str, Any] | bytes]: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ProviderCapabilities:
    """The optional methods a provider has, looked up once per provider when the
    stack is built rather than with ``getattr`` on every request."""

    count_tokens: Callable[[ChatRequest], Awaitable[int]] | None = None
    anthropic_messages: Callable[[MessagesRequest], Awaitable[Any]] | None = None
    anthropic_messages_stream: Callable[[MessagesRequest], AsyncIterator[Any]] | None = None
    anthropic_count_tokens: Callable[[MessagesRequest], Awaitable[int]] | None = None
    embeddings: Callable[[EmbeddingsRequest], Awaitable[dict[str, Any]]] | None = None
    responses: Callable[[ResponsesRequest], Awaitable[dict[str, Any]]] | None = None
    responses_stream: Callable[[ResponsesRequest], AsyncIterator[Any]] | None = None

    @classmethod
    def of(cls, provider: object) -> ProviderCapabilities:
        """What ``provider`` offers beyond chat and stream."""
        return cls(**{name: _method(provider, name) for name in _OPTIONAL_METHODS})


_OPTIONAL_METHODS = ("count_tokens", "anthropic_messages", "anthropic_messages_stream",
                     "anthropic_count_tokens", "embeddings", "responses", "responses_stream")


def _method(provider: object, name: str) -> Any:
    found = getattr(provider, name, None)
    return found if callable(found) else None


@dataclass(slots=True)
class ProviderContext:
    """What a provider factory gets: its table, validated, and the gateway's services."""

    name: str
    models: Sequence[ModelEntry]
    options: Any
    gateway: Gateway
    # How many requests the core lets through to this provider at once (its
    # `concurrency`): size connection pools to it, so that no request ever waits
    # inside a client, where a wait looks like a connect failure.
    concurrency: int = 1024
    clients: list[UpstreamClient] = field(default_factory=list)

    def http_client(self, limits: UpstreamLimits | None = None) -> UpstreamClient:
        """A pooled upstream HTTP client for this provider. The gateway closes it at
        shutdown, after the provider's own ``aclose``."""
        from .upstream.client import create_upstream_client

        client = create_upstream_client(limits)
        self.clients.append(client)
        return client


ProviderFactory = Callable[[ProviderContext], "Provider | Awaitable[Provider]"]


@dataclass(frozen=True, slots=True)
class ProviderType:
    """A kind of provider, e.g. ``mock`` or ``openai``.

    ``config_model`` is a ``msgspec.Struct`` (``forbid_unknown_fields=True``
    recommended) that validates every key of a ``[[providers]]`` table other than
    ``name``, ``type`` and ``models``. ``factory`` builds the provider at startup,
    inside the event loop, and may be async.
    """

    name: str
    factory: ProviderFactory
    config_model: type | None = None
    description: str = ""


@dataclass(frozen=True, slots=True)
class Route:
    """An HTTP route served by the gateway.

    ``endpoint`` is a plain ASGI app; ``scope["sluiceway.context"]`` holds the
    :class:`~sluiceway.http.context.RequestContext`. ``public`` routes skip auth
    (health checks). ``dialect`` picks the error shape: ``"openai"`` or
    ``"anthropic"``. ``calls_model`` marks a route that sends a prompt to a
    model (chat completions, messages): policies that count requests and
    tokens (rate limits, budgets, metrics) apply to these routes.
    """

    path: str
    endpoint: ASGIApp
    methods: tuple[str, ...] = ("GET",)
    name: str = ""
    public: bool = False
    dialect: Literal["openai", "anthropic"] = "openai"
    calls_model: bool = False


CallPolicyFactory = Callable[["Gateway"], "CallPolicy"]


@dataclass(frozen=True, slots=True)
class CallPolicyType:
    """A call policy a plugin offers: ``factory(gateway)`` builds it once, while
    the gateway is built (raise :class:`~sluiceway.ConfigError` for bad options).
    The built object is a :class:`~sluiceway.CallPolicy`; its ``name`` is this
    registration's name. Policies admit calls in plugins.toml order, and within
    one plugin in the order they were registered."""

    name: str
    factory: CallPolicyFactory
    description: str = ""


MiddlewareFactory = Callable[[ASGIApp, "Gateway"], ASGIApp]


@dataclass(frozen=True, slots=True)
class Middleware:
    """A pure ASGI middleware placed in a named slot of the stack.

    ``factory(app, gateway)`` wraps the next app and returns the wrapper. Within a
    slot, middleware runs in plugins.toml order (the first listed is outermost).
    It must pass non-``http`` scopes through untouched.
    """

    name: str
    factory: MiddlewareFactory
    slot: MiddlewareSlot = "after_auth"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the identity an auth strategy established.

    ``key_id`` identifies the credential in logs and metrics (never the secret).
    ``allowed_models`` is a tuple of glob patterns, or ``None`` for any model.
    """

    key_id: str
    name: str = ""
    allowed_models: tuple[str, ...] | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class AuthStrategy(Protocol):
    """Decides who a request comes from.

    Return a :class:`Principal` when the request carries a credential this
    strategy accepts, ``None`` when it carries none this strategy understands
    (the next strategy in the chain is asked), and raise
    :class:`~sluiceway.errors.AuthenticationFailed` for a credential that is
    present but invalid.
    """

    async def authenticate(self, ctx: RequestContext) -> Principal | None: ...


@dataclass(frozen=True, slots=True)
class AuthStrategyType:
    """A kind of auth strategy; ``[auth] chain`` names instances by ``name``.

    Options come from the ``[auth.<name>]`` table, validated by ``config_model``.
    """

    name: str
    factory: Callable[[Any, Gateway], AuthStrategy]
    config_model: type | None = None
    description: str = ""
