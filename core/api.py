"""The plugin API: everything a plugin may use, in one module.

A plugin imports from here and from nowhere else in ``sluiceway`` (the bundled
plugins are held to this by a test), so a third-party plugin can do anything a
bundled one does, and the core is free to move its modules. ``__all__`` is
pinned by a test; a name leaves it only with a new ``HOOK_API_VERSION``.

The names fall in these groups:

* hooks: ``hookimpl``, ``HOOK_API_VERSION``;
* what hooks register: ``ProviderType``, ``AuthStrategyType``, ``CallPolicyType``,
  ``EventSinkType``, ``Route``, ``Middleware``;
* the model-call boundary: ``ModelCall``, ``CallPolicy``, ``Settle``, ``Usage``,
  answers a policy gives or watches (``Recording``, ``OutputStage``,
  ``record_answer``), and the token estimate (``estimate_input_tokens``, ``estimate_tokens``);
* requests and providers: ``ChatRequest``, ``MessagesRequest``, ``EmbeddingsRequest``,
  ``ResponsesRequest``, ``Provider``,
  ``ProviderContext``, ``ProviderCapabilities``, ``ModelInfo``, ``Principal``,
  ``RequestContext``, ``CONTEXT_KEY``;
* upstream HTTP: ``HttpUpstream`` (a provider's client, keys and error mapping in
  one), ``UpstreamEvents``, ``UpstreamBytes``, ``ErrorMapper``, ``status_error``
  (the usual mapping of an error answer, with ``UpstreamStatusError``,
  ``UpstreamAuthError``, ``UpstreamHTTPError``, ``error_fields``,
  ``is_context_window``),
  ``error_snippet``, ``name_provider``,
  ``UpstreamClient``, ``UpstreamLimits``, ``UpstreamResponse``, ``HttpOptions``,
  ``retry_after_seconds``, ``SSEDecoder``, ``SSEEvent``;
* wire shapes: the OpenAI objects (``completion_object``, ``chunk_object``...),
  the Anthropic translation (``anthropic_request``, ``openai_completion``,
  ``OpenAIChunkStream``...);
* configuration: ``Config``, ``Duration``, ``ByteSize``, ``Secret``,
  ``ModelEntry``, ``validate_options``, ``load_config``, ``format_duration``;
* errors: the :class:`GatewayError` family, ``send_error``;
* events: every lifecycle event class;
* shared state: ``RedisConnection`` and its URL helpers, sessions, API keys;
* ASGI types: ``ASGIApp``, ``Scope``, ``Receive``, ``Send``, ``Message``.

Heavy parts (Redis, the CLI, sessions) are imported on first use, so a plugin
that needs none of them does not pay for them at startup.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .calls import CallKind, CallPolicy, ModelCall, Settle
from .calls.answers import OutputStage, Recording, record_answer
from .components import (
    ASGIApp,
    AuthStrategy,
    AuthStrategyType,
    CallPolicyType,
    ChatRequest,
    EmbeddingsRequest,
    Message,
    MessagesRequest,
    Middleware,
    ModelInfo,
    Principal,
    Provider,
    ProviderCapabilities,
    ProviderContext,
    ProviderType,
    Receive,
    ResponsesRequest,
    Route,
    Scope,
    Send,
)
from .config.loading import load_config, parse_config
from .config.settings import (
    ByteSize,
    Config,
    Duration,
    ModelEntry,
    Secret,
)
from .config.values import format_duration, validate_options
from .errors import (
    MAX_RETRY_AFTER_SECONDS,
    AuthenticationFailed,
    ConfigError,
    GatewayError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    PluginError,
    RateLimited,
    ServiceUnavailable,
    SluicewayError,
    StartupError,
    UpstreamError,
    UpstreamTimeout,
)
from .events import (
    AttemptEnded,
    AttemptStarted,
    AuthDecided,
    Event,
    EventSinkType,
    FirstToken,
    LimitDecided,
    PolicyDecided,
    RequestEnded,
    RequestStarted,
    SessionLogin,
)
from .http.app import Gateway, create_app
from .http.context import CONTEXT_KEY, RequestContext
from .http.middleware.request_context import render_error as send_error
from .http.responses import send_bytes
from .http.subrequest import SubResponse
from .logformat import JSON_LINE
from .plugins.hookspecs import HOOK_API_VERSION, hookimpl
from .upstream.client import (
    HttpOptions,
    UpstreamClient,
    UpstreamLimits,
    UpstreamResponse,
)
from .upstream.provider_http import (
    ErrorMapper,
    HttpUpstream,
    UpstreamBytes,
    UpstreamEvents,
    error_snippet,
    name_provider,
)
from .upstream.status import (
    UpstreamAuthError,
    UpstreamHTTPError,
    UpstreamStatusError,
    error_fields,
    is_context_window,
    status_error,
)
from .wire.anthropic import parse_error as parse_anthropic_error
from .wire.anthropic_stream import OpenAIChunkStream, stream_error
from .wire.chat_to_messages import anthropic_request, openai_completion
from .wire.embeddings import embeddings_object, encode_vector
from .wire.estimate import estimate_input_tokens, estimate_tokens
from .wire.headers import retry_after_seconds
from .wire.openai import chunk_object, completion_id, completion_object, usage_object
from .wire.response_format import asks_for_schema
from .wire.sse import SSEDecoder, SSEEvent
from .wire.usage import Usage

if TYPE_CHECKING:
    from .cli.options import CONFIG_ENV, DEFAULT_CONFIG, resolve_config_path
    from .redis_store import (
        LEASE_ACQUIRE,
        LEASE_RENEW,
        OnStorageError,
        RedisConnection,
        check_storage_url,
        redact_url,
    )
    from .sessions import Session, SessionRejected
    from .upstream.keys import ApiKey, Credentials, KeyOptions

# name -> the module that defines it, imported when the name is first asked for.
_LAZY = {
    "CONFIG_ENV": ".cli.options",
    "DEFAULT_CONFIG": ".cli.options",
    "resolve_config_path": ".cli.options",
    "ApiKey": ".upstream.keys",
    "Credentials": ".upstream.keys",
    "KeyOptions": ".upstream.keys",
    "LEASE_ACQUIRE": ".redis_store",
    "LEASE_RENEW": ".redis_store",
    "OnStorageError": ".redis_store",
    "RedisConnection": ".redis_store",
    "check_storage_url": ".redis_store",
    "redact_url": ".redis_store",
    "Session": ".sessions",
    "SessionRejected": ".sessions",
}


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from . import __version__

        return __version__
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __package__), name)
    globals()[name] = value
    return value


__all__ = [
    "CONFIG_ENV",
    "CONTEXT_KEY",
    "DEFAULT_CONFIG",
    "HOOK_API_VERSION",
    "JSON_LINE",
    "LEASE_ACQUIRE",
    "LEASE_RENEW",
    "MAX_RETRY_AFTER_SECONDS",
    "ASGIApp",
    "ApiKey",
    "AttemptEnded",
    "AttemptStarted",
    "AuthDecided",
    "AuthStrategy",
    "AuthStrategyType",
    "AuthenticationFailed",
    "ByteSize",
    "CallKind",
    "CallPolicy",
    "CallPolicyType",
    "ChatRequest",
    "Config",
    "ConfigError",
    "Credentials",
    "Duration",
    "EmbeddingsRequest",
    "ErrorMapper",
    "Event",
    "EventSinkType",
    "FirstToken",
    "Gateway",
    "GatewayError",
    "HttpOptions",
    "HttpUpstream",
    "InvalidRequest",
    "KeyOptions",
    "LimitDecided",
    "Message",
    "MessagesRequest",
    "MethodNotAllowed",
    "Middleware",
    "ModelCall",
    "ModelEntry",
    "ModelInfo",
    "NotFound",
    "OnStorageError",
    "OpenAIChunkStream",
    "OutputStage",
    "PayloadTooLarge",
    "PermissionDenied",
    "PluginError",
    "PolicyDecided",
    "Principal",
    "Provider",
    "ProviderCapabilities",
    "ProviderContext",
    "ProviderType",
    "RateLimited",
    "Receive",
    "Recording",
    "RedisConnection",
    "RequestContext",
    "RequestEnded",
    "RequestStarted",
    "ResponsesRequest",
    "Route",
    "SSEDecoder",
    "SSEEvent",
    "Scope",
    "Secret",
    "Send",
    "ServiceUnavailable",
    "Session",
    "SessionLogin",
    "SessionRejected",
    "Settle",
    "SluicewayError",
    "StartupError",
    "SubResponse",
    "UpstreamAuthError",
    "UpstreamBytes",
    "UpstreamClient",
    "UpstreamError",
    "UpstreamEvents",
    "UpstreamHTTPError",
    "UpstreamLimits",
    "UpstreamResponse",
    "UpstreamStatusError",
    "UpstreamTimeout",
    "Usage",
    "anthropic_request",
    "asks_for_schema",
    "check_storage_url",
    "chunk_object",
    "completion_id",
    "completion_object",
    "create_app",
    "embeddings_object",
    "encode_vector",
    "error_fields",
    "error_snippet",
    "estimate_input_tokens",
    "estimate_tokens",
    "format_duration",
    "hookimpl",
    "is_context_window",
    "load_config",
    "name_provider",
    "openai_completion",
    "parse_anthropic_error",
    "parse_config",
    "record_answer",
    "redact_url",
    "resolve_config_path",
    "retry_after_seconds",
    "send_bytes",
    "send_error",
    "status_error",
    "stream_error",
    "usage_object",
    "validate_options",
]
