"""sluiceway plugin ``admin``: the admin HTTP API under ``/admin/v1/``, and a dashboard
at ``/admin``.

API keys (list, create, change, revoke, enable, rotate, delete: through the same
store as ``sluiceway keys``, the file or Redis), providers with their pools and
breakers, web-login sessions, the last requests and spend per day, and an
OpenAPI document at ``/admin/v1/openapi.json``. Every request needs one of the
``admin_keys``; no API key opens it.

Enable it in plugins.toml::

    [gateway]
    plugins = ["openai", "api-keys", "admin"]

    [plugin.admin]
    admin_keys = ["env:SLUICEWAY_ADMIN_KEY"]
"""

from __future__ import annotations

from collections.abc import Callable

from sluiceway.api import Config, EventSinkType, Route, hookimpl

from .api import PREFIX, AdminApi, traffic_of
from .dashboard import dashboard
from .options import PLUGIN, AdminOptions, load_options
from .recent import TrafficLog, create_log

__all__ = [
    "PLUGIN",
    "PREFIX",
    "AdminApi",
    "AdminOptions",
    "TrafficLog",
    "dashboard",
    "load_options",
    "register_event_sinks",
    "register_routes",
    "traffic_of",
]


@hookimpl
def register_routes(register: Callable[[Route], None], config: Config) -> None:
    api = AdminApi(load_options(config), config)
    # Public to the auth chain: admin keys, not API keys, open it (checked inside).
    register(Route(PREFIX + "{rest}", api, methods=("GET", "POST", "PUT", "PATCH", "DELETE"),
                   name="admin", public=True))
    # The page holds no secret; what it shows comes from the API, with the admin key.
    register(Route("/admin", dashboard, name="admin-dashboard", public=True))
    register(Route("/admin/", dashboard, name="admin-dashboard-slash", public=True))


@hookimpl
def register_event_sinks(register: Callable[[EventSinkType], None]) -> None:
    register(EventSinkType(PLUGIN, create_log))
