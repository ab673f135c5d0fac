"""DIVOC's opensaber schema files (tests/fixtures/divoc) load unchanged and serve CRUD."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from open_registry.core import Settings, create_app
from open_registry.core.app import open_registry
from tests.authn import admin_client
from tests.conftest import FIXTURES
from tests.samples import sample_value

DIVOC = FIXTURES / "divoc" / "registry"
ENTITIES = sorted(p.stem for p in DIVOC.glob("*.json") if p.stem != "Common")


@pytest.fixture
def divoc(settings: Settings) -> Iterator[tuple[Any, TestClient]]:
    reg = open_registry(settings.with_(schema_dirs=(DIVOC,), default_schemas=False))
    with admin_client(create_app(registry=reg)) as c:
        yield reg, c
    reg.close()


def test_all_fourteen_files_load(divoc: Any):
    reg, _ = divoc
    assert len(list(DIVOC.glob("*.json"))) == 14
    assert sorted(reg.schemas.entities) == ENTITIES  # Common.json holds shared definitions only
    assert all(e.origin == "opensaber" for e in reg.schemas)
    facility = reg.schemas["Facility"]
    assert facility.uniques == (("facilityCode",),)
    assert facility.fields["address"].schema["required"] == [
        "addressLine1",
        "district",
        "state",
        "pincode",
    ]
    assert reg.schemas["Enrollment"].indexes == (("phone", "code"),)
    assert reg.schemas["FacilityProgramSlot"].uniques == (("facilityId", "programId"),)
    warnings = [str(w) for w in reg.schemas.warnings]
    assert any("recipientMobileNumber" in w for w in warnings)


@pytest.mark.parametrize("entity", ENTITIES)
def test_divoc_entity_serves_crud(divoc: Any, entity: str):
    reg, c = divoc
    schema = reg.schemas[entity].json_schema
    body = sample_value(dict(schema), full=True)
    created = c.post(f"/api/v1/{entity}", json=body)
    assert created.status_code == 201, created.text
    rid = created.json()["id"]
    assert c.get(f"/api/v1/{entity}/{rid}").json()["_version"] == 1
    fields = reg.schemas[entity].fields
    name = next(
        (
            k
            for k, f in fields.items()
            if f.kind == "string" and not f.enum and "format" not in f.schema
        ),
        None,
    )
    value: Any = "changed"
    if name is None:  # SideEffects has only lists: a list of text, searched by element
        name = next(
            k
            for k, f in fields.items()
            if f.schema.get("type") == "array" and f.schema["items"].get("type") == "string"
        )
        value = ["changed"]
    patched = c.patch(f"/api/v1/{entity}/{rid}", json={name: value})
    assert patched.status_code == 200 and patched.json()[name] == value
    found = c.get(f"/api/v1/{entity}", params={name: "changed"}).json()["items"]
    assert [r["id"] for r in found] == [rid]
    assert c.delete(f"/api/v1/{entity}/{rid}").status_code == 204


def test_divoc_facility_rejects_what_its_schema_rejects(divoc: Any):
    _, c = divoc
    resp = c.post("/api/v1/Facility", json={"facilityCode": "F1", "category": "STATE"})
    pointers = {e["pointer"] for e in resp.json()["errors"]}
    assert resp.status_code == 422
    assert {"/category", "/facilityName", "/address"} <= pointers
