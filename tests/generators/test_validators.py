"""`RecordValidator`: every failing field reported with a pointer, and the compiled fast engine
(fastjsonschema) agreeing with the reference engine (jsonschema) on arbitrary documents."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from open_registry.generators.formats import FORMATS
from open_registry.generators.schema import DRAFT_2020_12, EntitySchema
from open_registry.generators.validators import FieldError, RecordValidator, fast_path_supported


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


def test_extra_field_points_at_the_field(facility: RecordValidator, valid_facility: dict[str, Any]):
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


def test_impossible_date_and_date_time_without_offset_are_format_errors(
    shipped: dict[str, EntitySchema],
):
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


@pytest.mark.parametrize(
    "fragment",
    [
        {"type": "number", "multipleOf": 0.1},
        {"type": "integer", "multipleOf": 3},
        {"type": "string", "contentMediaType": "application/json"},
        {"type": "string", "contentEncoding": "base64"},
        {"type": "string", "format": "ipv4"},
        {"type": "string", "format": "hostname"},
    ],
)
def test_keywords_the_engines_read_differently_skip_the_fast_path(fragment: dict[str, Any]):
    schema = {"$schema": DRAFT_2020_12, "type": "object", "properties": {"x": fragment}}
    assert not fast_path_supported(schema)
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
        "code": {
            "type": "string",
            "pattern": "^[A-Z]{2,4}[0-9]?$",
            "minLength": 2,
            "maxLength": 5,
            "examples": ["ABC1"],
        },
        "count": {"type": "integer", "minimum": 0, "maximum": 100},
        "ratio": {
            "type": "number",
            "exclusiveMinimum": 0,
            "exclusiveMaximum": 1,
            "examples": [0.5],
        },
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
        "word": {"type": "string", "pattern": "ab", "examples": ["cab"]},
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
        "either": {
            "anyOf": [{"type": "string", "maxLength": 3}, {"type": "integer", "minimum": 10}]
        },
        "one": {
            "oneOf": [{"type": "integer", "minimum": 5}, {"type": "integer", "maximum": 10}],
            "examples": [20],
        },
        "both": {"allOf": [{"type": "string"}, {"minLength": 2}]},
        "notNull": {"not": {"type": ["null", "boolean"]}, "examples": ["x"]},
        "cond": {
            "type": "object",
            "if": {"properties": {"mode": {"const": "a"}}, "required": ["mode"]},
            "then": {"required": ["a"]},
            "else": {"required": ["b"]},
            "examples": [{"mode": "a", "a": 1}],
        },
        "bag": {
            "type": "object",
            "minProperties": 1,
            "maxProperties": 3,
            "propertyNames": {"pattern": "^[a-z]+$"},
            "additionalProperties": {"type": "integer"},
            "examples": [{"abc": 1}],
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

# Format values on both sides of the line, chosen where two validators might disagree.
GOOD_FORMATS: dict[str, list[str]] = {
    "date": ["2024-02-29", "2023-02-28", "0001-01-01", "9999-12-31", "2026-01-15"],
    "date-time": [
        "2023-01-01T00:00:00Z",
        "2023-01-01T00:00:00+05:30",
        "2023-01-01T00:00:00.123-01:00",
        "2016-12-31T23:59:59.999999Z",
    ],
    "email": ["a@b.co", "someone@example.org", "é@ü.de"],
    "uri": ["https://example.org/x", "urn:isbn:123", "mailto:a@b.co"],
    "uuid": ["8f14e45f-ceea-467f-a0e6-0e2b2f4c7f5a", "8F14E45F-CEEA-467F-A0E6-0E2B2F4C7F5A"],
    "phone": ["+91 98099 89981", "9876543210", "080 2345-678 (9)"],
    "time": ["09:00", "17:30:15", "23:59:59.5", "09:00Z", "09:00+05:30"],
}
BAD_FORMATS: dict[str, list[str]] = {
    "date": [
        "2023-02-30",
        "2023-13-01",
        "2023-1-01",
        "20230101",
        "2023-01-01T00:00:00Z",
        "2023-01-01\n",
        "\uff12\uff10\uff12\uff13-01-01",
        "2023-00-10",
        "",
    ],
    "date-time": [
        "2023-01-01 00:00:00Z",
        "2023-01-01T00:00:00",
        "2023-02-30T00:00:00Z",
        "2023-01-01T24:00:00Z",
        "2023-01-01T00:00:00+0530",
        "2023-01-01T00:00:00Z\n",
        "2023-01-01",
        "2023-01-01T00:00Z",
    ],
    "email": ["a@b", "@b.co", "a b@c.de", "a@b.c.", "plain", "a@b.co\n"],
    "uri": ["no scheme", "http://a b", "1x:y", "", "/relative/path"],
    "uuid": ["8f14e45fceea467fa0e60e2b2f4c7f5a", "8f14e45f-ceea-467f-a0e6-0e2b2f4c7f5g", ""],
    "phone": ["12", "+", "phone", "+1234567\n", "98765 43210 98765 43210"],
    "time": ["24:00", "9:00", "12:60", "09:00:00+5", "noon", "09:00\n"],
}
PATTERN_EDGES = ["AB\n", "ab", "A", "ABCDE1", "AB1\n", "ÀB", "a\nb", "\nAB", "DEL010\n", ""]
ODD_TEXT = ["", " ", "\n", "\x00", "\x1f", "\u2028", "e\u0301", "😀😀", "Active\n", "\ud800", "ab"]
TEXT = st.sampled_from(ODD_TEXT) | st.text(max_size=6)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 1.0, 3.0, 0.5, 0.3, 0.1, 1e20, 1e-9, 10**20, -1]),
    TEXT,
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(TEXT, inner, max_size=2),
    max_leaves=4,
)
EXTRA_KEYS = st.sampled_from(["extra", "ID", "", "x_1", "Name", "é", "mode"]) | TEXT
_ABSENT = object()  # a mutation that deletes the value
ABSENT = st.just(_ABSENT)


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


def _sub_schema(schema: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    for where in (schema, schema.get("if") or {}):
        sub = (where.get("properties") or {}).get(key)
        if isinstance(sub, Mapping):
            return sub
    return {}


def _merge(parts: tuple[Mapping[str, Any], ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in parts:
        out.update(part)
    return out


def sample(schema: Mapping[str, Any], *, full: bool) -> Any:
    """A valid value built from `schema`: with every property (`full`) or only required ones."""
    if "examples" in schema:
        return copy.deepcopy(schema["examples"][0])
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    if "allOf" in schema:
        return sample(_merge(tuple(schema["allOf"])), full=full)
    if "anyOf" in schema or "oneOf" in schema:
        return sample(schema.get("anyOf", schema.get("oneOf"))[0], full=full)
    types = _types(schema) or ["string"]
    if "object" in types:
        keys = _keys(schema) if full else schema.get("required") or []
        return {k: sample(_sub_schema(schema, k), full=full) for k in keys}
    if "array" in types:
        return [sample(schema.get("items") or {}, full=full)] * max(schema.get("minItems", 0), full)
    if "string" in types:
        if "format" in schema:
            return GOOD_FORMATS[schema["format"]][0]
        return "x" * schema.get("minLength", 1)
    if "integer" in types or "number" in types:
        return schema.get("minimum", 1)
    return True if "boolean" in types else None


def _samples(schema: Mapping[str, Any]) -> st.SearchStrategy[Any]:
    return st.sampled_from([sample(schema, full=True), sample(schema, full=False)])


def _number(schema: Mapping[str, Any], integer: bool) -> st.SearchStrategy[Any]:
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    if integer:
        ints = st.integers(-1000 if low is None else low, 1000 if high is None else high)
        return ints | ints.map(float)  # 3.0 is an integer too
    return st.floats(
        -1e6 if low is None else low,
        1e6 if high is None else high,
        exclude_min="exclusiveMinimum" in schema,
        exclude_max="exclusiveMaximum" in schema,
    )


def _string(schema: Mapping[str, Any]) -> st.SearchStrategy[Any]:
    fmt = schema.get("format")
    if fmt in GOOD_FORMATS:
        return st.sampled_from(GOOD_FORMATS[fmt])
    if "pattern" in schema:
        return st.from_regex(schema["pattern"], fullmatch=True)
    low, high = schema.get("minLength", 0), schema.get("maxLength", 10)
    samples = [*schema.get("examples", []), "x", "Ab", "é😀", "a b"]
    fitting = st.sampled_from([x for x in samples if low <= len(x) <= high])
    return st.one_of(fitting, st.text(min_size=low, max_size=high))


def _good(schema: Mapping[str, Any]) -> st.SearchStrategy[Any]:
    """Values meant to be valid (some land just outside: oneOf overlaps, odd unicode).
    Objects and arrays come from `sample`; the mutations reach inside them."""
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "anyOf" in schema or "oneOf" in schema:
        return st.one_of([_good(s) for s in schema.get("anyOf", schema.get("oneOf"))])
    if "allOf" in schema:
        return _good(_merge(tuple(schema["allOf"])))
    if "not" in schema:
        return st.integers() | TEXT
    options: list[st.SearchStrategy[Any]] = []
    for t in _types(schema) or (["string"] if "format" in schema else []):
        if t == "string":
            options.append(_string(schema))
        elif t in ("integer", "number"):
            options.append(_number(schema, t == "integer"))
        elif t == "boolean":
            options.append(st.booleans())
        elif t == "null":
            options.append(st.none())
        elif t in ("object", "array"):
            options.append(_samples(schema))
    return st.one_of(options) if options else JSON


def _bad(schema: Mapping[str, Any]) -> st.SearchStrategy[Any]:
    """Values likely to break a rule: half near misses (edge strings, impossible dates, trailing
    newlines, bools and 1.5 for integers, duplicates, extra keys), half any JSON at all."""
    near: list[st.SearchStrategy[Any]] = []
    fmt = schema.get("format")
    if fmt in BAD_FORMATS:
        near.append(st.sampled_from(BAD_FORMATS[fmt]))
    if "pattern" in schema:
        matching = st.from_regex(schema["pattern"], fullmatch=True)
        near += [matching.map(_with_newline), st.sampled_from(PATTERN_EDGES)]
    types = _types(schema)
    if "string" in types:
        near.append(st.sampled_from([*ODD_TEXT, "x" * 201, "x" * 33, "é" * 101]))
    if "integer" in types:
        near.append(st.sampled_from([True, False, 1.5, 1e20, "1", 10**20, -1, 101, 2100.0]))
    if "number" in types:
        near.append(st.sampled_from([True, 0, 1, 5.000001, -1e-9, -0.0, 90.5, "1"]))
    if "array" in types:
        near.append(_samples(schema).map(_with_duplicate))
    if "object" in types:
        near.append(st.tuples(_samples(schema), EXTRA_KEYS, JSON).map(_with_extra_key))
    anything = st.one_of(SCALARS, JSON)
    return st.one_of(st.one_of(near), anything) if near else anything


def _with_newline(s: str) -> str:
    return s + "\n"


def _with_duplicate(xs: list[Any]) -> list[Any]:
    return [*xs, *xs[:1]] if xs else [None]


def _with_extra_key(t: tuple[dict[str, Any], str, Any]) -> dict[str, Any]:
    return {**t[0], t[1]: t[2]}


def _spots(doc: Any, schema: Mapping[str, Any], path: tuple[Any, ...] = ()) -> Iterator[Any]:
    """(path, schema) of every place in `doc` a mutation can hit: each value, each missing
    property, a new key of each object, one past the end of each array. A path's last part
    may be a strategy (a new key)."""
    yield path, schema
    if isinstance(doc, dict):
        for key in _keys(schema):
            if key in doc:
                yield from _spots(doc[key], _sub_schema(schema, key), (*path, key))
            else:
                yield (*path, key), _sub_schema(schema, key)
        extra = schema.get("additionalProperties")
        names = (schema.get("propertyNames") or {}).get("pattern")
        for pattern, sub in [(names, extra), *(schema.get("patternProperties") or {}).items()]:
            if isinstance(sub, Mapping):
                key = st.from_regex(pattern, fullmatch=True) if pattern else EXTRA_KEYS
                yield (*path, key), sub
        yield (*path, EXTRA_KEYS), {}
    if isinstance(doc, list) and isinstance(schema.get("items"), Mapping):
        for i, item in enumerate(doc):
            yield from _spots(item, schema["items"], (*path, i))
        yield (*path, len(doc)), schema["items"]


def _mutated(base: Any, mutations: list[tuple[tuple[Any, ...], Any]]) -> Any:
    """A copy of `base` with each (path, value) applied; `_ABSENT` deletes. A mutation whose
    path an earlier one broke is skipped."""
    doc = copy.deepcopy(base)
    for path, value in mutations:
        if not path:
            doc = doc if value is _ABSENT else value
            continue
        node = doc
        for part in path[:-1]:
            in_dict = isinstance(node, dict) and part in node
            in_list = isinstance(node, list) and isinstance(part, int) and part < len(node)
            if not (in_dict or in_list):
                break
            node = node[part]
        else:
            last = path[-1]
            if isinstance(node, dict) and isinstance(last, str):
                if value is _ABSENT:
                    node.pop(last, None)
                else:
                    node[last] = value
            elif isinstance(node, list) and isinstance(last, int) and last <= len(node):
                if value is _ABSENT:
                    del node[last : last + 1]
                elif last == len(node):
                    node.append(value)
                else:
                    node[last] = value
    return doc


def _chooser(
    default: st.SearchStrategy[Any], special: dict[int, st.SearchStrategy[Any]]
) -> Callable[[int], st.SearchStrategy[Any]]:
    """For `flatmap` over a drawn integer. A closure, not a lambda with default arguments:
    Hypothesis keys lambdas by the repr of their defaults, and these are big strategies."""

    def choose(i: int) -> st.SearchStrategy[Any]:
        return special.get(i, default)

    return choose


def _mutator(base: Any) -> Callable[[list[Any]], Any]:
    def mutate(mutations: list[Any]) -> Any:
        return _mutated(base, mutations)

    return mutate


def documents(schema: Mapping[str, Any]) -> st.SearchStrategy[Any]:
    """Documents built from `schema` (all fields, or only the required ones) with up to three
    random mutations, each putting a valid value, an invalid one (wrong type, bool for int,
    1.0 for an integer, odd unicode, impossible date, date-time without offset, trailing
    newline...), deleting a value or adding a key. Few changes to an otherwise valid document
    mean one broken spot decides the outcome, which is where two engines can differ.
    """
    per_base = []
    for full in (True, False):
        base = sample(schema, full=full)
        mutations = []
        for path, sub in _spots(base, schema):
            new_key = path[-1] if path and isinstance(path[-1], st.SearchStrategy) else None
            where = (
                st.tuples(*map(st.just, path[:-1]), new_key)
                if new_key is not None
                else st.just(path)
            )
            if not path:  # the whole document: replace it by something that is not an object
                what = _bad({})
            else:  # the ends of the range (drawn more often) keep the document valid
                special = {2: _bad(sub), 3: _bad(sub), 4: ABSENT}
                what = st.integers(0, 5).flatmap(_chooser(_good(sub), special))
            mutations.append(st.tuples(where, what))
        per_base.append(st.lists(st.one_of(mutations), max_size=3).map(_mutator(base)))
    strategy = st.one_of(per_base)
    return st.deferred(lambda: strategy)  # a short repr in Hypothesis reports


class Case:
    """A schema under test: its validator and its document strategy (short repr for reports)."""

    def __init__(self, name: str, schema: Mapping[str, Any]):
        self.name = name
        self.validator = RecordValidator(schema)
        self.documents = documents(schema)

    def __repr__(self) -> str:
        return f"Case({self.name!r})"


@pytest.fixture(scope="module")
def cases(shipped: dict[str, EntitySchema]) -> dict[str, Case]:
    return {
        "facility": Case("facility", shipped["facility"].json_schema),
        "recipient": Case("recipient", shipped["recipient"].json_schema),
        "synthetic": Case("synthetic", SYNTHETIC),
    }


CASES = ["facility", "recipient", "synthetic"]


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("full", [True, False])
def test_base_documents_built_from_the_schema_are_valid(
    cases: dict[str, Case], name: str, full: bool
):
    validator = cases[name].validator
    doc = sample(validator.schema, full=full)
    assert validator.errors(doc) == []


@pytest.mark.parametrize("name", CASES)
@settings(max_examples=300, deadline=None, database=None)
@given(data=st.data())
def test_fast_engine_agrees_with_reference_engine(
    cases: dict[str, Case], name: str, data: st.DataObject
):
    case = cases[name]
    assert case.validator.uses_fast_path
    doc = data.draw(case.documents, label="document")
    expected = case.validator._reference.is_valid(doc)
    assert case.validator.is_valid(doc) == expected
    assert (case.validator.errors(doc) == []) == expected


@pytest.mark.parametrize("name", CASES)
def test_generated_documents_are_a_mix_of_valid_and_invalid(cases: dict[str, Case], name: str):
    """Without this the property above could pass on invalid documents alone."""
    case = cases[name]
    seen: list[bool] = []

    @settings(max_examples=60, derandomize=True, database=None, phases=[Phase.generate])
    @given(case.documents)
    def collect(doc: Any) -> None:
        seen.append(case.validator._reference.is_valid(doc))

    collect()
    assert 0.2 <= sum(seen) / len(seen) <= 0.8, f"{sum(seen)} valid of {len(seen)}"


@pytest.mark.parametrize(
    ("schema", "value"),
    [
        # ECMA-262 `$` is the end of input: a trailing newline does not match.
        ({"type": "string", "pattern": "^[A-Z]{2}$"}, "AB\n"),
        ({"type": "string", "pattern": "^[A-Z]{2}$"}, "AB"),
        ({"type": "string", "pattern": "^a$|^b"}, "a\n"),
        ({"type": "string", "pattern": "^[$]+$"}, "$$"),
        ({"type": "string", "pattern": "^[$]+$"}, "$$\n"),
        ({"type": "string", "pattern": r"^\$\d+$"}, "$5\n"),
        # multipleOf on decimals: 0.3 is a multiple of 0.1.
        ({"type": "number", "multipleOf": 0.1}, 0.3),
        ({"type": "number", "multipleOf": 0.1}, 0.30000000000000004),
        ({"type": "number", "multipleOf": 0.01}, 19.99),
        ({"type": "number", "multipleOf": 0.5}, 1e308),
        ({"type": "number", "multipleOf": 2}, 7.5),
        # Formats we do not check are annotations for both engines.
        ({"type": "string", "format": "ipv4"}, "999.1.1.1"),
        ({"type": "string", "format": "hostname"}, "-x-"),
        ({"type": "string", "format": "regex"}, "("),
        # content* keywords are annotations in 2020-12.
        ({"type": "string", "contentMediaType": "application/json"}, "{"),
        ({"type": "string", "contentEncoding": "base64"}, "!!!"),
        # Booleans are not numbers, 1.0 is an integer, 1 and true differ in enum/uniqueItems.
        ({"type": "integer"}, 1.0),
        ({"type": "integer"}, True),
        ({"enum": [1, 2]}, True),
        ({"const": 0}, False),
        ({"type": "array", "uniqueItems": True}, [1, True]),
        ({"type": "array", "uniqueItems": True}, [1, 1.0]),
        ({"type": "array", "uniqueItems": True}, [{"a": 1, "b": 2}, {"b": 2, "a": 1}]),
    ],
)
def test_engines_agree_on_known_edge_cases(schema: dict[str, Any], value: Any):
    validator = RecordValidator({"$schema": DRAFT_2020_12, **schema})
    reference = validator._reference.is_valid(value)
    assert validator.is_valid(value) == reference
    assert (validator.errors(value) == []) == reference


@pytest.mark.parametrize(
    ("pattern", "value", "valid"),
    [
        ("^[A-Z]{2}$", "AB\n", False),
        ("^[A-Z]{2}$", "AB", True),
        ("^[$]+$", "$$", True),
        ("^[$]+$", "$$\n", False),
        (r"^\$$", "$", True),
        (r"^\\$", "\\", True),
        (r"^\\$", "\\\n", False),
    ],
)
def test_pattern_dollar_means_end_of_input(pattern: str, value: str, valid: bool):
    validator = RecordValidator({"$schema": DRAFT_2020_12, "type": "string", "pattern": pattern})
    assert validator.is_valid(value) is valid
    assert validator._reference.is_valid(value) is valid


@pytest.mark.parametrize(
    ("step", "value", "valid"),
    [(0.1, 0.3, True), (0.01, 19.99, True), (0.1, 0.35, False), (3, 1e20, False), (3, 3e20, True)],
)
def test_multiple_of_is_exact_on_the_numbers_as_written(step: float, value: float, valid: bool):
    validator = RecordValidator({"$schema": DRAFT_2020_12, "type": "number", "multipleOf": step})
    assert validator.is_valid(value) is valid
    assert validator._reference.is_valid(value) is valid


def test_synthetic_schema_is_fully_on_the_fast_path():
    assert fast_path_supported(SYNTHETIC)
    assert set(GOOD_FORMATS) == set(BAD_FORMATS) == set(FORMATS)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_format_accepts_good_and_rejects_bad_values(fmt: str):
    check = FORMATS[fmt]
    assert [v for v in GOOD_FORMATS[fmt] if not check(v)] == []
    assert [v for v in BAD_FORMATS[fmt] if check(v)] == []


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_format_rejects_a_trailing_newline(fmt: str):
    good = GOOD_FORMATS[fmt][0]
    assert FORMATS[fmt](good)
    assert not FORMATS[fmt](good + "\n")
