"""The public API is what ``sluiceway.__all__`` lists, no more and no less (as httpx pins it).

Adding or removing a name is a deliberate change to the plugin contract: update
this list, and docs/hooks.md if plugins use the name.
"""

from __future__ import annotations

import inspect

import sluiceway

PUBLIC_API = [
    "AuthStrategy",
    "AuthStrategyType",
    "AuthenticationFailed",
    "ByteSize",
    "CONTEXT_KEY",
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
    "SluicewayError",
    "StartupError",
    "UpstreamClient",
    "UpstreamError",
    "UpstreamLimits",
    "UpstreamResponse",
    "UpstreamTimeout",
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
