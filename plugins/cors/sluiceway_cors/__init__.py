"""sluiceway plugin ``cors``: CORS for web apps that call the gateway from a
browser. Off until listed; no origin is allowed until ``allow_origins`` (or
``allow_origin_regex``) names some::

    [gateway]
    plugins = ["openai", "api-keys", "cors"]

    [plugin.cors]
    allow_origins = ["https://app.example.com"]
    allow_credentials = false
    max_age = "10m"

It sits in the ``edge`` slot, outside the request context: preflights are
answered before auth (and never counted), and every answer to an allowed
origin carries the headers, errors included.
"""

from __future__ import annotations

from collections.abc import Callable

from sluiceway.api import Middleware, hookimpl

from .middleware import CORS, CorsOptions, create_cors, load_options

__all__ = ["CORS", "CorsOptions", "create_cors", "load_options", "register_middleware"]


@hookimpl
def register_middleware(register: Callable[[Middleware], None]) -> None:
    """CORS headers and preflights, outermost (slot ``edge``)."""
    register(Middleware("cors", create_cors, slot="edge"))
