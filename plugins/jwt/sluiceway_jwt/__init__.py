"""sluiceway auth strategy ``jwt``: JSON Web Tokens in ``Authorization: Bearer``.

Enable it in plugins.toml::

    [gateway]
    plugins = ["openai", "jwt"]

    [auth]
    chain = ["jwt"]

    [auth.jwt]
    secret = "env:JWT_SECRET"      # HS256; or jwks_file = "jwks.json" (RS256/ES256)
    issuer = "https://login.example.com"
    audience = "sluiceway"

Claims become the request's :class:`~sluiceway.Principal`: ``sub`` its key id,
``name`` its name, ``models`` its allowed model globs and ``rpm``/``tpm``/
``max_concurrent`` its attributes. A bearer value that is not a JWT is left to
the next strategy of the chain.
"""

from __future__ import annotations

from collections.abc import Callable

from sluiceway.api import AuthStrategyType, hookimpl

from .strategy import JwksKey, JwtOptions, JwtStrategy, create_strategy, load_jwks

__all__ = [
    "JwksKey",
    "JwtOptions",
    "JwtStrategy",
    "create_strategy",
    "load_jwks",
    "register_auth_strategies",
]


@hookimpl
def register_auth_strategies(register: Callable[[AuthStrategyType], None]) -> None:
    register(AuthStrategyType(
        "jwt",
        create_strategy,
        JwtOptions,
        description="JSON Web Tokens (HS256 secret or RS256/ES256 JWKS file) in Bearer.",
    ))
