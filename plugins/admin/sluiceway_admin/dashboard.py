"""The dashboard: one page (``dashboard.html``: HTML, CSS and script, no build step)
served at ``/admin``, that signs in with an admin key and drives the admin API.

The page holds no secret: the admin key typed into it stays in the tab's
``sessionStorage`` and goes with each API call. It is served with a Content
Security Policy that allows only its own inline script and style (by hash) and
calls to this origin, is never framed, and is not cached.
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib import resources
from typing import TYPE_CHECKING

from sluiceway.api import send_bytes

if TYPE_CHECKING:
    from sluiceway.api import Receive, Scope, Send

__all__ = ["PAGE", "dashboard"]

PAGE = resources.files(__package__).joinpath("dashboard.html").read_bytes()


def _hashes(tag: str) -> str:
    found = re.findall(rb"<" + tag.encode() + rb">(.*?)</" + tag.encode() + rb">", PAGE, re.S)
    return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(body).digest()).decode()}'"
                    for body in found)


_HEADERS = [
    (b"content-security-policy",
     (f"default-src 'none'; script-src {_hashes('script')}; style-src {_hashes('style')}; "
      "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; "
      "frame-ancestors 'none'").encode()),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
]


async def dashboard(scope: Scope, receive: Receive, send: Send) -> None:
    """``GET /admin``: the page."""
    await send_bytes(send, 200, PAGE, content_type=b"text/html; charset=utf-8",
                     headers=_HEADERS)
