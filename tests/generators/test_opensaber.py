"""opensaber / Sunbird RC schema files (DIVOC's, copied verbatim to tests/fixtures/divoc) load
unchanged, translated to the same model as native schemas."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from open_registry.generators.errors import SchemaError
from open_registry.generators.opensaber import is_definitions_only, is_opensaber
from open_registry.generators.schema import DRAFT_2020_12, EntitySchema, parse_entity_schema
from open_registry.generators.validators import RecordValidator

DIVOC_ENTITIES = (
    "Enrollment",
    "Facility",
    "FacilityProgramSlot",
    "Medicine",
    "Program",
    "RecipientSideEffects",
    "RevokedCertificate",
    "SideEffects",
    "Signature",
    "Symptom",
    "TestCertificate",
    "VaccinationCertificate",
    "Vaccinator",
)


@pytest.fixture(scope="module")
def divoc(divoc_docs: dict[str, dict[str, Any]]) -> dict[str, EntitySchema]:
    return {
        fname[:-5]: parse_entity_schema(doc, name=fname[:-5], source=fname, siblings=divoc_docs)
        for fname, doc in divoc_docs.items()
        if not is_definitions_only(doc)
    }


def keys_anywhere(node: Any) -> set[str]:
    if isinstance(node, dict):
        return set(node).union(*(keys_anywhere(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(keys_anywhere(v) for v in node))
    return set()


def opensaber_doc(
    properties: dict[str, Any], os_config: dict[str, Any] | None = None, **definition: Any
) -> dict[str, Any]:
    """A synthetic opensaber file for entity `Thing`, shaped like DIVOC's."""
    return {
        "$schema": "http://json-schema.org/draft-07/schema",
        "type": "object",
        "properties": {"Thing": {"$ref": "#/definitions/Thing"}},
        "required": ["Thing"],
        "title": "Thing",
        "definitions": {"Thing": {"type": "object", "properties": properties, **definition}},
        "_osConfig": os_config if os_config is not None else {},
    }


def parse_thing(doc: dict[str, Any], **siblings: dict[str, Any]) -> EntitySchema:
    return parse_entity_schema(doc, name="Thing", source="Thing.json", siblings=siblings)


def test_every_divoc_entity_file_parses_as_opensaber(
    divoc_docs: dict[str, dict[str, Any]], divoc: dict[str, EntitySchema]
):
    assert len(divoc_docs) == 14
    assert sorted(divoc) == sorted(DIVOC_ENTITIES)
    for name, entity in divoc.items():
        assert is_opensaber(divoc_docs[f"{name}.json"]), name
        assert entity.origin == "opensaber", name
        assert entity.json_schema["$schema"] == DRAFT_2020_12, name
        assert entity.fields, name


def test_common_json_is_definitions_only(divoc_docs: dict[str, dict[str, Any]]):
    assert is_opensaber(divoc_docs["Common.json"])
    assert is_definitions_only(divoc_docs["Common.json"])
    assert not any(
        is_definitions_only(doc) for name, doc in divoc_docs.items() if name != "Common.json"
    )


def test_native_documents_are_not_opensaber(shipped_docs: dict[str, dict[str, Any]]):
    for doc in shipped_docs.values():
        assert not is_opensaber(doc)
        assert not is_definitions_only(doc)


def test_facility_address_comes_from_common_json(divoc: dict[str, EntitySchema]):
    address = divoc["Facility"].fields["address"]
    assert address.kind == "json"
    assert address.required
    assert address.title == "Address"  # the $ref's sibling title overrides Common.json's
    assert address.schema["properties"]["district"] == {
        "type": "string",
        "title": "The district schema",
    }
    assert address.schema["required"] == ["addressLine1", "district", "state", "pincode"]


def test_local_definitions_are_inlined_into_nested_fields(divoc: dict[str, EntitySchema]):
    programs = divoc["Facility"].fields["programs"].schema
    schedule = programs["items"]["properties"]["schedule"]
    assert schedule["properties"]["days"] == {"type": "array", "items": {"type": "string"}}
    assert "$ref" not in keys_anywhere(divoc["Facility"].json_schema)


