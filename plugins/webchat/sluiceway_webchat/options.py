"""What a web-login provider is configured with.

* :class:`BrowserOptions`: ``[plugin.webchat]``, the one browser every login of
  the process shares.
* :class:`LoginForm`: the declarative mode, a provider table's ``login``
  sub-table for sites whose login is a plain form.
* :class:`WebChatOptions`: the keys every web-login provider table has (a
  subclass's options may extend it).

Credentials are accepted only as ``env:`` references, so that no password ever
sits in plugins.toml.
"""

from __future__ import annotations

import os
from typing import Annotated

import msgspec

import sluiceway.api as sluiceway

__all__ = [
    "DEFAULT_ARGS",
    "SYSTEM_CHROMIUM",
    "BrowserOptions",
    "LoginForm",
    "WebChatOptions",
    "chromium_path",
]

SYSTEM_CHROMIUM = "/usr/bin/chromium"
# The variable that points at another Chromium when the option is not set.
CHROMIUM_ENV = "SLUICEWAY_CHROMIUM"
# Playwright passes most of these itself; listed so that what runs is plain to
# see. --no-sandbox is needed when running as root (containers).
DEFAULT_ARGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
    "--disable-dev-shm-usage",
)
_STORAGE_SOURCES = ("local_storage", "session_storage", "cookie")


def _env_only(values: dict[str, sluiceway.Secret], where: str) -> None:
    for name, secret in values.items():
        if not secret.source.startswith("env:"):
            raise ValueError(f"{where} {name!r}: write it as 'env:VAR', never in the file")


class BrowserOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[plugin.webchat]``: the browser all web-login providers of a process share."""

    # Chromium to launch. Unset: $SLUICEWAY_CHROMIUM, else /usr/bin/chromium
    # (Debian's package) when present, else the browser Playwright bundles.
    executable_path: str | None = None
    args: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_ARGS))
    headless: bool = True
    # Logins at once; each costs about 60 MB and a CPU core for a second or two.
    max_concurrent_logins: Annotated[int, msgspec.Meta(ge=1, le=32)] = 2
    # With no login for this long the browser is closed (350 MB back); 0: never.
    idle_timeout: sluiceway.Duration = sluiceway.Duration(300)
    # Where a failed login's screenshot and HTML go (mode 0600). Unset:
    # <[sessions] path>/failures.
    artifacts_dir: str | None = None


def chromium_path(options: BrowserOptions) -> str | None:
    """The Chromium to launch, or ``None`` for Playwright's own."""
    if options.executable_path:
        return options.executable_path
    if os.environ.get(CHROMIUM_ENV):
        return os.environ[CHROMIUM_ENV]
    return SYSTEM_CHROMIUM if os.path.exists(SYSTEM_CHROMIUM) else None


class LoginForm(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A login form, declared: open ``url``, fill ``fields``, click ``submit``, wait
    for ``success_url`` and/or ``success_selector``, keep what ``keep_*`` and
    ``bearer_from`` name."""

    # Absolute, or relative to the provider's base_url.
    url: str
    # CSS selector -> value, each value an "env:VAR" reference.
    fields: dict[str, sluiceway.Secret]
    submit: str
    # A glob the page's URL reaches once logged in ("**/app").
    success_url: str | None = None
    # An element that appears once logged in ("body[data-ready='1']").
    success_selector: str | None = None
    # Cookie names to keep (unset: every cookie of the context).
    keep_cookies: list[str] | None = None
    # localStorage / sessionStorage keys of the page's origin to keep.
    keep_local_storage: list[str] = msgspec.field(default_factory=list)
    keep_session_storage: list[str] = msgspec.field(default_factory=list)
    # Where the bearer token is: "local_storage:KEY", "session_storage:KEY" or "cookie:NAME".
    bearer_from: str | None = None

    def __post_init__(self) -> None:
        _env_only(self.fields, "login field")
        if self.success_url is None and self.success_selector is None:
            raise ValueError("set success_url or success_selector: how a login is known to work")
        if self.bearer_from is not None:
            source, _, key = self.bearer_from.partition(":")
            if source not in _STORAGE_SOURCES or not key:
                raise ValueError(
                    f"bearer_from must be local_storage:KEY, session_storage:KEY or "
                    f"cookie:NAME, not {self.bearer_from!r}"
                )


class WebChatOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The keys of a web-login provider's ``[[providers]]`` table."""

    # The site's root; the login URL and the provider's own paths are relative to it.
    base_url: str
    # The declarative login; a subclass with its own flow may leave it out.
    login: LoginForm | None = None
    # A login that has not succeeded within this fails (with a screenshot).
    login_timeout: sluiceway.Duration = sluiceway.Duration(60)
    # Named secrets for a subclass's own login flow, each "env:VAR".
    credentials: dict[str, sluiceway.Secret] = msgspec.field(default_factory=dict)
    # Time allowed for each wait on the site's chat API.
    read_timeout: sluiceway.Duration = sluiceway.Duration(120)

    def __post_init__(self) -> None:
        _env_only(self.credentials, "credential")
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, not {self.base_url!r}")
