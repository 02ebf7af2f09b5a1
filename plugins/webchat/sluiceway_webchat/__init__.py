"""sluiceway-webchat: providers whose credentials come from a browser login.

Listing ``webchat`` in ``[gateway] plugins`` is needed only to configure the
shared browser with a ``[plugin.webchat]`` table (its keys are
:class:`BrowserOptions`); provider plugins built on :class:`WebChatProvider`
work without it, with the defaults (Debian's ``/usr/bin/chromium`` when present).

* :class:`WebChatProvider`: subclass it; write ``answer`` and ``stream_answer``
  (the site's chat call, mapped to OpenAI objects with :class:`ChunkMaker` and
  :func:`text_completion`); the login is the declarative ``login`` table of
  :class:`WebChatOptions`, or your own ``login(page)``.
* Sessions are kept, sealed and refreshed by the core's ``gateway.sessions``.

See README.md for a complete example.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

import sluiceway.api as sluiceway

from .browser import SharedBrowser, browser_options, shared_browser
from .chunks import ChunkMaker, text_completion
from .login import extract_session, fill_login_form, save_artifacts, storage_of
from .options import (
    DEFAULT_ARGS,
    SYSTEM_CHROMIUM,
    BrowserOptions,
    LoginForm,
    WebChatOptions,
    chromium_path,
)
from .provider import LoginFailed, WebChatProvider

__all__ = [
    "DEFAULT_ARGS",
    "SYSTEM_CHROMIUM",
    "BrowserOptions",
    "ChunkMaker",
    "LoginFailed",
    "LoginForm",
    "SharedBrowser",
    "WebChatOptions",
    "WebChatProvider",
    "browser_options",
    "chromium_path",
    "extract_session",
    "fill_login_form",
    "save_artifacts",
    "shared_browser",
    "storage_of",
    "text_completion",
]


@sluiceway.hookimpl
def lifespan(gateway: sluiceway.Gateway) -> AbstractAsyncContextManager[None] | None:
    """Checks ``[plugin.webchat]`` at startup, so a typo stops the gateway even
    before any provider needs the browser. Opens nothing: the browser is launched
    on the first login."""
    browser_options(gateway)
    return None
