"""`inline_refs`: every `$ref` replaced by its target, problems reported with a JSON pointer."""

from __future__ import annotations

from typing import Any

from open_registry.generators.errors import SchemaIssue
from open_registry.generators.refs import inline_refs


def inline(
    schema: dict[str, Any],
    siblings: dict[str, dict[str, Any]] | None = None,
    root: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], list[SchemaIssue]]:
    issues: list[SchemaIssue] = []
    out = inline_refs(schema, source="s.json", siblings=siblings, root=root, issues=issues)
    return out, issues


def has_ref(node: Any) -> bool:
    if isinstance(node, dict):
        return "$ref" in node or any(has_ref(v) for v in node.values())
    if isinstance(node, list):
        return any(has_ref(v) for v in node)
    return False


def test_local_refs_are_inlined_and_definitions_dropped():
    schema = {
        "type": "object",
        "properties": {
            "a": {"$ref": "#/$defs/name"},
            "b": {"type": "array", "items": {"$ref": "#/definitions/code"}},
        },
        "$defs": {"name": {"type": "string", "minLength": 1}},
        "definitions": {"code": {"type": "string", "pattern": "^[A-Z]+$"}},
    }
    out, issues = inline(schema)
    assert issues == []
    assert out == {
        "type": "object",
        "properties": {
            "a": {"type": "string", "minLength": 1},
            "b": {"type": "array", "items": {"type": "string", "pattern": "^[A-Z]+$"}},
        },
    }


def test_input_schema_is_not_modified():
    schema = {"properties": {"a": {"$ref": "#/$defs/x"}}, "$defs": {"x": {"type": "string"}}}
    inline(schema)
    assert schema["properties"]["a"] == {"$ref": "#/$defs/x"}


def test_refs_inside_a_target_are_followed():
    schema = {
        "properties": {"a": {"$ref": "#/$defs/outer"}},
        "$defs": {
            "outer": {"type": "object", "properties": {"in": {"$ref": "#/$defs/inner"}}},
            "inner": {"type": "integer"},
        },
    }
    out, issues = inline(schema)
    assert issues == []
    assert out["properties"]["a"]["properties"]["in"] == {"type": "integer"}
    assert not has_ref(out)


def test_same_definition_used_twice_is_not_recursion():
    schema = {
        "properties": {"a": {"$ref": "#/$defs/x"}, "b": {"$ref": "#/$defs/x"}},
        "$defs": {"x": {"type": "string"}},
    }
    out, issues = inline(schema)
    assert issues == []
    assert out["properties"] == {"a": {"type": "string"}, "b": {"type": "string"}}


def test_sibling_file_refs_are_inlined_with_their_own_local_refs():
    common = {
        "definitions": {
            "Address": {
                "type": "object",
                "properties": {"pin": {"$ref": "#/definitions/Pin"}},
            },
            "Pin": {"type": "string", "pattern": "^[0-9]{6}$"},
        }
    }
    schema = {"properties": {"address": {"$ref": "Common.json#/definitions/Address"}}}
    out, issues = inline(schema, siblings={"Common.json": common})
    assert issues == []
    assert out["properties"]["address"] == {
        "type": "object",
        "properties": {"pin": {"type": "string", "pattern": "^[0-9]{6}$"}},
    }


def test_whole_sibling_file_ref_drops_its_definitions():
    other = {"type": "string", "$defs": {"unused": {"type": "integer"}}}
    out, issues = inline({"properties": {"a": {"$ref": "other.json"}}}, {"other.json": other})
    assert issues == []
    assert out["properties"]["a"] == {"type": "string"}


def test_local_refs_resolve_against_root_when_given():
    root = {"definitions": {"Thing": {"$ref": "#/definitions/Name"}, "Name": {"type": "string"}}}
    out, issues = inline(root["definitions"]["Thing"], root=root)
    assert issues == []
    assert out == {"type": "string"}


