"""The openai provider's error mapping: the plugin API's usual one
(:func:`sluiceway.api.status_error`, whose docstring has the table), under the
names this plugin has always exported. The provider sets ``alternate`` on auth
and rate-limit errors when another of its keys could serve the request.
"""

from __future__ import annotations

from sluiceway.api import (
    UpstreamAuthError,
    UpstreamHTTPError,
    UpstreamStatusError,
    error_fields,
    is_context_window,
)
from sluiceway.api import status_error as error_from_response

__all__ = [
    "UpstreamAuthError",
    "UpstreamHTTPError",
    "UpstreamStatusError",
    "error_fields",
    "error_from_response",
    "is_context_window",
]
