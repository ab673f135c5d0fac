"""`RecordValidator`: every failing field reported with a pointer, and the compiled fast engine
(fastjsonschema) agreeing with the reference engine (jsonschema) on arbitrary documents."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from generators.formats import FORMATS
from generators.schema import DRAFT_2020_12, EntitySchema
from generators.validators import FieldError, RecordValidator, fast_path_supported


def errors_by_pointer(validator: RecordValidator, record: Any) -> dict[str, str]:
    return {e.pointer: e.keyword for e in validator.errors(record)}


# --- every failing field, with its pointer and keyword ----------------------------------------


@pytest.fixture(scope="module")
def facility(shipped: dict[str, EntitySchema]) -> RecordValidator:
    return RecordValidator(shipped["facility"].json_schema)


@pytest.fixture(scope="module")
def valid_facility() -> dict[str, Any]:
    return {
        "code": "DEL010",
        "name": "Riverside District Hospital",
        "category": "GOVT",
        "type": "Fixed location",
        "status": "Active",
        "address": {
            "addressLine1": "No. 23, Station Road",
            "district": "Riverside",
            "state": "Northland",
            "pincode": "560001",
        },
        "contact": "+91 98099 89981",
        "email": "contact@riverside.example",
        "operatingHourStart": "09:00",
        "admins": [{"name": "Suresh", "mobile": "+91 91111 11111"}],
        "programs": [{"programId": "C19", "statusUpdatedAt": "2026-01-15T09:30:00Z"}],
    }


def test_valid_record_has_no_errors(facility: RecordValidator, valid_facility: dict[str, Any]):
    assert facility.is_valid(valid_facility)
    assert facility.errors(valid_facility) == []


def test_missing_required_field_points_at_the_field(
    facility: RecordValidator, valid_facility: dict[str, Any]
):
    record = {k: v for k, v in valid_facility.items() if k != "name"}
    (error,) = facility.errors(record)
    assert error == FieldError("/name", "'name' is a required property", "required")
    assert error.as_dict() == {
        "pointer": "/name",
        "message": "'name' is a required property",
        "keyword": "required",
    }


def test_every_missing_required_field_is_reported(facility: RecordValidator):
    errors = errors_by_pointer(facility, {"code": "DEL010"})
    assert errors == {
        "/name": "required",
        "/category": "required",
        "/type": "required",
        "/status": "required",
        "/address": "required",
    }


def test_extra_field_points_at_the_field(
    facility: RecordValidator, valid_facility: dict[str, Any]
):
    errors = errors_by_pointer(facility, {**valid_facility, "colour": "blue"})
    assert errors == {"/colour": "additionalProperties"}


def test_nested_array_item_points_into_the_array(
    facility: RecordValidator, valid_facility: dict[str, Any]
):
    record = {
        **valid_facility,
        "admins": [
            {"name": "A", "mobile": "+91 91111 11111"},
            {"name": "B", "mobile": "call me"},
        ],
    }
    assert errors_by_pointer(facility, record) == {"/admins/1/mobile": "format"}


def test_nested_missing_field_points_at_it(
    facility: RecordValidator, valid_facility: dict[str, Any]
):
    record = {**valid_facility, "admins": [{"mobile": "+91 91111 11111"}]}
    assert errors_by_pointer(facility, record) == {"/admins/0/name": "required"}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("email", "not-an-email"),
        ("contact", "12"),
        ("operatingHourStart", "25:00"),
        ("websiteUrl", "no scheme"),
    ],
)
def test_format_failure_points_at_the_field(
    facility: RecordValidator, valid_facility: dict[str, Any], field: str, value: str
):
    assert errors_by_pointer(facility, {**valid_facility, field: value}) == {f"/{field}": "format"}


def test_date_and_date_time_formats(shipped: dict[str, EntitySchema]):
    program = RecordValidator(shipped["program"].json_schema)
    record = {"code": "C19", "name": "Covid", "status": "Active", "startDate": "2026-02-30"}
    assert errors_by_pointer(program, record) == {"/startDate": "format"}
    assert program.errors({**record, "startDate": "2024-02-29"}) == []

    facility = RecordValidator(shipped["facility"].json_schema)
    base = {
        "code": "DEL010",
        "name": "R",
        "category": "GOVT",
        "type": "Mobile",
        "status": "Active",
        "address": {"addressLine1": "x", "district": "d", "state": "s", "pincode": "5600"},
    }
    no_offset = {**base, "programs": [{"programId": "C19", "rateUpdatedAt": "2026-01-15T09:30:00"}]}
    assert errors_by_pointer(facility, no_offset) == {"/programs/0/rateUpdatedAt": "format"}


def test_every_failing_field_is_reported_at_once(
    facility: RecordValidator, valid_facility: dict[str, Any]
):
    record = {
        **valid_facility,
        "status": "Open",
        "averageRating": 7,
        "geoLocation": {"lat": "north"},
        "programs": [{"programId": "C19", "rate": -1, "schedule": {"days": ["Mon", "Mon"]}}],
        "extra": 1,
    }
    del record["code"]
    assert errors_by_pointer(facility, record) == {
        "/code": "required",
        "/extra": "additionalProperties",
        "/status": "enum",
        "/averageRating": "maximum",
        "/geoLocation/lat": "type",
        "/geoLocation/lon": "required",
        "/programs/0/rate": "minimum",
        "/programs/0/schedule/days": "uniqueItems",
    }


def test_errors_are_sorted_by_pointer(facility: RecordValidator, valid_facility: dict[str, Any]):
    record = {**valid_facility, "status": "Open", "category": "NGO", "email": "x"}
    pointers = [e.pointer for e in facility.errors(record)]
    assert pointers == sorted(pointers) == ["/category", "/email", "/status"]


def test_non_object_record_is_reported_at_the_root(facility: RecordValidator):
    (error,) = facility.errors(["not", "an", "object"])
    assert (error.pointer, error.keyword) == ("", "type")


def test_any_of_failure_reports_the_deepest_branch_errors():
    validator = RecordValidator(
        {
            "$schema": DRAFT_2020_12,
            "type": "object",
            "properties": {
                "contact": {
                    "anyOf": [
                        {"type": "object", "properties": {"phone": {"type": "string"}}},
                        {"type": "string"},
                    ]
                }
            },
        }
    )
    errors = errors_by_pointer(validator, {"contact": {"phone": 5}})
    assert errors == {"/contact/phone": "type"}


# --- fast path: used only when both engines mean the same -------------------------------------


def test_shipped_schemas_use_the_fast_path(shipped: dict[str, EntitySchema]):
    for name, entity in shipped.items():
        assert fast_path_supported(entity.json_schema), name
        assert RecordValidator(entity.json_schema).uses_fast_path, name


@pytest.mark.parametrize(
    "fragment",
    [
        {"type": "array", "prefixItems": [{"type": "string"}]},
        {"type": "object", "unevaluatedProperties": False},
        {"type": "object", "dependentRequired": {"a": ["b"]}},
        {"type": "object", "dependentSchemas": {"a": {"required": ["b"]}}},
        {"type": "array", "contains": {"type": "string"}, "minContains": 2},
        {"type": "array", "items": [{"type": "string"}]},
        {"$ref": "#/$defs/x"},
        {"anyOf": [{"type": "string"}, {"unevaluatedItems": False}]},
    ],
)
def test_schema_with_2020_12_only_keywords_skips_the_fast_path(fragment: dict[str, Any]):
    schema = {
        "$schema": DRAFT_2020_12,
        "type": "object",
        "properties": {"name": {"type": "string"}, "x": fragment},
        "$defs": {"x": {"type": "string"}},
    }
    schema_without_defs = {k: v for k, v in schema.items() if k != "$defs"}
    assert not fast_path_supported(schema_without_defs)
    assert not RecordValidator(schema).uses_fast_path


def test_validation_without_fast_path_still_reports_every_error():
    validator = RecordValidator(
        {
            "$schema": DRAFT_2020_12,
            "type": "object",
            "properties": {
                "pair": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}]},
                "card": {
                    "type": "object",
                    "properties": {"a": {}, "b": {}},
                    "dependentRequired": {"a": ["b"]},
                    "unevaluatedProperties": False,
                },
            },
            "additionalProperties": False,
        }
    )
    assert not validator.uses_fast_path
    assert validator.is_valid({"pair": ["x", 1], "card": {"a": 1, "b": 2}})
    assert validator.errors({"pair": ["x", 1], "card": {"a": 1, "b": 2}}) == []
    errors = validator.errors({"pair": [1, "x"], "card": {"a": 1, "c": 3}})
    assert sorted((e.pointer, e.keyword) for e in errors) == [
        ("/card", "dependentRequired"),
        ("/card", "unevaluatedProperties"),
        ("/pair/0", "type"),
        ("/pair/1", "type"),
    ]
    assert any("'c' was unexpected" in e.message for e in errors)


def test_fast_path_can_be_turned_off(shipped: dict[str, EntitySchema]):
    validator = RecordValidator(shipped["vaccine"].json_schema, use_fast_path=False)
    assert not validator.uses_fast_path
    assert not validator.is_valid({"code": "X"})


def test_x_annotations_do_not_block_the_fast_path():
    schema = {
        "$schema": DRAFT_2020_12,
        "type": "object",
        "properties": {"a": {"type": "string", "x-widget": "textarea"}},
        "x-anything": {"nested": True},
    }
    validator = RecordValidator(schema)
    assert validator.uses_fast_path
    assert validator.is_valid({"a": "x"})
    assert not validator.is_valid({"a": 1})


# --- both engines agree -----------------------------------------------------------------------

SYNTHETIC: dict[str, Any] = {
    "$schema": DRAFT_2020_12,
    "type": "object",
    "properties": {
        "status": {"enum": ["Active", "Inactive", 1, None]},
        "kind": {"const": "sample"},
        "code": {"type": "string", "pattern": "^[A-Z]{2,4}[0-9]?$", "minLength": 2, "maxLength": 5},
        "count": {"type": "integer", "minimum": 0, "maximum": 100},
        "ratio": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        "half": {"type": "number", "multipleOf": 0.5},
        "tenth": {"type": "number", "multipleOf": 0.1},
        "even": {"type": "integer", "multipleOf": 2},
        "day": {"type": "string", "format": "date"},
        "at": {"type": "string", "format": "date-time"},
        "email": {"type": "string", "format": "email"},
        "site": {"type": "string", "format": "uri"},
        "uid": {"type": "string", "format": "uuid"},
        "phone": {"type": "string", "format": "phone"},
        "opens": {"type": "string", "format": "time"},
        "anyDay": {"format": "date"},
        "flag": {"type": "boolean"},
        "note": {"type": ["string", "null"], "maxLength": 10},
        "word": {"type": "string", "pattern": "ab"},
        "nested": {
            "type": "object",
            "properties": {
                "a": {"type": "integer"},
                "b": {"type": "string", "format": "date"},
                "deep": {
                    "type": "object",
                    "properties": {"c": {"type": "boolean"}},
                    "required": ["c"],
                    "additionalProperties": False,
                },
            },
            "required": ["a"],
            "additionalProperties": False,
        },
        "tags": {
            "type": "array",
            "items": {"type": "string", "minLength": 1},
            "minItems": 1,
            "maxItems": 4,
            "uniqueItems": True,
        },
        "points": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"x": {"type": "number"}, "y": {"type": "integer"}},
                "required": ["x"],
            },
            "uniqueItems": True,
        },
        "either": {"anyOf": [{"type": "string", "maxLength": 3}, {"type": "integer", "minimum": 10}]},
        "one": {"oneOf": [{"type": "integer", "multipleOf": 2}, {"type": "integer", "multipleOf": 3}]},
        "both": {"allOf": [{"type": "string"}, {"minLength": 2}]},
        "notNull": {"not": {"type": ["null", "boolean"]}},
        "cond": {
            "type": "object",
            "if": {"properties": {"mode": {"const": "a"}}, "required": ["mode"]},
            "then": {"required": ["a"]},
            "else": {"required": ["b"]},
        },
        "bag": {
            "type": "object",
            "minProperties": 1,
            "maxProperties": 3,
            "propertyNames": {"pattern": "^[a-z]+$"},
            "additionalProperties": {"type": "integer"},
        },
        "prefixed": {
            "type": "object",
            "patternProperties": {"^x_": {"type": "string"}},
            "additionalProperties": False,
        },
    },
    "required": ["code", "count", "kind"],
    "additionalProperties": False,
}

# Values chosen to sit on the edges where two validators might disagree.
FORMAT_SAMPLES: dict[str, list[str]] = {
    "date": [
        "2024-02-29", "2023-02-28", "2023-02-30", "2023-13-01", "2023-1-01", "20230101",
        "2023-01-01T00:00:00Z", "2023-01-01\n", "２０２３-01-01", "0000-01-01", "9999-12-31",
    ],
    "date-time": [
        "2023-01-01T00:00:00Z", "2023-01-01T00:00:00+05:30", "2023-01-01T00:00:00.123-01:00",
        "2023-01-01t00:00:00z", "2023-01-01 00:00:00Z", "2023-01-01T00:00:00",
        "2023-02-30T00:00:00Z", "2023-01-01T24:00:00Z", "2023-01-01T23:59:60Z",
        "2023-01-01T00:00:00+0530", "2023-01-01T00:00:00Z\n", "2023-01-01",
    ],
    "email": ["a@b.co", "someone@example.org", "a@b", "@b.co", "a b@c.de", "a@b.c.", "é@ü.de"],
    "uri": ["https://example.org/x", "urn:isbn:123", "mailto:a@b.co", "no scheme", "http://a b", "1x:y"],
    "uuid": [
        "8f14e45f-ceea-467f-a0e6-0e2b2f4c7f5a", "8F14E45F-CEEA-467F-A0E6-0E2B2F4C7F5A",
        "8f14e45fceea467fa0e60e2b2f4c7f5a", "8f14e45f-ceea-467f-a0e6-0e2b2f4c7f5g",
    ],
    "phone": ["+91 98099 89981", "9876543210", "(080) 2345-678", "12", "+", "phone", "+1234567\n"],
    "time": ["09:00", "17:30:15", "23:59:59.5", "09:00Z", "09:00+05:30", "24:00", "9:00", "12:60"],
}
PATTERN_EDGES = ["AB", "ABCD1", "AB\n", "ab", "A", "ABCDE", "AB1\n", "ÀB", "xaby", "a\nb"]
TEXT = st.one_of(
    st.text(max_size=8),
    st.text(st.characters(codec="utf-8", categories=["Cc", "Cf", "Zs", "Lu", "Nd"]), max_size=6),
    st.sampled_from(["", " ", "\n", "\x00", "\u2028", "e\u0301", "😀😀", "Active\n", "sample "]),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-3, 12),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 1.0, 2.0, 3.0, 0.5, 0.3, 0.1, 0.7, 1.5, 1e20, 1e-9, 10**20]),
    TEXT,
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)
EXTRA_KEYS = st.sampled_from(["extra", "ID", "", "x_1", "Name", "é", "mode", "a", "b"]) | TEXT


def _types(schema: Mapping[str, Any]) -> list[str]:
    t = schema.get("type")
    if isinstance(t, str):
        return [t]
    if isinstance(t, list):
        return list(t)
    return ["object"] if "properties" in schema else []


def _keys(schema: Mapping[str, Any]) -> list[str]:
    """Property names a schema talks about (properties, required, and inside if/then/else)."""
    keys = list(schema.get("properties") or {})
    keys += [k for k in schema.get("required") or [] if k not in keys]
    for sub in ("if", "then", "else"):
        if isinstance(schema.get(sub), Mapping):
            keys += [k for k in _keys(schema[sub]) if k not in keys]
    return keys


@st.composite
def _objects(draw: st.DrawFn, schema: Mapping[str, Any]) -> dict[str, Any]:
    props = schema.get("properties") or {}
    out: dict[str, Any] = {}
    for key in _keys(schema):
        if draw(st.integers(0, 9)) < 8:  # usually present; sometimes missing
            sub = props.get(key)
            if sub is None and isinstance(schema.get("if"), Mapping):
                sub = (schema["if"].get("properties") or {}).get(key)
            out[key] = draw(values(sub) if isinstance(sub, Mapping) else JSON)
    if draw(st.integers(0, 9)) == 0:
        out[draw(EXTRA_KEYS)] = draw(JSON)
    if "patternProperties" in schema or ("additionalProperties" in schema and not props):
        extra = st.dictionaries(st.sampled_from(["x_a", "x_", "ab", "a1", "y_b", "Q"]) | TEXT,
                                SCALARS, max_size=4)
        out.update(draw(extra))
    return out


def _strings(schema: Mapping[str, Any]) -> st.SearchStrategy[Any]:
    fmt = schema.get("format")
    if fmt in FORMAT_SAMPLES:
        examples = st.sampled_from(FORMAT_SAMPLES[fmt])
        return st.one_of(examples, examples, examples, TEXT)
    if "pattern" in schema:
        matching = st.from_regex(schema["pattern"], fullmatch=True)
        return st.one_of(matching, matching.map(lambda s: s + "\n"), st.sampled_from(PATTERN_EDGES))
    low, high = schema.get("minLength", 0), schema.get("maxLength", 12)
    return st.one_of(st.text(min_size=low, max_size=high), TEXT)


def _plausible(schema: Mapping[str, Any]) -> st.SearchStrategy[Any]:
    """Values built from the schema: mostly right, often just on the wrong side of a rule."""
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    for combinator in ("anyOf", "oneOf", "allOf"):
        if combinator in schema:
            return st.one_of([values(s) for s in schema[combinator]])
    options: list[st.SearchStrategy[Any]] = []
    for t in _types(schema):
        if t == "string":
            options.append(_strings(schema))
        elif t == "integer":
            options.append(st.integers(-5, 120) | st.sampled_from([1.0, 6.0, 1e20, True, -0.0]))
        elif t == "number":
            options.append(
                st.floats(-2, 2)
                | st.integers(-3, 3)
                | st.sampled_from([0.1, 0.3, 0.5, 0.7, 1.5, 0.30000000000000004, 1e-9, 1e300])
            )
        elif t == "boolean":
            options.append(st.booleans() | st.sampled_from([0, 1]))
        elif t == "null":
            options.append(st.none())
        elif t == "object":
            options.append(_objects(schema))
        elif t == "array":
            item = values(schema["items"]) if isinstance(schema.get("items"), Mapping) else JSON
            items = st.lists(item, max_size=5)
            options.append(items | items.map(lambda xs: xs + xs[:1]))  # duplicates too
    if "format" in schema and not options:
        options.append(_strings(schema))
    return st.one_of(options) if options else JSON


_STRATEGIES: dict[int, tuple[Any, st.SearchStrategy[Any]]] = {}


def values(schema: Mapping[str, Any]) -> st.SearchStrategy[Any]:
    """Random JSON documents for `schema`: valid-ish ones and mutations of every kind."""
    if id(schema) not in _STRATEGIES:
        plausible = _plausible(schema)
        # Keep `schema` alive with its strategy so its id is never reused.
        _STRATEGIES[id(schema)] = (schema, st.one_of(plausible, plausible, plausible, JSON))
    return _STRATEGIES[id(schema)][1]


@pytest.fixture(scope="module")
def engines(shipped: dict[str, EntitySchema]) -> dict[str, tuple[RecordValidator, Any]]:
    out: dict[str, tuple[RecordValidator, Any]] = {}
    for name, schema in (
        ("facility", shipped["facility"].json_schema),
        ("recipient", shipped["recipient"].json_schema),
        ("synthetic", SYNTHETIC),
    ):
        out[name] = (RecordValidator(schema), values(schema))
    return out


@pytest.mark.parametrize("name", ["facility", "recipient", "synthetic"])
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_fast_engine_agrees_with_reference_engine(
    engines: dict[str, tuple[RecordValidator, Any]], name: str, data: st.DataObject
):
    validator, documents = engines[name]
    assert validator.uses_fast_path
    doc = data.draw(documents, label="document")
    expected = validator._reference.is_valid(doc)
    assert validator.is_valid(doc) == expected
    assert (validator.errors(doc) == []) == expected


@pytest.mark.parametrize("name", ["facility", "recipient", "synthetic"])
def test_generated_documents_include_valid_ones(
    engines: dict[str, tuple[RecordValidator, Any]], name: str
):
    """Without this the property above could pass on invalid documents alone."""
    from hypothesis import find

    validator, documents = engines[name]
    find(documents, validator._reference.is_valid, settings=settings(max_examples=2000))


def test_synthetic_schema_is_fully_on_the_fast_path():
    assert fast_path_supported(SYNTHETIC)
    assert set(FORMAT_SAMPLES) == set(FORMATS)