def test_ref_with_annotation_siblings_merges_them_over_the_target():
    schema = {
        "properties": {
            "address": {"$ref": "#/$defs/address", "title": "Home", "description": "Where"}
        },
        "$defs": {"address": {"type": "object", "title": "Address", "properties": {}}},
    }
    out, issues = inline(schema)
    assert issues == []
    assert out["properties"]["address"] == {
        "type": "object",
        "title": "Home",
        "description": "Where",
        "properties": {},
    }


def test_ref_with_clashing_keyword_keeps_both_through_all_of():
    schema = {
        "properties": {"code": {"$ref": "#/$defs/code", "maxLength": 4, "title": "Code"}},
        "$defs": {"code": {"type": "string", "maxLength": 10}},
    }
    out, issues = inline(schema)
    assert issues == []
    assert out["properties"]["code"] == {
        "allOf": [{"type": "string", "maxLength": 10}],
        "maxLength": 4,
        "title": "Code",
    }


def test_ref_with_new_assertion_keyword_is_merged():
    schema = {
        "properties": {"code": {"$ref": "#/$defs/code", "minLength": 2}},
        "$defs": {"code": {"type": "string"}},
    }
    out, _ = inline(schema)
    assert out["properties"]["code"] == {"type": "string", "minLength": 2}


def test_recursive_ref_is_reported_with_pointer():
    schema = {
        "properties": {"tree": {"$ref": "#/$defs/node"}},
        "$defs": {
            "node": {
                "type": "object",
                "properties": {"children": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
            }
        },
    }
    out, issues = inline(schema)
    (issue,) = issues
    assert issue.source == "s.json"
    assert issue.pointer == "/properties/tree/properties/children/items/$ref"
    assert "recursive" in issue.message
    assert not has_ref(out)


def test_self_ref_is_reported_as_recursive():
    _, issues = inline({"properties": {"a": {"$ref": "#"}}})
    (issue,) = issues
    assert issue.pointer.startswith("/properties/a/")
    assert issue.pointer.endswith("/$ref")
    assert "recursive" in issue.message


def test_dangling_local_ref_is_reported_with_pointer():
    out, issues = inline(
        {"properties": {"a": {"$ref": "#/$defs/missing", "title": "A"}}, "$defs": {}}
    )
    (issue,) = issues
    assert issue.pointer == "/properties/a/$ref"
    assert "'#/$defs/missing' points to nothing" in issue.message
    assert out["properties"]["a"] == {"title": "A"}


def test_ref_into_an_array_by_index_and_a_bad_index():
    schema = {
        "properties": {"a": {"$ref": "#/$defs/list/1"}, "b": {"$ref": "#/$defs/list/9"}},
        "$defs": {"list": [{"type": "string"}, {"type": "integer"}]},
    }
    out, issues = inline(schema)
    assert out["properties"]["a"] == {"type": "integer"}
    assert [i.pointer for i in issues] == ["/properties/b/$ref"]


def test_ref_with_escaped_pointer_parts_is_resolved():
    schema = {
        "properties": {"a": {"$ref": "#/$defs/a~1b~0c"}},
        "$defs": {"a/b~c": {"type": "boolean"}},
    }
    out, issues = inline(schema)
    assert issues == []
    assert out["properties"]["a"] == {"type": "boolean"}


def test_ref_to_missing_sibling_file_is_reported_with_pointer():
    _, issues = inline(
        {"properties": {"address": {"$ref": "Common.json#/definitions/Address"}}}, siblings={}
    )
    (issue,) = issues
    assert issue.pointer == "/properties/address/$ref"
    assert "no schema file 'Common.json'" in issue.message


def test_every_bad_ref_is_reported_at_once():
    schema = {
        "properties": {
            "a": {"$ref": "#/$defs/nope"},
            "b": {"$ref": "gone.json#/x"},
            "c": {"$ref": "#/properties/c"},
        }
    }
    _, issues = inline(schema)
    assert sorted(i.pointer for i in issues) == [
        "/properties/a/$ref",
        "/properties/b/$ref",
        "/properties/c/$ref",
    ]
