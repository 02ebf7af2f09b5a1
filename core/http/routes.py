"""Matching request paths to registered routes, once per request, in O(1)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..errors import MethodNotAllowed, NotFound
from .context import CONTEXT_KEY

if TYPE_CHECKING:
    from ..components import Receive, Route, Scope, Send
    from ..plugins.registry import Registered
    from .context import RequestContext

__all__ = ["RouteTable", "route_key"]


def route_key(path: str) -> tuple[str, str | None]:
    """``(prefix, parameter)`` for ``/a/{name}``; ``(path, None)`` for an exact path."""
    if path.endswith("}") and "/{" in path:
        prefix, _, name = path.rpartition("/{")
        return prefix + "/", name[:-1]
    return path, None


class RouteTable:
    """Exact paths, plus paths that end in one ``{parameter}``.

    The parameter takes the whole rest of the path, slashes included, because
    model ids such as ``meta-llama/Llama-3-8B`` contain them. ``match`` runs at
    the edge so that the route's dialect and ``public`` flag are known before
    auth; calling the table dispatches to the matched endpoint.
    """

    def __init__(self, routes: Iterable[Registered[Route]]) -> None:
        self.exact: dict[str, dict[str, Route]] = {}
        param: dict[str, tuple[str, dict[str, Route]]] = {}
        for registered in routes:
            route = registered.item
            key, name = route_key(route.path)
            if name is None:
                table = self.exact.setdefault(key, {})
            else:
                table = param.setdefault(key, (name, {}))[1]
            for method in route.methods:
                table[method.upper()] = route
        # Longest prefix first, so /v1/a/{x} wins over /v1/{y}.
        self.param = sorted(param.items(), key=lambda item: -len(item[0]))

    def _path(self, scope: Scope) -> str:
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        # Mounted apps see the full path with the mount point in root_path.
        if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("/", ""):
            path = path[len(root) :] or "/"
        return path

    def match(self, scope: Scope, ctx: RequestContext) -> Route | None:
        path = self._path(scope)
        methods = self.exact.get(path)
        if methods is None:
            for prefix, (name, table) in self.param:
                if path.startswith(prefix) and len(path) > len(prefix):
                    scope.setdefault("path_params", {})[name] = path[len(prefix) :]
                    methods = table
                    break
            else:
                return None
        route = methods.get(scope["method"])
        if route is None and scope["method"] == "HEAD":
            route = methods.get("GET")
        if route is None:
            ctx.state["allowed_methods"] = sorted(methods)
            # The path's own dialect, for the 405 (an Anthropic client expects its shape).
            ctx.state["path_dialect"] = next(iter(methods.values())).dialect
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
