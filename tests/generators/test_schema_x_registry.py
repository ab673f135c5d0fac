"""The structure of `x-registry` blocks: the shipped JSON Schema (`x-registry.schema.json`), its
errors reported at the offending key, and the checks of meaning that run on the sound parts."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path
from typing import Any

import pytest
from jsonschema.validators import Draft202012Validator

from open_registry.generators import x_registry
from open_registry.generators.schema import OPERATIONS, OWNER_KINDS, XREG_KEYS
from tests.generators.test_schema import entity_doc, issues_of, only_issue, parse

ROOT = Path(__file__).parents[2]


def props() -> dict[str, Any]:
    return {
        "name": {"type": "string"},
        "code": {"type": "string"},
        "address": {"type": "object", "properties": {"district": {"type": "string"}}},
    }


# --- the shipped schema ------------------------------------------------------------------------


def test_the_shipped_schema_is_json_schema_2020_12():
    schema = x_registry.load_schema()
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_the_shipped_schema_is_package_data():
    """The wheel carries the file (tests/test_packaging.py builds one)."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = data["tool"]["setuptools"]["package-data"]["open_registry.generators"]
    assert any(fnmatch.fnmatch(x_registry.SCHEMA_RESOURCE, p) for p in patterns)
    assert (ROOT / "generators" / x_registry.SCHEMA_RESOURCE).is_file()


def test_the_schema_names_the_settings_operations_and_owner_kinds_of_the_model():
    schema = x_registry.load_schema()
    assert x_registry.settings() == XREG_KEYS
    assert tuple(schema["properties"]["access"]["properties"]) == OPERATIONS
    assert tuple(schema["properties"]["owner"]["properties"]) == OWNER_KINDS


def test_the_validator_is_compiled_once():
    assert x_registry.compiled() is x_registry.compiled()


def test_structural_results_are_cached_by_content():
    block = {"access": {"read": "public"}, "display": "name"}
    first = x_registry.structural_errors(block)
    hits = x_registry._RESULTS.hits
    again = x_registry.structural_errors({"display": "name", "access": {"read": "public"}})
    assert again == first == ((("access", "read"), "must be a list of role names"),)
    assert x_registry._RESULTS.hits == hits + 1


# --- structural errors: at the offending key, with the schema's message ------------------------


@pytest.mark.parametrize(
    ("xreg", "where", "message"),
    [
        ({"access": {"read": "public"}}, "/x-registry/access/read", "must be a list of role names"),
        ({"access": {"read": ["a", 5]}}, "/x-registry/access/read/1", "must be a role name"),
        ({"access": ["read"]}, "/x-registry/access", "must map operations to roles"),
        (
            {"access": {"list": ["public"]}},
            "/x-registry/access/list",
            "unknown operation 'list'; known: create, read, update, delete",
        ),
        ({"indexed": "name"}, "/x-registry/indexed", "must be a list of field names or of lists"),
        ({"unique": [[]]}, "/x-registry/unique/0", "a non-empty list of field names"),
        ({"unique": [["name", 7]]}, "/x-registry/unique/0/1", "must be a field name"),
        ({"private": "name"}, "/x-registry/private", "must be a list of field names"),
        ({"internal": ["name", 3]}, "/x-registry/internal/1", "must be a field name"),
        ({"privateAccess": "owner"}, "/x-registry/privateAccess", "list of role names"),
        ({"privateAccess": [None]}, "/x-registry/privateAccess/0", "must be a role name"),
        ({"references": ["name"]}, "/x-registry/references", "must map a field to an entity"),
        ({"references": {"name": {}}}, "/x-registry/references/name", '{"entity": ...'),
        ({"references": {"name": {"entity": 1}}}, "/x-registry/references/name", "entity name"),
        ({"owner": 5}, "/x-registry/owner", "must be a field path or {"),
        ({"owner": {}}, "/x-registry/owner", "must be a field path or {"),
        ({"owner": {"facility": 5}}, "/x-registry/owner/facility", "must be a field path"),
        (
            {"owner": {"clinic": "code"}},
            "/x-registry/owner/clinic",
            "unknown owner kind 'clinic'; known: facility, recipient",
        ),
        ({"display": ["name"]}, "/x-registry/display", "must be a field name"),
        ({"i18n": []}, "/x-registry/i18n", "must map a locale to"),
        ({"i18n": {"fr": {"title": 3}}}, "/x-registry/i18n/fr/title", "must be text"),
        ({"i18n": {"fr": {"fields": []}}}, "/x-registry/i18n/fr/fields", "must map a locale"),
        (
            {"i18n": {"fr": {"fields": {"name": {"enum": {"a": 1}}}}}},
            "/x-registry/i18n/fr/fields/name",
            "must be a title or {",
        ),
        ({"i18n": {"FR": {}}}, "/x-registry/i18n/FR", "'FR' is not a language tag"),
        ({"colour": "blue"}, "/x-registry/colour", "unknown setting 'colour'; known: indexed"),
        ("indexed", "/x-registry", "must be an object"),
    ],
)
def test_structural_error_is_reported_at_the_offending_key(xreg: Any, where: str, message: str):
    issue = only_issue(entity_doc(props(), xreg=xreg))
    assert issue.pointer == where
    assert message in issue.message
    assert str(issue) == f"thing.json: {where}: {issue.message}"


