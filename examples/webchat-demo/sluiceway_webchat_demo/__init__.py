"""sluiceway-webchat-demo: a demo chat site with a browser login, and its provider.

* :class:`DemoSite` (``python -m sluiceway_webchat_demo``) is the site: a login
  form with a CSRF token, an httpOnly session cookie, a bearer token in
  localStorage, a chat API that answers and streams, tokens that expire.
* :class:`DemoChatProvider` (provider type ``webchat-demo``) is the template for
  providers of real sites: a declarative login and a site-specific chat call.
"""

from __future__ import annotations

from collections.abc import Callable

from sluiceway_webchat import WebChatOptions

import sluiceway

from .provider import DemoChatProvider
from .site import DemoSite

__all__ = ["DemoChatProvider", "DemoSite", "register_provider_types"]


@sluiceway.hookimpl
def register_provider_types(register: Callable[[sluiceway.ProviderType], None]) -> None:
    register(sluiceway.ProviderType(
        name="webchat-demo",
        factory=DemoChatProvider,
        config_model=WebChatOptions,
        description="The demo chat site, through a browser login (examples/webchat-demo).",
    ))