def test_composite_index_fields_are_split(divoc: dict[str, EntitySchema]):
    assert divoc["Enrollment"].indexes == (("phone", "code"),)
    assert divoc["Medicine"].indexes == (("provider", "name"), ("name",))
    assert divoc["RevokedCertificate"].indexes == (
        ("previousCertificateId", "preEnrollmentCode", "dose"),
    )


def test_composite_unique_index_fields_are_split(divoc: dict[str, EntitySchema]):
    slot = divoc["FacilityProgramSlot"]
    assert slot.uniques == (("facilityId", "programId"),)
    assert slot.indexes == (("facilityId",),)


def test_single_field_index_and_unique_fields_are_kept(divoc: dict[str, EntitySchema]):
    facility = divoc["Facility"]
    assert facility.indexes == (("facilityCode",), ("facilityName",))
    assert facility.uniques == (("facilityCode",),)


def test_encrypted_field_markers_are_dropped(
    divoc_docs: dict[str, dict[str, Any]], divoc: dict[str, EntitySchema]
):
    assert "___encryptedFields" in keys_anywhere(divoc_docs["Facility.json"])
    facility = divoc["Facility"]
    assert "___encryptedFields" not in facility.fields
    assert "___encryptedFields" not in keys_anywhere(facility.json_schema)


def test_fragment_ids_are_removed(
    divoc_docs: dict[str, dict[str, Any]], divoc: dict[str, EntitySchema]
):
    for name, entity in divoc.items():
        assert "$id" not in keys_anywhere(entity.json_schema), name
    assert "$id" in keys_anywhere(divoc_docs["Facility.json"])  # the file itself is unchanged


def test_undeclared_required_field_is_a_warning_not_an_error(divoc: dict[str, EntitySchema]):
    entity = divoc["RecipientSideEffects"]
    assert entity.required == ("recipientCertificateId",)
    by_pointer = {w.pointer: w.message for w in entity.warnings}
    assert (
        "'recipientMobileNumber' is never declared"
        in by_pointer["/definitions/RecipientSideEffects/required"]
    )
    assert "recipientMobileNumber" in by_pointer["/_osConfig/indexFields"]
    assert entity.indexes == (("recipientCertificateId",),)
    assert all(w.source == "RecipientSideEffects.json" for w in entity.warnings)


def test_only_files_with_quirks_have_warnings(divoc: dict[str, EntitySchema]):
    assert {name for name, e in divoc.items() if e.warnings} == {"RecipientSideEffects"}


def test_index_on_array_field_becomes_a_json_index(divoc: dict[str, EntitySchema]):
    cert = divoc["TestCertificate"]
    assert cert.fields["contact"].kind == "json"
    assert ("contact",) in cert.indexes
    assert cert.uniques == (("certificateId",),)


def test_divoc_entity_validates_a_divoc_record(divoc: dict[str, EntitySchema]):
    validator = RecordValidator(divoc["FacilityProgramSlot"].json_schema)
    assert validator.errors({"facilityId": "F1", "programId": "P1"}) == []
    missing = validator.errors({"facilityId": "F1"})
    assert [(e.pointer, e.keyword) for e in missing] == [("/programId", "required")]


def test_opensaber_settings_map_to_private_internal_access_owner():
    doc = opensaber_doc(
        {
            "name": {"type": "string"},
            "phone": {"type": "string"},
            "nationalId": {"type": "string"},
            "notes": {"type": "string"},
            "contact": {"type": "string"},
        },
        {
            "privateFields": ["$.phone", "nationalId", ""],
            "internalFields": ["notes"],
            "inviteRoles": ["anonymous"],
            "roles": ["admin", "anonymous"],
            "ownershipAttributes": [
                {"email": "/contact", "mobile": "/contact", "userId": "/contact"}
            ],
        },
    )
    thing = parse_thing(doc)
    assert thing.private == ("phone", "nationalId")
    assert thing.internal == ("notes",)
    assert thing.access == {
        "create": ("public",),
        "read": ("admin", "public"),
        "update": ("admin", "public"),
    }
    assert thing.owner == "contact"
    assert thing.warnings == ()


