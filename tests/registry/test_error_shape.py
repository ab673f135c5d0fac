"""One error shape for every route: walk all routes, make each fail, check the problem body."""

from __future__ import annotations

from typing import Any

from fastapi.routing import APIRoute

from tests.authn import admin_client

PROBLEM_KEYS = {"type", "title", "status", "detail"}


def failing_request(client: Any, route: APIRoute, method: str) -> Any:
    """A request to `route` that must fail: unknown id, or a body that is not JSON."""
    path = route.path.replace("{id}", "00000000-0000-0000-0000-000000000000")
    if method in ("POST", "PUT", "PATCH"):
        return client.request(
            method, path, content=b"{broken", headers={"content-type": "application/json"}
        )
    if method == "GET" and "{id}" not in route.path:
        return client.request(method, path, params={"limit": "-1"})
    return client.request(method, path)


def test_every_api_route_fails_with_problem_json(client: Any):
    checked = 0
    for route in client.app.routes:
        if not isinstance(route, APIRoute) or not route.path.startswith("/api/v1/"):
            continue
        for method in route.methods:
            resp = failing_request(client, route, method)
            assert 400 <= resp.status_code < 500, (method, route.path, resp.status_code)
            assert resp.headers["content-type"].startswith("application/problem+json"), route.path
            body = resp.json()
            assert set(body) >= PROBLEM_KEYS, (route.path, body)
            assert body["status"] == resp.status_code
            if "errors" in body:
                for err in body["errors"]:
                    assert set(err) == {"pointer", "message", "keyword"}
            checked += 1
    assert checked >= 5 * 7  # seven routes per shipped entity


def test_unknown_path_and_method_are_problem_json(client: Any):
    for resp, status in ((client.get("/nowhere"), 404), (client.put("/api/v1/facility"), 405)):
        assert resp.status_code == status
        assert resp.headers["content-type"].startswith("application/problem+json")
        assert set(resp.json()) >= PROBLEM_KEYS


def test_bad_query_parameter_type_is_problem_json(client: Any):
    resp = client.delete("/api/v1/facility/x", params={"purge": "perhaps"})
    assert resp.status_code == 400
    assert resp.json()["errors"][0]["pointer"].endswith("/purge")


def test_unexpected_exception_is_a_500_problem_without_internals(client: Any, monkeypatch: Any):
    service = client.app.state.registry.services["vaccine"]

    def boom(*_a: Any, **_k: Any) -> None:
        raise RuntimeError("secret internals")

    async def async_boom(*_a: Any, **_k: Any) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(service, "get", boom)
    monkeypatch.setattr(service, "get_async", async_boom)  # PostgreSQL's reads from the loop

    with admin_client(client.app, raise_server_exceptions=False) as c:
        resp = c.get("/api/v1/vaccine/abc")
    assert resp.status_code == 500
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert "secret internals" not in resp.text
