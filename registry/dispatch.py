"""The app router's routes, tried only where they can match (`RouteIndex`).

Starlette and FastAPI try a request against every route in turn, in the order they were added.
The registry's app has ~180 routes (ten per entity, the pages, the plugins' routers), so a read
of the last entity's records tried about 170 routes before its own, and even with each refusal
cut to a prefix test (`api.GuardedRoute`) the loop was a tenth of a read's cost.

`RouteIndex` sits where the router calls its own `app`. It keeps, for each path prefix made of
whole segments that some route's literal part starts with, a copy of the router whose routes
are only those that can match such a path: every route or mount whose literal part (up to its
first parameter) is made of segments the path starts with, and every route it cannot see into
(included routers), all in their original order. The copy then runs FastAPI's own matching
(full and partial matches, the trailing-slash redirect, the 404), so what is chosen is what the
whole list would choose: a route left out could not have matched the path, nor the path with
its trailing slash added or removed.

The copies are remade when the router's routes change: their number, FastAPI's own count of
changes, the first or last route, or `invalidate` (`api.swap_routes` calls it).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from starlette._utils import get_route_path
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import Receive, Scope, Send

#: how many leading path segments the index tells apart (deeper ones are left to the routes)
DEPTH = 4


def route_key(route: BaseRoute) -> tuple[str, ...]:
    """The whole path segments every path `route` matches starts with (at most `DEPTH`); `()`
    for a route whose paths are not known here (included routers, host routes). A Starlette
    route or mount matches only paths that start with its template's literal part (up to its
    first parameter; a mount's template ends in `/{path}`)."""
    path = getattr(route, "path_format", None)
    if not isinstance(route, (Route, Mount)) or not isinstance(path, str):
        return ()
    literal = path.split("{", 1)[0]
    if not literal.startswith("/"):
        return ()
    # with a parameter, the segment it is in is not whole; a fixed path is all whole, whatever
    # its trailing slash (the redirect tries the path with and without one)
    whole = literal.split("/")[1:-1] if "{" in path else literal.rstrip("/").split("/")[1:]
    return tuple(whole[:DEPTH])


def path_segments(path: str) -> list[str]:
    """The first `DEPTH` segments of a request's path (then the rest, in one piece: a long
    path costs no more to split). A trailing slash makes an empty last segment, which no key
    has: the walk stops before it, so `/a/b/` finds the routes of `/a/b`."""
    return path.split("/", DEPTH + 1)[1:]


class _Node:
    __slots__ = ("children", "router")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.router: Any = None


class RouteIndex:
    """The router's matching on the routes that can match each path (see the module's doc).
    Install it with `install(router)`."""

    def __init__(self, router: Any):
        self.router = router
        self._root: _Node | None = None
        self._signature: tuple[Any, ...] = ()

    def invalidate(self) -> None:
        """Remake the copies at the next request (after routes were replaced in place)."""
        self._root = None

    def candidates(self, path: str) -> Sequence[BaseRoute]:
        """The routes a request for `path` is matched against, in order."""
        return self._node(path).router.routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.router.app(scope, receive, send)
            return
        if "router" not in scope:  # `url_for` and the like look for names in every route
            scope["router"] = self.router
        await self._node(get_route_path(scope)).router.app(scope, receive, send)

    def _node(self, path: str) -> _Node:
        root = self._current()
        node = root
        for depth, segment in enumerate(path_segments(path)):
            if depth == DEPTH:
                break
            found = node.children.get(segment)
            if found is None:
                break
            node = found
        return node

    def _current(self) -> _Node:
        routes = self.router.routes
        signature = (
            id(routes),
            len(routes),
            getattr(self.router, "_routes_version", None),
            id(routes[0]) if routes else None,
            id(routes[-1]) if routes else None,
        )
        root = self._root
        if root is None or signature != self._signature:
            root = self._build(list(routes))
            self._root, self._signature = root, signature
        return root

    def _build(self, routes: list[BaseRoute]) -> _Node:
        keys = [route_key(r) for r in routes]
        root = _Node()
        for key in keys:  # a node for every prefix of every key
            node = root
            for segment in key:
                node = node.children.setdefault(segment, _Node())

        def fill(node: _Node, prefix: tuple[str, ...]) -> None:
            part = copy.copy(self.router)
            part.routes = [r for r, k in zip(routes, keys, strict=True) if prefix[: len(k)] == k]
            node.router = part
            for segment, child in node.children.items():
                fill(child, (*prefix, segment))

        fill(root, ())
        return root


def install(router: Any) -> RouteIndex | None:
    """Put a `RouteIndex` where `router` calls its own matching; None (nothing done) when the
    router has middleware of its own there."""
    stack = getattr(router, "middleware_stack", None)
    if getattr(stack, "__func__", None) is not getattr(type(router), "app", None):
        return None
    index = RouteIndex(router)
    router.middleware_stack = index
    return index


def invalidate(router: Any) -> None:
    """Tell `router`'s index (when it has one) that its routes were replaced in place."""
    stack = getattr(router, "middleware_stack", None)
    if isinstance(stack, RouteIndex):
        stack.invalidate()


__all__ = ["DEPTH", "RouteIndex", "install", "invalidate", "path_segments", "route_key"]