def test_private_field_that_does_not_exist_is_a_warning():
    doc = opensaber_doc({"name": {"type": "string"}}, {"privateFields": ["ghost"]})
    thing = parse_thing(doc)
    assert thing.private == ()
    (warning,) = thing.warnings
    assert warning.pointer == "/_osConfig/privateFields"
    assert "ghost" in warning.message


def test_owner_outside_the_entity_is_ignored():
    doc = opensaber_doc(
        {"name": {"type": "string"}}, {"ownershipAttributes": [{"userId": "/elsewhere"}]}
    )
    assert parse_thing(doc).owner is None


def test_signed_fields_are_reported_as_unsupported():
    doc = opensaber_doc({"name": {"type": "string"}}, {"signedFields": ["name"]})
    (warning,) = parse_thing(doc).warnings
    assert warning.pointer == "/_osConfig/signedFields"
    assert "not supported" in warning.message


def test_draft07_keywords_are_rewritten_to_2020_12():
    doc = opensaber_doc(
        {
            "pair": {"type": "array", "items": [{"type": "string"}], "additionalItems": False},
            "card": {"type": "object", "dependencies": {"a": ["b"], "c": {"required": ["d"]}}},
        }
    )
    props = parse_thing(doc).json_schema["properties"]
    assert props["pair"] == {"type": "array", "prefixItems": [{"type": "string"}], "items": False}
    assert props["card"] == {
        "type": "object",
        "dependentRequired": {"a": ["b"]},
        "dependentSchemas": {"c": {"required": ["d"]}},
    }


def test_title_comes_from_the_definition_then_the_file():
    doc = opensaber_doc({"name": {"type": "string"}}, title="The Thing")
    assert parse_thing(doc).title == "The Thing"
    assert parse_thing(opensaber_doc({"name": {"type": "string"}})).title == "Thing"


def test_entity_found_through_the_single_top_level_property():
    doc = opensaber_doc({"name": {"type": "string"}})
    doc["definitions"] = {"Other": doc["definitions"]["Thing"]}
    doc["properties"] = {"Thing": {"$ref": "#/definitions/Other"}}
    assert set(parse_thing(doc).fields) == {"name"}


def test_missing_entity_definition_is_an_error():
    doc = opensaber_doc({"name": {"type": "string"}})
    doc["definitions"] = {"Other": doc["definitions"]["Thing"]}
    doc["properties"] = {"A": {"type": "string"}, "B": {"type": "string"}}
    with pytest.raises(SchemaError) as exc:
        parse_thing(doc)
    (issue,) = exc.value.issues
    assert issue.pointer == "/definitions"
    assert "no definition 'Thing'" in issue.message


def test_missing_sibling_file_in_ref_is_an_error_naming_the_pointer():
    doc = opensaber_doc(
        {
            "name": {"type": "string"},
            "address": {"$ref": "Common.json#/definitions/Address", "title": "Address"},
        }
    )
    with pytest.raises(SchemaError) as exc:
        parse_thing(doc)  # no Common.json next to it
    (issue,) = exc.value.issues
    assert issue.source == "Thing.json"
    assert issue.pointer == "/definitions/Thing/properties/address/$ref"
    assert "no schema file 'Common.json'" in issue.message


def test_dangling_ref_into_sibling_file_is_an_error_naming_the_pointer(
    divoc_docs: dict[str, dict[str, Any]],
):
    doc = opensaber_doc({"address": {"$ref": "Common.json#/definitions/Adress"}})
    with pytest.raises(SchemaError) as exc:
        parse_thing(doc, **{"Common.json": divoc_docs["Common.json"]})
    (issue,) = exc.value.issues
    assert issue.pointer == "/definitions/Thing/properties/address/$ref"
    assert "points to nothing" in issue.message


def test_divoc_file_is_not_modified_by_parsing(divoc_docs: dict[str, dict[str, Any]]):
    before = copy.deepcopy(divoc_docs)
    parse_entity_schema(
        divoc_docs["Facility.json"], name="Facility", source="Facility.json", siblings=divoc_docs
    )
    assert divoc_docs == before
