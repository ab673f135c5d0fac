"""`parse_entity_schema` on native JSON Schema 2020-12 documents, and `check_schema_set`."""

from __future__ import annotations

from typing import Any

import pytest

from open_registry.generators.errors import SchemaError, SchemaIssue
from open_registry.generators.schema import (
    DRAFT_2020_12,
    EntitySchema,
    Reference,
    check_schema_set,
    parse_entity_schema,
)


def entity_doc(
    properties: dict[str, Any] | None = None,
    *,
    required: list[str] | None = None,
    xreg: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A native entity document; by default one `name` string field."""
    doc: dict[str, Any] = {
        "$schema": DRAFT_2020_12,
        "type": "object",
        "properties": properties if properties is not None else {"name": {"type": "string"}},
        "additionalProperties": False,
    }
    if required is not None:
        doc["required"] = required
    if xreg is not None:
        doc["x-registry"] = xreg
    doc.update(extra)
    return doc


def parse(doc: Any, name: str = "thing") -> EntitySchema:
    return parse_entity_schema(doc, name=name, source=f"{name}.json")


def issues_of(doc: Any, name: str = "thing") -> list[SchemaIssue]:
    with pytest.raises(SchemaError) as exc:
        parse(doc, name)
    assert exc.value.issues, "SchemaError without issues"
    return exc.value.issues


def only_issue(doc: Any, name: str = "thing") -> SchemaIssue:
    issues = issues_of(doc, name)
    assert len(issues) == 1, [str(i) for i in issues]
    return issues[0]


# --- field kinds -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "kind", "nullable"),
    [
        ({"type": "string"}, "string", False),
        ({"type": "integer"}, "integer", False),
        ({"type": "number"}, "number", False),
        ({"type": "boolean"}, "boolean", False),
        ({"type": "string", "format": "date"}, "date", False),
        ({"type": "string", "format": "date-time"}, "datetime", False),
        ({"type": "string", "format": "email"}, "string", False),
        ({"type": "object", "properties": {"a": {"type": "string"}}}, "json", False),
        ({"type": "array", "items": {"type": "string"}}, "json", False),
        ({"type": ["string", "null"]}, "string", True),
        ({"type": ["integer", "null"]}, "integer", True),
        ({"type": ["string", "null"], "format": "date"}, "date", True),
        ({"type": ["string", "integer"]}, "json", False),
        ({"enum": ["a", "b"]}, "string", False),
        ({"enum": [1, 2, None]}, "integer", True),
        ({"enum": ["a", 1]}, "json", False),
        ({"const": True}, "boolean", False),
        ({"anyOf": [{"type": "string"}, {"type": "integer"}]}, "json", False),
        ({"type": "string", "oneOf": [{"maxLength": 2}, {"minLength": 5}]}, "json", False),
        ({}, "json", False),
    ],
)
def test_property_schema_maps_to_column_kind(schema: dict[str, Any], kind: str, nullable: bool):
    field = parse(entity_doc({"x": schema})).fields["x"]
    assert (field.kind, field.nullable) == (kind, nullable)


def test_field_keeps_title_description_max_length_and_enum():
    e = parse(
        entity_doc(
            {
                "code": {"type": "string", "title": "Code", "description": "d", "maxLength": 12},
                "status": {"type": "string", "enum": ["Active", "Inactive"]},
                "count": {"type": "integer", "maxLength": 3},
            }
        )
    )
    code, status, count = e.fields["code"], e.fields["status"], e.fields["count"]
    assert (code.title, code.description, code.max_length) == ("Code", "d", 12)
    assert status.enum == ("Active", "Inactive")
    assert count.max_length is None  # maxLength only means something for strings


def test_required_fields_are_marked_and_listed_in_order():
    e = parse(
        entity_doc(
            {"a": {"type": "string"}, "b": {"type": "string"}, "c": {"type": "string"}},
            required=["c", "a"],
        )
    )
    assert e.required == ("a", "c")
    assert not e.fields["b"].required


def test_entity_title_description_and_validation_schema():
    doc = entity_doc(
        {"name": {"$ref": "#/$defs/name"}},
        title="A thing",
        description="Things.",
        **{"$defs": {"name": {"type": "string", "minLength": 1}}},
        xreg={"indexed": ["name"]},
    )
    del doc["$schema"]  # leaving it out is allowed
    e = parse(doc)
    assert (e.title, e.description, e.origin) == ("A thing", "Things.", "native")
    assert e.json_schema["$schema"] == DRAFT_2020_12
    assert e.json_schema["additionalProperties"] is False
    assert "x-registry" not in e.json_schema
    assert "$defs" not in e.json_schema
    assert e.json_schema["properties"]["name"] == {"type": "string", "minLength": 1}


def test_title_defaults_to_entity_name():
    assert parse(entity_doc(), name="cold_chain").title == "cold_chain"


# --- x-registry: indexes, uniques, references, private/internal, access, owner, display -------


def test_single_and_composite_indexes_and_uniques():
    e = parse(
        entity_doc(
            {
                "code": {"type": "string"},
                "name": {"type": "string"},
                "dob": {"type": "string", "format": "date"},
                "tags": {"type": "array", "items": {"type": "string"}},
            },
            xreg={
                "indexed": ["name", ["name", "dob"], "tags"],
                "unique": ["code", ["name", "dob"]],
            },
        )
    )
    assert e.indexes == (("name",), ("name", "dob"), ("tags",))
    assert e.uniques == (("code",), ("name", "dob"))


def test_references_in_string_and_object_forms_and_through_arrays():
    e = parse(
        entity_doc(
            {
                "facilityId": {"type": "string"},
                "vaccineCodes": {"type": "array", "items": {"type": "string"}},
                "programs": {
                    "type": "array",
                    "items": {"type": "object", "properties": {"programId": {"type": "string"}}},
                },
            },
            xreg={
                "references": {
                    "facilityId": "facility",
                    "vaccineCodes": {"entity": "vaccine", "field": "code"},
                    "programs.programId": {"entity": "program", "field": "code"},
                }
            },
        )
    )
    assert e.references == (
        Reference("facilityId", "facility", "id"),
        Reference("vaccineCodes", "vaccine", "code"),
        Reference("programs.programId", "program", "code"),
    )


def test_private_internal_access_owner_and_display():
    e = parse(
        entity_doc(
            {
                "name": {"type": "string"},
                "phone": {"type": "string"},
                "secret": {"type": "string"},
                "facility": {"type": "object", "properties": {"code": {"type": "string"}}},
            },
            xreg={
                "private": ["phone"],
                "internal": ["secret"],
                "access": {"create": ["system-admin"], "read": ["public"]},
                "owner": "facility.code",
                "display": "phone",
            },
        )
    )
    assert e.private == ("phone",)
    assert e.internal == ("secret",)
    assert e.access == {"create": ("system-admin",), "read": ("public",)}
    assert e.owner == "facility.code"
    assert e.display == "phone"


@pytest.mark.parametrize(
    ("properties", "display"),
    [
        ({"code": {"type": "string"}, "name": {"type": "string"}}, "name"),
        ({"count": {"type": "integer"}, "label": {"type": "string"}}, "label"),
        ({"count": {"type": "integer"}}, None),
    ],
)
def test_display_field_is_guessed_when_not_given(properties: dict[str, Any], display: str | None):
    assert parse(entity_doc(properties)).display == display


def test_table_name_is_snake_case_of_entity_name():
    assert parse(entity_doc(), name="FacilityProgramSlot").table_name == "facility_program_slot"
    assert parse(entity_doc(), name="cold_chain").table_name == "cold_chain"


# --- every error names the file, the JSON pointer and the reason ------------------------------


def test_unknown_x_registry_key_is_reported_with_pointer():
    issue = only_issue(entity_doc(xreg={"indexes": ["name"]}))
    assert issue.source == "thing.json"
    assert issue.pointer == "/x-registry/indexes"
    assert "unknown setting 'indexes'" in issue.message
    assert "indexed" in issue.message  # lists the known settings
    assert str(issue) == f"thing.json: /x-registry/indexes: {issue.message}"


def test_index_on_missing_field_is_reported_with_pointer():
    issue = only_issue(entity_doc(xreg={"indexed": ["name", ["name", "nope"]]}))
    assert issue.pointer == "/x-registry/indexed/1"
    assert "'nope' does not exist" in issue.message


def test_unique_on_nested_field_is_reported_with_pointer():
    doc = entity_doc(
        {"name": {"type": "string"}, "address": {"type": "object"}},
        xreg={"unique": ["name", "address"]},
    )
    issue = only_issue(doc)
    assert issue.pointer == "/x-registry/unique/1"
    assert "'address' is a nested value" in issue.message


def test_unique_on_dotted_path_is_reported_as_missing_field():
    doc = entity_doc(
        {"address": {"type": "object", "properties": {"pin": {"type": "string"}}}},
        xreg={"unique": ["address.pin"]},
    )
    issue = only_issue(doc)
    assert issue.pointer == "/x-registry/unique/0"
    assert "'address.pin' does not exist" in issue.message


@pytest.mark.parametrize("value", ["name", [[]], [5]])
def test_malformed_index_list_is_reported_with_pointer(value: Any):
    issue = only_issue(entity_doc(xreg={"indexed": value}))
    assert issue.pointer.startswith("/x-registry/indexed")
    assert "field name" in issue.message


def test_reference_to_missing_field_is_reported_with_pointer():
    doc = entity_doc(
        {"programs": {"type": "array", "items": {"type": "object", "properties": {}}}},
        xreg={"references": {"programs.programId": "program"}},
    )
    issue = only_issue(doc)
    assert issue.pointer == "/x-registry/references/programs.programId"
    assert "'programs.programId' does not exist" in issue.message


def test_reference_from_non_id_field_is_reported_with_pointer():
    doc = entity_doc({"flag": {"type": "boolean"}}, xreg={"references": {"flag": "facility"}})
    issue = only_issue(doc)
    assert issue.pointer == "/x-registry/references/flag"
    assert "strings or integers" in issue.message


def test_malformed_reference_target_is_reported_with_pointer():
    doc = entity_doc(xreg={"references": {"name": {"entity": "facility", "column": "code"}}})
    issue = only_issue(doc)
    assert issue.pointer == "/x-registry/references/name"
    assert '{"entity": ..., "field": ...}' in issue.message


def test_bad_access_operation_is_reported_with_pointer():
    issue = only_issue(entity_doc(xreg={"access": {"read": ["public"], "list": ["public"]}}))
    assert issue.pointer == "/x-registry/access/list"
    assert "unknown operation 'list'" in issue.message


def test_access_roles_not_a_list_is_reported_with_pointer():
    issue = only_issue(entity_doc(xreg={"access": {"read": "public"}}))
    assert issue.pointer == "/x-registry/access/read"
    assert "list of role names" in issue.message


@pytest.mark.parametrize("key", ["private", "internal"])
def test_private_or_internal_missing_field_is_reported_with_pointer(key: str):
    issue = only_issue(entity_doc(xreg={key: ["name", "ghost"]}))
    assert issue.pointer == f"/x-registry/{key}/1"
    assert "'ghost' does not exist" in issue.message


@pytest.mark.parametrize("key", ["owner", "display"])
def test_owner_or_display_missing_field_is_reported_with_pointer(key: str):
    issue = only_issue(entity_doc(xreg={key: "ghost"}))
    assert issue.pointer == f"/x-registry/{key}"
    assert "'ghost' does not exist" in issue.message


def test_x_registry_not_an_object_is_reported():
    issue = only_issue(entity_doc(xreg=["indexed"]))  # type: ignore[arg-type]
    assert issue.pointer == "/x-registry"


@pytest.mark.parametrize("fname", ["id", "_version", "_x", "_deletedAt"])
def test_reserved_field_name_is_reported_with_pointer(fname: str):
    issue = only_issue(entity_doc({"name": {"type": "string"}, fname: {"type": "string"}}))
    assert issue.pointer == f"/properties/{fname}"
    assert "reserved for system fields" in issue.message


@pytest.mark.parametrize("fname", ["address.line1", "1st", "with space", "x" * 64])
def test_field_name_not_usable_as_column_is_reported_with_pointer(fname: str):
    issue = only_issue(entity_doc({"name": {"type": "string"}, fname: {"type": "string"}}))
    assert issue.pointer == f"/properties/{fname}"
    assert "no dots" in issue.message


def test_field_name_with_slash_is_escaped_in_pointer():
    issue = only_issue(entity_doc({"a/b": {"type": "string"}}))
    assert issue.pointer == "/properties/a~1b"


def test_top_level_additional_properties_true_is_reported():
    issue = only_issue(entity_doc(additionalProperties=True))
    assert issue.pointer == "/additionalProperties"
    assert "must be false" in issue.message


def test_top_level_additional_properties_left_out_is_accepted():
    doc = entity_doc()
    del doc["additionalProperties"]
    assert parse(doc).json_schema["additionalProperties"] is False


def test_entity_that_is_not_an_object_is_reported():
    issue = only_issue(entity_doc(type="array"))
    assert issue.pointer == "/type"


def test_wrong_schema_dialect_is_reported_with_pointer():
    issue = only_issue(entity_doc(**{"$schema": "https://json-schema.org/draft/2019-09/schema"}))
    assert issue.pointer == "/$schema"
    assert DRAFT_2020_12 in issue.message
    assert "2019-09" in issue.message


def test_schema_dialect_with_trailing_hash_is_accepted():
    assert parse(entity_doc(**{"$schema": DRAFT_2020_12 + "#"})).name == "thing"


def test_invalid_json_schema_is_reported_with_pointer():
    issue = only_issue(entity_doc({"x": {"type": 5}}))
    assert issue.pointer == "/properties/x/type"
    assert "not valid JSON Schema 2020-12" in issue.message


def test_invalid_json_schema_in_nested_items_is_reported_with_pointer():
    doc = entity_doc({"xs": {"type": "array", "items": {"minLength": -1}}})
    issue = only_issue(doc)
    assert issue.pointer == "/properties/xs/items/minLength"


@pytest.mark.parametrize("properties", [{}, None])
def test_entity_without_properties_is_reported(properties: dict[str, Any] | None):
    doc = entity_doc()
    if properties is None:
        del doc["properties"]
    else:
        doc["properties"] = properties
    issue = only_issue(doc)
    assert issue.pointer == "/properties"
    assert "at least one property" in issue.message


def test_undeclared_required_field_is_reported():
    issue = only_issue(entity_doc(required=["name", "ghost"]))
    assert issue.pointer == "/required"
    assert "'ghost'" in issue.message


@pytest.mark.parametrize("name", ["1facility", "facility-site", "", "a" * 64, "fac ility"])
def test_bad_entity_name_is_reported(name: str):
    issue = only_issue(entity_doc(), name=name)
    assert issue.pointer == ""
    assert repr(name) in issue.message
    assert "must start with a letter" in issue.message


def test_document_that_is_not_an_object_is_reported():
    issue = only_issue(["not", "a", "schema"])
    assert "JSON object" in issue.message


def test_dangling_local_ref_is_reported_with_pointer():
    issue = only_issue(entity_doc({"address": {"$ref": "#/$defs/nowhere"}}))
    assert issue.pointer == "/properties/address/$ref"
    assert "points to nothing" in issue.message


def test_several_problems_are_reported_at_once():
    doc = entity_doc(
        {
            "name": {"type": "string"},
            "id": {"type": "string"},
            "a.b": {"type": "string"},
            "meta": {"type": "object"},
        },
        required=["ghost"],
        additionalProperties=True,
        xreg={
            "bogus": True,
            "indexed": ["nope"],
            "unique": ["meta"],
            "references": {"missing": "facility"},
            "access": {"publish": ["x"]},
            "owner": "nobody",
        },
    )
    pointers = sorted(i.pointer for i in issues_of(doc))
    assert pointers == sorted(
        [
            "/additionalProperties",
            "/required",
            "/properties/id",
            "/properties/a.b",
            "/x-registry/bogus",
            "/x-registry/indexed/0",
            "/x-registry/unique/0",
            "/x-registry/references/missing",
            "/x-registry/access/publish",
            "/x-registry/owner",
        ]
    )


def test_several_json_schema_problems_are_reported_at_once():
    doc = entity_doc({"a": {"type": 5}, "b": {"minLength": "x"}})
    doc["$schema"] = "http://json-schema.org/draft-07/schema#"
    pointers = sorted(i.pointer for i in issues_of(doc))
    assert pointers == ["/$schema", "/properties/a/type", "/properties/b/minLength"]


def test_schema_error_message_lists_every_issue():
    with pytest.raises(SchemaError) as exc:
        parse(entity_doc(xreg={"bogus": 1, "indexed": ["nope"]}))
    text = str(exc.value)
    assert "thing.json: /x-registry/bogus:" in text
    assert "thing.json: /x-registry/indexed/0:" in text


# --- check_schema_set: problems across files --------------------------------------------------


def test_reference_to_unknown_entity_is_reported():
    a = parse(
        entity_doc({"otherId": {"type": "string"}}, xreg={"references": {"otherId": "ghost"}})
    )
    (issue,) = check_schema_set([a])
    assert issue.source == "thing.json"
    assert issue.pointer == "/x-registry/references/otherId"
    assert "unknown entity 'ghost'" in issue.message
    assert "known: thing" in issue.message


def test_reference_to_non_unique_field_is_reported():
    facility = parse(
        entity_doc(
            {"code": {"type": "string"}, "name": {"type": "string"}}, xreg={"unique": ["code"]}
        ),
        name="facility",
    )
    ok = parse(
        entity_doc(
            {"f": {"type": "string"}},
            xreg={"references": {"f": {"entity": "facility", "field": "code"}}},
        ),
        name="staff",
    )
    bad = parse(
        entity_doc(
            {"f": {"type": "string"}},
            xreg={"references": {"f": {"entity": "facility", "field": "name"}}},
        ),
        name="visit",
    )
    assert check_schema_set([facility, ok]) == []
    (issue,) = check_schema_set([facility, ok, bad])
    assert issue.source == "visit.json"
    assert issue.pointer == "/x-registry/references/f"
    assert "facility.name must be declared unique" in issue.message


def test_reference_to_field_in_composite_unique_is_reported():
    facility = parse(
        entity_doc(
            {"a": {"type": "string"}, "b": {"type": "string"}}, xreg={"unique": [["a", "b"]]}
        ),
        name="facility",
    )
    other = parse(
        entity_doc(
            {"f": {"type": "string"}},
            xreg={"references": {"f": {"entity": "facility", "field": "a"}}},
        ),
        name="other",
    )
    assert len(check_schema_set([facility, other])) == 1


def test_table_name_clash_is_reported():
    upper = parse(entity_doc(), name="Facility")
    lower = parse(entity_doc(), name="facility")
    (issue,) = check_schema_set([upper, lower])
    assert issue.source == "facility.json"
    assert "table 'facility'" in issue.message
    assert "already taken by 'Facility' (Facility.json)" in issue.message


def test_camel_and_snake_names_of_same_table_clash():
    issues = check_schema_set(
        [parse(entity_doc(), name="ColdChain"), parse(entity_doc(), name="cold_chain")]
    )
    assert len(issues) == 1


# --- the shipped schemas ----------------------------------------------------------------------


def test_shipped_schemas_parse_without_warnings(shipped: dict[str, EntitySchema]):
    assert sorted(shipped) == ["facility", "program", "recipient", "vaccinator", "vaccine"]
    for e in shipped.values():
        assert e.warnings == (), e.name
        assert e.origin == "native"


def test_shipped_schemas_form_a_consistent_set(shipped: dict[str, EntitySchema]):
    assert check_schema_set(shipped.values()) == []


def test_shipped_facility_parses_to_the_expected_model(shipped: dict[str, EntitySchema]):
    facility = shipped["facility"]
    assert facility.fields["address"].kind == "json"
    assert facility.fields["address"].schema["properties"]["district"]["type"] == "string"
    assert facility.fields["averageRating"].kind == "number"
    assert facility.uniques == (("code",),)
    assert Reference("programs.programId", "program", "code") in facility.references
    assert facility.owner == "code"


def test_shipped_recipient_parses_to_the_expected_model(shipped: dict[str, EntitySchema]):
    recipient = shipped["recipient"]
    assert recipient.fields["dob"].kind == "date"
    assert recipient.fields["yob"].kind == "integer"
    assert recipient.indexes == (("name",), ("name", "dob"))
    assert set(recipient.private) == {"identity", "phone", "email"}
