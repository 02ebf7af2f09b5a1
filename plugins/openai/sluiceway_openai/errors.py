"""Turning an upstream's error answer into the gateway's own error family.

Each error's ``kind`` tells the core's retry loop what the failure says::

    upstream 400 "context length"  -> UpstreamStatusError 400, kind context_window
                                      (too long for this model; another may take it)
    upstream 401 / 403             -> UpstreamAuthError 502, kind auth, code
                                      upstream_auth_error: the gateway's key was
                                      refused, not the client's
    upstream 429                   -> RateLimited 429, kind rate_limit, with the
                                      upstream's Retry-After (capped at 120 s)
    upstream other 4xx             -> UpstreamStatusError, same status, kind client,
                                      with the upstream's message, type, code, param
    upstream 503 / 529             -> UpstreamHTTPError 502, kind server, code
                                      upstream_overloaded (an Anthropic client sees 529)
    upstream 5xx, other            -> UpstreamHTTPError 502, kind server
    connect failure                -> UpstreamError 502, kind connect
    timeout                        -> UpstreamTimeout 504, kind timeout (connect if
                                      no connection could be had in time)

The provider sets ``alternate`` on auth and rate-limit errors when another of
its keys could serve the request. Bodies that are not an OpenAI error object
(HTML from a proxy, plain text, empty) are normalised to a short, single-line
message.
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
