"""sluiceway: an LLM API gateway built as a plugin-based ASGI stack.

This module is the public API for embedding the gateway and the names most
plugins need; :mod:`sluiceway.api` is the whole plugin API, and the only module
the bundled plugins import from. ``__all__`` is pinned by a test.
"""

from .calls import CallPolicy, ModelCall, Settle
from .components import (
    AuthStrategy,
    AuthStrategyType,
    CallPolicyType,
    ChatRequest,
    MessagesRequest,
    Middleware,
    ModelInfo,
    Principal,
    Provider,
    ProviderContext,
    ProviderType,
    Route,
)
from .config.loading import load_config, parse_config
from .config.settings import (
    ByteSize,
    Config,
    Duration,
    ModelEntry,
    Secret,
)
from .errors import (
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
from .events import EventSinkType
from .http.app import Gateway, create_app
from .http.context import CONTEXT_KEY, RequestContext
from .http.middleware.request_context import render_error as send_error
from .plugins.hookspecs import HOOK_API_VERSION, hookimpl
from .upstream.client import UpstreamClient, UpstreamLimits, UpstreamResponse
from .wire.usage import Usage

__version__ = "0.1.0"

__all__ = [
    "CONTEXT_KEY",
    "HOOK_API_VERSION",
    "AuthStrategy",
    "AuthStrategyType",
    "AuthenticationFailed",
    "ByteSize",
    "CallPolicy",
    "CallPolicyType",
    "ChatRequest",
    "Config",
    "ConfigError",
    "Duration",
    "EventSinkType",
    "Gateway",
    "GatewayError",
    "InvalidRequest",
    "MessagesRequest",
    "MethodNotAllowed",
    "Middleware",
    "ModelCall",
    "ModelEntry",
    "ModelInfo",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "PluginError",
    "Principal",
    "Provider",
    "ProviderContext",
    "ProviderType",
    "RateLimited",
    "RequestContext",
    "Route",
    "Secret",
    "ServiceUnavailable",
    "Settle",
    "SluicewayError",
    "StartupError",
    "UpstreamClient",
    "UpstreamError",
    "UpstreamLimits",
    "UpstreamResponse",
    "UpstreamTimeout",
    "Usage",
    "__version__",
    "create_app",
    "hookimpl",
    "load_config",
    "parse_config",
    "send_error",
]
