"""Schema patterns run in linear time (RE2) with ECMA-262's meaning, and a pattern that cannot
run is refused when the schema is loaded, never at request time."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from open_registry.core.testing import client_for
from open_registry.generators.schema import DRAFT_2020_12
from open_registry.generators.validators import (
    PATTERN_ENGINE,
    PatternError,
    RecordValidator,
    compile_pattern,
    ecma_pattern,
    pattern_issues,
    translate_pattern,
)

#: `^(a+)+$` backtracks exponentially on this in Python's `re`: about 2 s at 25 a's (x2 per a)
EVIL = "^(a+)+$"
HOSTILE = "a" * 25 + "!"


def validator(**schema: Any) -> RecordValidator:
    return RecordValidator({"$schema": DRAFT_2020_12, **schema})



def test_the_engine_is_re2():
    assert PATTERN_ENGINE == "re2"  # google-re2 is a dependency (pyproject.toml)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "pattern": EVIL},
        {"type": "object", "properties": {"code": {"type": "string", "pattern": EVIL}}},
        {"type": "array", "items": {"type": "string", "pattern": EVIL}},
        {"type": "object", "propertyNames": {"pattern": EVIL}},
        {"type": "object", "patternProperties": {EVIL: {"type": "integer"}}},
        {
            "type": "object",
            "patternProperties": {EVIL: {"type": "integer"}},
            "additionalProperties": False,
        },
        {
            "type": "object",
            "patternProperties": {EVIL: {"type": "integer"}},
            "unevaluatedProperties": False,
        },
        {"anyOf": [{"type": "string", "pattern": EVIL}, {"type": "integer"}]},
    ],
)
def test_a_backtracking_pattern_answers_in_linear_time(schema: dict[str, Any]):
    value: Any = {
        "object": {"code": HOSTILE} if "properties" in schema else {HOSTILE: "x"},
        "array": [HOSTILE],
    }.get(schema.get("type", ""), HOSTILE)
    v = validator(**schema)
    # on a backtracking engine this line would not finish (the engine is asserted above)
    fast, reference, errors = v.is_valid(value), v._reference.is_valid(value), v.errors(value)
    assert fast == reference
    assert (errors == []) == reference


def test_the_fast_engine_still_compiles_schemas_with_patterns():
    v = validator(
        type="object",
        properties={"code": {"type": "string", "pattern": r"^[A-Z]{2}\d{2}$"}},
        patternProperties={r"^x_\w+$": {"type": "string"}},
        additionalProperties=False,
    )
    assert v.uses_fast_path
    assert v.is_valid({"code": "AB12", "x_note": "hi"})
    assert not v.is_valid({"code": "AB\u0661\u0662"})  # Arabic-Indic digits are not ECMA-262 \d
    assert not v.is_valid({"code": "AB12\n"})  # $ is the end of the input
    assert not v.is_valid({"x_é": "hi"})  # \w is ASCII
    assert [e.keyword for e in v.errors({"code": "AB\u0661\u0662"})] == ["pattern"]


# ECMA-262 (with the `u` flag, as JSON Schema's own test suite expects) against each engine
ECMA_CASES = [
    (r"^\d+$", "0123456789", True),
    (r"^\d+$", "\u0661\u0662\u0663", False),  # \d is [0-9]
    (r"^\w+$", "abc_XYZ_09", True),
    (r"^\w+$", "é", False),  # \w is [A-Za-z0-9_]
    (r"^\W$", "é", True),
    (r"^\s$", "\u00a0", True),
    (r"^\s$", "\ufeff", True),  # ECMA white space includes U+FEFF, Python's \s does not
    (r"^\s$", "\x1c", False),  # and Python's includes U+001C, ECMA's does not
    (r"^\S$", "\u2029", False),
    (r"^.$", "\u2028", False),  # . stops at every line terminator
    (r"^.$", "\r", False),
    (r"^.$", "😀", True),  # one code point
    (r"^[^]$", "\n", True),  # [^] is any character
    (r"^[]$", "", False),  # [] matches nothing
    (r"\bé", "é", False),  # \b is an ASCII word boundary
    (r"^[A-Z]{2}$", "AB\n", False),  # $ is the end of the input
    (r"^a$|^b", "a\n", False),
    (r"^[$]+$", "$$", True),
    (r"^\$\d+$", "$5", True),
    (r"^\u00e9$", "é", True),
    (r"^\u{1F600}$", "😀", True),
    (r"^\uD83D\uDE00$", "😀", True),  # a surrogate pair written as two escapes
    (r"^\cJ$", "\n", True),
    (r"^\x41\0$", "A\x00", True),
    (r"^[\b]$", "\b", True),
    (r"^[\D]$", "a", True),
    (r"^[^\D]$", "7", True),
    (r"^[a\S]$", " ", False),
    (r"^[^a\S]$", " ", True),
    (r"^[^\W\d]$", "_", True),
    (r"^[^\W\d]$", "5", False),
    (r"^(?<year>\d{4})-\d{2}$", "2024-05", True),
    (r"^a/b$", "a/b", True),
    (r"^\/\-$", "/-", True),
    (r"a{,3}", "a{,3}", True),  # Annex B: not a quantifier, literal braces
]
RE2_ONLY = [
    (r"\p{Letter}cole", "école", True),
    (r"^\p{L}+$", "abc1", False),
    (r"^\P{L}+$", "123", True),
    (r"^\p{Lu}\p{Ll}$", "Ab", True),
    (r"^[\p{Lu}\d]+$", "A1", True),
    (r"^\p{Script=Greek}+$", "αβγ", True),
    (r"^\p{sc=Greek}+$", "abc", False),
    (r"^\p{LC}$", "a", True),
    (r"^\p{ASCII}+$", "abc", True),
    (r"^[^\P{Lu}]$", "A", True),
]


@pytest.mark.parametrize(("pattern", "text", "matches"), ECMA_CASES + RE2_ONLY)
def test_patterns_mean_what_ecma_262_says(pattern: str, text: str, matches: bool):
    assert compile_pattern(pattern).search(text) is matches
    v = validator(type="string", pattern=pattern)
    assert v.is_valid(text) is matches
    assert v._reference.is_valid(text) is matches


@pytest.mark.parametrize(("pattern", "text", "matches"), ECMA_CASES)
def test_the_re_fallback_translates_the_same_way(pattern: str, text: str, matches: bool):
    """Without google-re2 (and for callers that run `re` themselves: `ecma_pattern`)."""
    assert compile_pattern(pattern, "re").search(text) is matches
    assert (re.search(ecma_pattern(pattern), text) is not None) is matches


def test_ecma_pattern_never_matches_what_re_cannot_express():
    # registry/imports/fast.py runs `re` on ecma_pattern(); a never-matching pattern sends the
    # row to RecordValidator, which runs the real pattern on RE2
    assert translate_pattern(r"\p{L}", "re2") == r"\p{L}"
    assert re.search(ecma_pattern(r"^\p{L}+$"), "abc") is None


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        (r"^(?=a)\w+$", "lookahead"),
        (r"^(?!a)\w+$", "lookahead"),
        (r"(?<=a)b", "lookbehind"),
        (r"(?<!a)b", "lookbehind"),
        (r"^(a)\1$", "backreferences"),
        (r"^(?<x>a)\k<x>$", "backreferences"),
        (r"\a", "not an escape"),
        (r"^a\Z", "not an escape"),
        (r"(?i)abc", "not a group"),
        (r"[a", "not closed"),
        (r"[z-a]", "out of order"),
        (r"\uD800", "lone surrogate"),
        (r"\p{Alphabetic}", "not supported"),
        (r"a**", "RE2 cannot run it"),
        (r"x{1001}", "RE2 cannot run it"),
        ("(", "RE2 cannot run it"),
    ],
)
def test_a_pattern_that_cannot_run_is_refused_when_the_validator_is_built(
    pattern: str, reason: str
):
    with pytest.raises(PatternError, match=re.escape(reason)):
        validator(type="object", properties={"code": {"type": "string", "pattern": pattern}})
    with pytest.raises(PatternError, match=re.escape(reason)):
        validator(type="object", patternProperties={pattern: {"type": "string"}})


def test_pattern_issues_point_at_each_bad_pattern_and_skip_data():
    schema = {
        "type": "object",
        "title": "Gadget",
        "properties": {
            "pattern": {"type": "string", "pattern": "(?=x)"},  # a property named "pattern"
            "tags": {"type": "array", "items": {"pattern": "ok+"}},
            "kind": {"enum": [{"pattern": "(?=data)"}], "examples": [{"pattern": "("}]},
        },
        "patternProperties": {"(a)\\1": {}},
        "$defs": {"x": {"pattern": "\\Z"}},
    }
    found = [ptr for ptr, _ in pattern_issues(schema)]
    assert found == ["/$defs/x/pattern", "/patternProperties/(a)\\1", "/properties/pattern/pattern"]
    with pytest.raises(PatternError, match="schema 'Gadget': 3 pattern") as caught:
        RecordValidator(schema)
    assert len(caught.value.issues) == 3


GADGET = {
    "$schema": DRAFT_2020_12,
    "type": "object",
    "title": "Gadget",
    "properties": {
        "code": {"type": "string", "pattern": EVIL, "maxLength": 100},
        "name": {"type": "string", "maxLength": 100},
    },
    "required": ["code"],
    "additionalProperties": False,
    "x-registry": {"access": {"create": ["public"], "read": ["public"]}},
}


def _schema_dir(tmp_path: Path, schema: dict[str, Any]) -> Path:
    folder = tmp_path / "schemas"
    folder.mkdir()
    (folder / "gadget.json").write_text(json.dumps(schema))
    return folder


def test_the_api_refuses_a_hostile_value_for_a_backtracking_pattern_quickly(
    make_registry: Any, tmp_path: Path
):
    reg = make_registry(schema_dirs=(_schema_dir(tmp_path, GADGET),), default_schemas=False)
    with client_for(reg) as client:
        good = client.post("/api/v1/gadget", json={"code": "aaaa"})
        assert good.status_code == 201, good.text
        resp = client.post("/api/v1/gadget", json={"code": HOSTILE})
        assert resp.status_code == 422, resp.text
        assert resp.json()["errors"][0]["pointer"] == "/code"
        assert resp.json()["errors"][0]["keyword"] == "pattern"


def test_a_schema_whose_pattern_cannot_run_stops_the_registry_at_load(
    make_registry: Any, tmp_path: Path
):
    bad = {**GADGET, "properties": {"code": {"type": "string", "pattern": r"^(?=\d)\w+$"}}}
    folder = _schema_dir(tmp_path, bad)
    with pytest.raises(PatternError) as caught:
        make_registry(schema_dirs=(folder,), default_schemas=False)
    message = str(caught.value)
    assert "'Gadget'" in message and "/properties/code/pattern" in message
    assert "lookahead" in message
