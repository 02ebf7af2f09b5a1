"""Matching request paths to registered routes, once per request, in O(1)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from .context import CONTEXT_KEY
from .errors import MethodNotAllowed, NotFound

if TYPE_CHECKING:
    from .components import Receive, Route, Scope, Send
    from .context import RequestContext
    from .registry import Registered

__all__ = ["RouteTable"]


class RouteTable:
    """Exact paths, plus paths whose last segment is a ``{parameter}``.

    ``match`` runs at the edge so that the route's dialect and ``public`` flag are
    known before auth; calling the table dispatches to the matched endpoint.
    """

    def __init__(self, routes: Iterable[Registered[Route]]) -> None:
        self.exact: dict[str, dict[str, Route]] = {}
        self.param: dict[str, tuple[str, dict[str, Route]]] = {}
        for registered in routes:
            route = registered.item
            if route.path.endswith("}") and "/{" in route.path:
                prefix, _, name = route.path.rpartition("/{")
                _, table = self.param.setdefault(prefix + "/", (name[:-1], {}))
            else:
                table = self.exact.setdefault(route.path, {})
            for method in route.methods:
                table[method.upper()] = route

    def _path(self, scope: Scope) -> str:
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        # Mounted apps see the full path with the mount point in root_path.
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        return path

    def match(self, scope: Scope, ctx: RequestContext) -> Route | None:
        path = self._path(scope)
        methods = self.exact.get(path)
        if methods is None:
            prefix, _, value = path.rpartition("/")
            entry = self.param.get(prefix + "/") if value else None
            if entry is None:
                return None
            name, methods = entry
            scope.setdefault("path_params", {})[name] = value
        route = methods.get(scope["method"])
        if route is None and scope["method"] == "HEAD":
            route = methods.get("GET")
        if route is None:
            ctx.state["allowed_methods"] = sorted(methods)
        return route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx = scope[CONTEXT_KEY]
        route = ctx.route
        if route is None:
            allowed = ctx.state.get("allowed_methods")
            target = f"{scope['method']} {self._path(scope)}"
            if allowed:
                raise MethodNotAllowed(
                    f"Method not allowed: {target} (allowed: {', '.join(allowed)}).",
                    headers={"allow": ", ".join(allowed)},
                )
            raise NotFound(f"Invalid URL ({target}).", code="unknown_url")
        await route.endpoint(scope, receive, send)
