"""OpenAPI fragments: each entity's own schema published as it is, plus system fields."""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema.validators import Draft202012Validator

from open_registry.generators.openapi import (
    PROBLEM_SCHEMA,
    SYSTEM_PROPERTIES,
    component_name,
    entity_components,
    filter_parameters,
)
from open_registry.generators.query_ops import OPERATORS
from open_registry.generators.schema import DRAFT_2020_12, EntitySchema, parse_entity_schema


@pytest.fixture(scope="module")
def secretive() -> EntitySchema:
    """An entity with private and internal fields."""
    doc = {
        "$schema": DRAFT_2020_12,
        "type": "object",
        "properties": {
            "name": {"type": "string", "title": "Name"},
            "phone": {"type": "string", "format": "phone"},
            "note": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["name", "note"],
        "x-registry": {"private": ["phone"], "internal": ["note"]},
    }
    return parse_entity_schema(doc, name="cold_chain", source="cold_chain.json")


@pytest.mark.parametrize(
    ("entity", "suffix", "expected"),
    [
        ("facility", "", "Facility"),
        ("cold_chain_equipment", "Input", "ColdChainEquipmentInput"),
        ("FacilityProgramSlot", "", "FacilityProgramSlot"),
        ("side-effect", "Page", "SideEffectPage"),
    ],
)
def test_component_name_is_pascal_case_of_entity_name(entity: str, suffix: str, expected: str):
    assert component_name(entity, suffix) == expected


def test_components_are_named_after_the_entity(secretive: EntitySchema):
    assert sorted(entity_components(secretive)) == sorted(
        ["ColdChain", "ColdChainInput", "ColdChainPatch", "ColdChainPage", "ColdChainSearch"]
    )


def test_input_schema_is_the_entity_schema_without_dialect(shipped: dict[str, EntitySchema]):
    for name, e in shipped.items():
        components = entity_components(e)
        expected = {k: v for k, v in e.json_schema.items() if k != "$schema"}
        assert components[f"{component_name(name)}Input"] == expected, name
    # a copy: editing the document does not edit the entity
    facility = shipped["facility"]
    entity_components(facility)["FacilityInput"]["properties"]["name"]["title"] = "changed"
    assert facility.json_schema["properties"]["name"]["title"] == "Name"


def test_record_schema_adds_system_fields_and_hides_internal_ones(secretive: EntitySchema):
    record = entity_components(secretive)["ColdChain"]
    props = record["properties"]
    assert next(iter(props)) == "id"
    assert {"id", "_version", "_createdAt", "_updatedAt", "_deletedAt"} <= set(props)
    assert props["_version"] == SYSTEM_PROPERTIES["_version"]
    assert "note" not in props
    assert "phone" in props  # private fields are shown to roles allowed to read them
    assert record["required"] == ["id", "name", "_version", "_createdAt", "_updatedAt"]
    assert record["additionalProperties"] is False


def test_record_schema_accepts_a_stored_record(shipped: dict[str, EntitySchema]):
    record = entity_components(shipped["vaccine"])["Vaccine"]
    body = {
        "id": "8f14e45f-ceea-467f-a0e6-0e2b2f4c7f5a",
        "_version": 1,
        "_createdAt": "2026-01-01T00:00:00Z",
        "_updatedAt": "2026-01-01T00:00:00Z",
        "code": "COVAX-A",
        "name": "Covax",
        "manufacturer": "Acme",
        "status": "Active",
    }
    validator = Draft202012Validator(record)
    assert list(validator.iter_errors(body)) == []
    assert not validator.is_valid({k: v for k, v in body.items() if k != "_version"})


def test_patch_schema_allows_null_to_remove_a_field(shipped: dict[str, EntitySchema]):
    patch = entity_components(shipped["facility"])["FacilityPatch"]
    validator = Draft202012Validator(patch)
    assert set(patch["properties"]) == set(shipped["facility"].fields)
    assert "required" not in patch
    assert validator.is_valid({"email": None})
    assert validator.is_valid({"email": "a@b.co", "averageRating": None})
    assert not validator.is_valid({"averageRating": "five"})
    assert not validator.is_valid({"colour": "blue"})


def test_page_refers_to_the_record_component(secretive: EntitySchema):
    page = entity_components(secretive)["ColdChainPage"]
    assert page["properties"]["items"]["items"] == {"$ref": "#/components/schemas/ColdChain"}
    assert page["required"] == ["items", "next"]


def test_search_filters_omit_private_and_internal_fields(secretive: EntitySchema):
    search = entity_components(secretive)["ColdChainSearch"]
    filters = search["properties"]["filters"]
    assert set(filters["properties"]) == {"name", "tags"}
    assert filters["properties"]["name"]["propertyNames"] == {"enum": list(OPERATORS)}
    assert search["examples"][0]["filters"] == {"name": {"eq": "..."}}
    validator = Draft202012Validator(search)
    assert validator.is_valid({"filters": {"name": {"startsWith": "A"}}, "limit": 5})
    assert not validator.is_valid({"filters": {"name": {"like": "A"}}})
    assert not validator.is_valid({"limit": 0})


def test_filter_parameters_omit_private_and_internal_fields(
    secretive: EntitySchema, shipped: dict[str, EntitySchema]
):
    names = [p["name"] for p in filter_parameters(secretive)]
    assert names == ["limit", "cursor", "sort", "count", "name", "tags"]
    recipient = shipped["recipient"]
    recipient_names = {p["name"] for p in filter_parameters(recipient)}
    assert recipient.private
    assert not recipient_names & set(recipient.private)
    assert {"name", "dob", "gender"} <= recipient_names


def test_filter_parameters_carry_the_field_type(shipped: dict[str, EntitySchema]):
    params = {p["name"]: p for p in filter_parameters(shipped["program"])}
    assert params["startDate"]["schema"] == {"type": "string", "format": "date"}
    assert params["status"]["schema"] == {"type": "string", "enum": ["Active", "Inactive"]}
    assert params["vaccineIds"]["schema"] == {"type": "string"}  # nested: dotted paths
    assert "dotted paths" in params["vaccineIds"]["description"]
    assert params["startDate"]["description"].startswith("Start date.")
    assert all(p["in"] == "query" for p in params.values())


def test_problem_schema_lists_every_failing_field():
    error = PROBLEM_SCHEMA["properties"]["errors"]["items"]
    assert error["required"] == ["pointer", "message", "keyword"]
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": "Invalid",
        "status": 422,
        "detail": "2 fields",
        "errors": [{"pointer": "/name", "message": "required", "keyword": "required"}],
    }
    assert Draft202012Validator(PROBLEM_SCHEMA).is_valid(body)
