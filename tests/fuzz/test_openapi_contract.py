"""What the fuzz run (`test_api_fuzz.py`) relies on, checked fast in every test run: each
operation of the OpenAPI document states who may call it (its route's rule), the generated
operations declare what they really answer, and a 405 lists every method of the path."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from open_registry.core import create_app
from open_registry.core.auth.rules import routes_of, rule_of
from open_registry.generators.openapi import STORED_FORMATS, as_stored, finish_operation
from tests.authn import admin_client

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


@pytest.fixture
def app(sqlite_registry: Any) -> Any:
    return create_app(registry=sqlite_registry)


@pytest.fixture
def spec(app: Any) -> dict[str, Any]:
    return app.openapi()


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, op)
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
        if method.upper() in METHODS
    ]


def test_every_operation_states_the_security_of_its_rule(app: Any, spec: dict[str, Any]):
    checked = 0
    for route in routes_of(app):
        rule = rule_of(route)
        if not getattr(route, "include_in_schema", False) or rule is None:
            continue
        for method in route.methods:
            op = spec["paths"][route.path_format][method.lower()]
            expected = [{}] if rule.who == "public" else [{"bearer": []}]
            assert op["security"] == expected, (method, route.path)
            assert op["x-access"]["rule"] == rule.who
            assert op["x-access"]["description"] == rule.describe()
            assert op["description"].endswith(f"Access: {rule.describe()}")
            if rule.who != "public":
                assert {"401"} <= set(op["responses"]), (method, route.path)
            checked += 1
    assert checked > 100
    assert spec["security"] == [{"bearer": []}]


def test_public_and_entity_operations(spec: dict[str, Any]):
    health = spec["paths"]["/health"]["get"]
    assert health["security"] == [{}]
    assert health["x-access"]["rule"] == "public"
    read = spec["paths"]["/api/v1/facility/{id}"]["get"]
    assert read["security"] == [{"bearer": []}]
    assert read["x-access"] == {
        "rule": "entity",
        "description": "facility: x-registry.access.read (records outside the caller's scope "
        "are not found: id)",
        "entity": "facility",
        "operation": "read",
    }


def test_no_response_schema_is_fastapis_placeholder(spec: dict[str, Any]):
    for method, path, op in operations(spec):
        for status, response in op["responses"].items():
            for media, content in (response.get("content") or {}).items():
                schema = content.get("schema", {})
                assert schema.get("type") != "string" or media != "application/json", (
                    method,
                    path,
                    status,
                )
            if status.startswith("4"):
                assert response["content"] == {
                    "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
                }, (method, path, status)
        assert "422" not in op["responses"] or "HTTPValidationError" not in str(op["responses"])
    assert "HTTPValidationError" not in spec["components"]["schemas"]


def test_generated_operations_declare_what_they_answer(spec: dict[str, Any]):
    def ref(response: dict[str, Any], media: str = "application/json") -> str:
        return response["content"][media]["schema"]["$ref"].rsplit("/", 1)[1]

    paths = spec["paths"]
    create = paths["/api/v1/facility"]["post"]["responses"]
    assert ref(create["201"]) == "Facility"
    assert {"Location", "ETag"} <= set(create["201"]["headers"])
    assert {"400", "401", "403", "409", "413", "415", "422"} <= set(create)
    listed = paths["/api/v1/facility"]["get"]["responses"]
    assert ref(listed["200"]) == "FacilityPage"
    read = paths["/api/v1/facility/{id}"]["get"]
    assert ref(read["responses"]["200"]) == "Facility"
    assert "content" not in read["responses"]["304"]
    assert "ETag" in read["responses"]["304"]["headers"]
    assert {"If-None-Match"} <= {p["name"] for p in read["parameters"]}
    for method in ("put", "patch", "delete"):
        op = paths["/api/v1/facility/{id}"][method]
        assert {"If-Match"} <= {p.get("name") for p in op["parameters"]}, method
        assert {"404", "412"} <= set(op["responses"]), method
    assert "content" not in paths["/api/v1/facility/{id}"]["delete"]["responses"]["204"]
    export = paths["/api/v1/facility/export"]["get"]["responses"]["200"]["content"]
    assert set(export) == {"text/csv", "application/x-ndjson"}
    page = spec["components"]["schemas"]["FacilityPage"]
    assert set(page["properties"]) == {"items", "next", "total"}


def test_a_record_requires_no_private_field_and_states_stored_formats(spec: dict[str, Any]):
    schemas = spec["components"]["schemas"]
    # left out for callers without the private grant (a facility's staff)
    assert "mobileNumber" not in schemas["Vaccinator"]["required"]
    assert "mobileNumber" in schemas["VaccinatorInput"]["required"]
    # stored as the registry checks it: "09:30" is a time (not only RFC 3339's "09:30:00Z")
    start = schemas["Facility"]["properties"]["programs"]["items"]["properties"]["schedule"][
        "properties"
    ]["startTime"]
    assert "format" not in start and re.fullmatch(start["pattern"].strip("^$"), "09:30")
    assert (
        schemas["FacilityInput"]["properties"]["programs"]["items"]["properties"]["schedule"][
            "properties"
        ]["startTime"]["format"]
        == "time"
    )


def test_405_lists_every_method_of_the_path(app: Any, spec: dict[str, Any]):
    with admin_client(app) as client:
        resp = client.put("/api/v1/facility")
        assert resp.status_code == 405
        assert resp.headers["content-type"] == "application/problem+json"
        assert resp.headers["allow"] == "GET, POST"
        resp = client.post("/api/v1/facility/some-id")
        assert resp.status_code == 405
        assert resp.headers["allow"] == "DELETE, GET, PATCH, PUT"
        for path, ops in spec["paths"].items():
            url = re.sub(r"\{[^}]+\}", "0", path)
            documented = {m.upper() for m in ops}
            for method in sorted(set(METHODS) - documented):
                resp = client.request(method, url)
                if resp.status_code != 405:  # another route of that method takes the URL
                    continue
                allow = set(resp.headers["allow"].split(", "))
                assert documented <= allow and method not in allow, (method, path, allow)


def test_405_outside_the_api_keeps_the_routers_allow(app: Any):
    with TestClient(app) as client:
        resp = client.post("/docs/assets/swagger-ui.css")
        assert resp.status_code == 405
        assert resp.headers["allow"] == "GET, HEAD"


def test_finish_operation_replaces_fastapis_placeholders():
    placeholder = {"application/json": {"schema": {"type": "string"}}}
    op: dict[str, Any] = {
        "responses": {
            "200": {"content": {**placeholder, "image/png": {}}},
            "201": {"content": {"application/json": {"schema": {"type": "string", "$ref": "#/x"}}}},
            "202": {"content": dict(placeholder)},
            "422": {
                "content": {
                    "application/json": {
                        "schema": {"$ref": "#/components/schemas/HTTPValidationError"}
                    }
                }
            },
        }
    }
    finish_operation(
        op,
        public=False,
        access={"rule": "signed-in", "description": "any signed-in caller"},
        declared={200: {"content": {"image/png": {}}}},
    )
    responses = op["responses"]
    assert responses["200"]["content"] == {"image/png": {}}
    assert responses["201"]["content"]["application/json"]["schema"] == {"$ref": "#/x"}
    assert responses["202"]["content"]["application/json"]["schema"] == {}
    assert "422" not in responses and {"400", "401", "4XX"} <= set(responses)
    assert "403" not in responses  # signed-in: nobody is refused for their roles
    assert op["security"] == [{"bearer": []}]
    assert op["description"] == "Access: any signed-in caller"


def test_as_stored_rewrites_loose_formats_only_in_schemas():
    schema = {
        "type": "object",
        "properties": {
            "format": {"type": "string", "format": "time"},
            "default": {"type": "string", "format": "email", "pattern": "^a"},
            "day": {"type": "string", "format": "date"},
        },
        "examples": [{"format": "time"}],
    }
    stored = as_stored(schema)
    assert stored["properties"]["format"] == {"type": "string", "pattern": STORED_FORMATS["time"]}
    assert stored["properties"]["default"] == {"type": "string", "pattern": "^a"}
    assert stored["properties"]["day"]["format"] == "date"
    assert stored["examples"] == [{"format": "time"}]
    assert schema["properties"]["format"]["format"] == "time"  # a copy
