"""Pure ASGI middleware; each class passes non-``http`` scopes straight through."""

from .auth import AuthMiddleware
from .request_context import RequestContextMiddleware

__all__ = ["AuthMiddleware", "RequestContextMiddleware"]
