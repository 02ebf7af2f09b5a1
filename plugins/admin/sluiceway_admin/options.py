"""``[plugin.admin]``."""

from __future__ import annotations

from typing import Annotated

import msgspec

from sluiceway.api import Config, Secret, validate_options

__all__ = ["PLUGIN", "AdminOptions", "load_options"]

PLUGIN = "admin"


class AdminOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``admin_keys``: the secrets (``"env:VAR"``) that open the admin API, sent as
    ``Authorization: Bearer``; they are not API keys, and no API key opens it.
    ``admin_role``: also let in a bearer token the ``[auth] chain`` accepts (a JWT)
    whose principal has this role (the jwt plugin's ``roles`` claim). One of the
    two is required. ``recent_requests``: how many finished requests each instance
    remembers for ``GET /admin/v1/requests``."""

    admin_keys: list[Secret] = msgspec.field(default_factory=list)
    admin_role: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    recent_requests: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 1000

    def __post_init__(self) -> None:
        if not self.admin_keys and self.admin_role is None:
            raise ValueError("give admin_keys, admin_role, or both")


def load_options(config: Config) -> AdminOptions:
    return validate_options(config.plugin_options(PLUGIN), AdminOptions,
                            source=config.source, key=f"plugin.{PLUGIN}")
