"""`dispatch.RouteIndex`: each request is matched against the routes that can match its path
only, and what is chosen is what the whole list of routes chooses (full match, else partial
match, else the trailing-slash redirect, else 404), with the built-in plugins' routes too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import BaseRoute, Match, Mount

from open_registry.core import Settings, create_app, dispatch
from open_registry.core.app import open_registry

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder: Path = tmp_path_factory.mktemp("dispatch")
    settings = Settings(data_dir=folder, database_url=f"sqlite:///{folder}/r.db", demo_data=False)
    reg = open_registry(settings)
    try:
        yield create_app(registry=reg)
    finally:
        reg.close()


def chosen(routes: list[BaseRoute], scope: dict[str, Any]) -> tuple[str, BaseRoute | None]:
    """What Starlette's loop picks among `routes`: the first full match, else the first
    partial one, else a route matching the path with its trailing slash toggled (redirect)."""
    partial = None
    for route in routes:
        match, _ = route.matches(dict(scope))
        if match == Match.FULL:
            return "full", route
        if match == Match.PARTIAL and partial is None:
            partial = route
    if partial is not None:
        return "partial", partial
    path = scope["path"]
    other = {**scope, "path": path.rstrip("/") if path.endswith("/") else path + "/"}
    for route in routes:
        if route.matches(dict(other))[0] != Match.NONE:
            return "redirect", route
    return "none", None


def paths_to_try(app: Any) -> list[str]:
    """Every route's own path (parameters filled in), with and without a trailing slash, a
    segment more, and paths no route has."""
    out = ["/", "/nowhere", "/api", "/api/v1", "/api/v1/", "/api/v1/nothing/x", "//api/v1"]
    for route in app.router.routes:
        path = getattr(route, "path_format", None) or getattr(route, "path", None)
        if not isinstance(path, str):
            continue
        filled = path.replace("{", "x").replace("}", "").replace(":path", "")
        out += [filled, filled + "/", filled.rstrip("/") + "/more", filled + "x"]
    return sorted(set(out))


@pytest.mark.parametrize("root_path", ["", "/registry"])
def test_the_index_chooses_what_the_whole_list_chooses(app: Any, root_path: str) -> None:
    index = app.router.middleware_stack
    assert isinstance(index, dispatch.RouteIndex)
    routes = list(app.router.routes)
    tried = 0
    for path in paths_to_try(app):
        candidates = list(index.candidates(path))
        assert len(candidates) <= len(routes)
        for method in METHODS:
            scope = {"type": "http", "method": method, "path": root_path + path,
                     "root_path": root_path, "headers": []}  # fmt: skip
            assert chosen(candidates, scope) == chosen(routes, scope), (method, path)
            tried += 1
    assert tried > 1000
    # and it does leave routes out: an entity's read is not tried against the pages
    read = index.candidates("/api/v1/facility/some-id")
    assert len(read) < len(routes) / 4
    assert not any(getattr(r, "literal", "/api/").startswith("/ui/") for r in read)
    assert not any(isinstance(r, Mount) for r in read)  # /docs/assets, /ui/static


def test_requests_through_the_index(app: Any) -> None:
    """End to end: an entity route, a page, a static file under a mount, an included router's
    route, a 405 naming the methods, the trailing-slash redirect and a 404."""
    with TestClient(app) as client:
        assert client.get("/api/v1/facility?limit=1").status_code in (200, 401)
        assert client.get("/ui/login").status_code == 200
        assert client.get("/docs/assets/swagger-ui.css").status_code == 200
        assert client.post("/api/v1/auth/login", json={}).status_code in (400, 422)
        refused = client.put("/api/v1/facility")
        assert refused.status_code == 405 and "POST" in refused.headers["allow"]
        moved = client.get("/api/v1/", follow_redirects=False)
        assert moved.status_code == 307 and moved.headers["location"].endswith("/api/v1")
        assert client.get("/api/v1/nothing/here").status_code == 404


def test_routes_added_or_replaced_later_are_found(app: Any) -> None:
    """A route appended after requests were served is found (the index sees the list change);
    routes replaced in place by `api.swap_routes` too (it invalidates the index)."""
    from open_registry.core import api

    with TestClient(app) as client:
        assert client.get("/late/route").status_code == 404

        async def late(request: Request) -> Any:
            return PlainTextResponse("late")

        app.router.routes.append(APIRoute("/late/route", late, name="late"))
        try:
            assert client.get("/late/route").text == "late"

            async def later(request: Request) -> Any:
                return PlainTextResponse("later")

            api.swap_routes(app.router, [APIRoute("/late/route", later, name="late")])
            assert client.get("/late/route").text == "later"
        finally:
            app.router.routes[:] = [
                r for r in app.router.routes if getattr(r, "name", None) != "late"
            ]
            dispatch.invalidate(app.router)
        assert client.get("/late/route").status_code == 404