def test_a_key_with_a_slash_is_escaped_in_the_pointer():
    issue = only_issue(entity_doc(props(), xreg={"access": {"read/write": ["public"]}}))
    assert issue.pointer == "/x-registry/access/read~1write"


def test_null_owner_display_and_private_access_read_as_absent():
    e = parse(entity_doc(props(), xreg={"owner": None, "display": None, "privateAccess": None}))
    assert e.owner is None
    assert e.display == "name"
    assert e.private_access == ("system-admin", "owner")


# --- structure and meaning in one pass ----------------------------------------------------------


def test_structural_and_semantic_errors_are_reported_together_by_pointer():
    doc = entity_doc(
        props(),
        xreg={
            "indexed": [5, "nope", ["name", "code"]],
            "private": ["ghost", ["name"]],
            "references": {"name": {"entity": "x", "column": "id"}, "ghost": "facility"},
            "owner": {"facility": "nowhere", "recipient": 3},
            "i18n": {"fr": {"title": 1, "fields": {"nope": "x", "name": "Nom"}}},
        },
    )
    got = [(i.pointer, i.message) for i in issues_of(doc)]
    assert got == [
        ("/x-registry/i18n/fr/title", "must be text"),
        ("/x-registry/indexed/0", "must be a field name or a non-empty list of field names"),
        ("/x-registry/owner/recipient", "must be a field path"),
        ("/x-registry/private/1", "must be a field name"),
        (
            "/x-registry/references/name",
            'must be an entity name or {"entity": ..., "field": ...}',
        ),
        ("/x-registry/indexed/1", "field 'nope' does not exist"),
        ("/x-registry/private/0", "field 'ghost' does not exist"),
        ("/x-registry/references/ghost", "field 'ghost' does not exist"),
        ("/x-registry/owner/facility", "field 'nowhere' does not exist"),
        ("/x-registry/i18n/fr/fields/nope", "field 'nope' does not exist"),
    ]


def test_a_malformed_value_is_not_also_checked_for_meaning():
    """A badly shaped entry gets its structural error only, not a second one about its fields."""
    doc = entity_doc(props(), xreg={"i18n": {"fr": {"fields": {"ghost": {"title": 3}}}}})
    issue = only_issue(doc)
    assert issue.pointer == "/x-registry/i18n/fr/fields/ghost"
    assert "must be a title" in issue.message


def test_a_malformed_block_does_not_hide_the_problems_of_the_document():
    doc = entity_doc({"name": {"type": "string"}, "id": {"type": "string"}}, xreg=["indexed"])
    pointers = sorted(i.pointer for i in issues_of(doc))
    assert pointers == ["/properties/id", "/x-registry"]


def test_a_well_formed_block_parses_into_the_model():
    e = parse(
        entity_doc(
            props(),
            xreg={
                "indexed": ["code", ["name", "code"], "address"],
                "unique": ["code"],
                "private": ["address"],
                "references": {"code": {"entity": "facility", "field": "code"}},
                "access": {"read": ["public"], "create": []},
                "privateAccess": ["system-admin"],
                "owner": {"facility": "code", "recipient": "id"},
                "display": "code",
                "i18n": {"hi-IN": {"fields": {"address.district": {"title": "जिला"}}}},
            },
        )
    )
    assert e.indexes == (("code",), ("name", "code"), ("address",))
    assert e.uniques == (("code",),)
    assert e.private == ("address",)
    assert [(r.path, r.entity, r.field) for r in e.references] == [("code", "facility", "code")]
    assert e.access == {"read": ("public",), "create": ()}
    assert e.private_access == ("system-admin",)
    assert e.owner == {"facility": "code", "recipient": "id"}
    assert e.display == "code"
    assert e.i18n["hi-IN"]["fields"]["address.district"] == {"title": "जिला"}


# --- Structure: reading a checked block ---------------------------------------------------------


def test_structure_reads_a_broken_setting_as_absent_and_locates_errors():
    s = x_registry.check({"indexed": "name", "access": {"read": [1], "update": ["x"]}})
    assert s.get("indexed", []) == []
    assert s.get("access") == {"read": [1], "update": ["x"]}
    assert s.intact("access") and not s.sound("access")
    assert not s.intact("access", "read", 0) and not s.sound("access", "read")
    assert s.sound("access", "update")


def test_a_block_that_is_not_an_object_reads_as_empty():
    s = x_registry.check(["indexed"])
    assert s.block == {}
    assert s.errors == (((), "must be an object"),)
    assert s.get("indexed") is None



def test_entity_and_field_names_are_matched_whole():
    """Python's `$` matches before a trailing newline: names must be matched whole."""
    assert "entity name" in only_issue(entity_doc(), name="thing\n").message
    issue = only_issue(entity_doc({"name\n": {"type": "string"}}))
    assert "name" in issue.message
    parse(entity_doc())  # and the same names without the newline pass
