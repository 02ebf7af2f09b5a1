"""The public API is what ``sluiceway.__all__`` and ``sluiceway.api.__all__`` list,
no more and no less (as httpx pins it).

Adding or removing a name is a deliberate change to the plugin contract: update
these lists, and docs/hooks.md if plugins use the name.
"""

from __future__ import annotations

import inspect

import sluiceway
import sluiceway.api

PUBLIC_API = [
    "AuthStrategy",
    "AuthStrategyType",
    "AuthenticationFailed",
    "ByteSize",
    "CONTEXT_KEY",
    "CallPolicy",
    "CallPolicyType",
    "ChatRequest",
    "Config",
    "ConfigError",
    "Duration",
    "EventSinkType",
    "Gateway",
    "GatewayError",
    "HOOK_API_VERSION",
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


def test_all_is_pinned() -> None:
    assert sorted(sluiceway.__all__) == PUBLIC_API
    assert len(set(sluiceway.__all__)) == len(sluiceway.__all__)


def test_every_public_name_exists() -> None:
    for name in sluiceway.__all__:
        assert hasattr(sluiceway, name), name


def test_nothing_public_is_left_out_of_all() -> None:
    public = {
        name for name, value in vars(sluiceway).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert public == set(sluiceway.__all__) - {"__version__"}


def test_public_classes_say_they_are_sluiceway_s() -> None:
    # Names are re-exported from their submodules; reprs and docs should still
    # show where they live, under the sluiceway package.
    for name in sluiceway.__all__:
        value = getattr(sluiceway, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert value.__module__.startswith("sluiceway."), (name, value.__module__)


def test_hook_api_version() -> None:
    assert sluiceway.HOOK_API_VERSION == 1


def test_the_plugin_api_is_pinned() -> None:
    assert sorted(sluiceway.api.__all__) == sorted(PLUGIN_API)
    assert len(set(sluiceway.api.__all__)) == len(sluiceway.api.__all__)


def test_the_plugin_api_has_everything_the_top_level_has() -> None:
    assert set(sluiceway.__all__) - {"__version__"} <= set(sluiceway.api.__all__)
    for name in sluiceway.__all__:
        if name != "__version__":
            assert getattr(sluiceway.api, name) is getattr(sluiceway, name), name


def test_every_plugin_api_name_exists_including_the_lazy_ones() -> None:
    for name in sluiceway.api.__all__:
        value = getattr(sluiceway.api, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert value.__module__.startswith("sluiceway."), (name, value.__module__)


def test_an_unknown_plugin_api_name_is_an_attribute_error() -> None:
    assert not hasattr(sluiceway.api, "no_such_name")

PLUGIN_API = [
    "ASGIApp",
    "ApiKey",
    "AttemptEnded",
    "AttemptStarted",
    "AuthDecided",
    "AuthStrategy",
    "AuthStrategyType",
    "AuthenticationFailed",
    "ByteSize",
    "CONFIG_ENV",
    "CONTEXT_KEY",
    "CallKind",
    "CallPolicy",
    "CallPolicyType",
    "ChatRequest",
    "Config",
    "ConfigError",
    "Credentials",
    "DEFAULT_CONFIG",
    "Duration",
    "EmbeddingsRequest",
    "ErrorMapper",
    "Event",
    "EventSinkType",
    "FirstToken",
    "Gateway",
    "GatewayError",
    "HOOK_API_VERSION",
    "HttpOptions",
    "HttpUpstream",
    "InvalidRequest",
    "JSON_LINE",
    "KeyOptions",
    "LEASE_ACQUIRE",
    "LEASE_RENEW",
    "LimitDecided",
    "OutputStage",
    "PolicyDecided",
    "Recording",
    "record_answer",
    "MAX_RETRY_AFTER_SECONDS",
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
    "PayloadTooLarge",
    "PermissionDenied",
    "PluginError",
    "Principal",
    "Provider",
    "ProviderCapabilities",
    "ProviderContext",
    "ProviderType",
    "RateLimited",
    "Receive",
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
