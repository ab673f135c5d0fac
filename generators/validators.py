"""Record validation: JSON Schema 2020-12 with format checks, every failing field reported.

Two engines are combined. `jsonschema` is the reference: complete 2020-12 and good error detail,
but ~30-90 us per record. `fastjsonschema` compiles a schema to Python code and answers
valid/invalid several times faster, but speaks draft-07 and stops at the first error. A record is
first checked by the compiled code; only when it fails (rare on real data) does jsonschema run to
list every error. The compiled path is used only when the schema uses keywords whose meaning is
the same in draft-07 and 2020-12 (`fast_path_supported`); otherwise jsonschema does all the work.
`tests/generators/test_validators.py` checks with Hypothesis that both engines agree.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import fastjsonschema
from jsonschema import FormatChecker
from jsonschema.exceptions import ValidationError
from jsonschema.validators import Draft202012Validator, extend

from open_registry.generators.errors import pointer
from open_registry.generators.formats import FORMATS
from open_registry.generators.memo import ContentCache, canonical_key

# Keywords with identical semantics in draft-07 and 2020-12 (as fastjsonschema implements them).
_SAME_IN_BOTH = frozenset(
    {
        "type",
        "enum",
        "const",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "minItems",
        "maxItems",
        "uniqueItems",
        "minLength",
        "maxLength",
        "pattern",
        "format",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minProperties",
        "maxProperties",
        "patternProperties",
        "propertyNames",
        "allOf",
        "anyOf",
        "oneOf",
        "not",
        "if",
        "then",
        "else",
        "title",
        "description",
        "examples",
        "default",
        "$comment",
        "$schema",
        "readOnly",
        "writeOnly",
        "deprecated",
    }
)
# Not listed above, because the engines differ: `multipleOf` (fastjsonschema divides floats, so
# 1e20 is a multiple of 3), `contentMediaType` / `contentEncoding` (fastjsonschema asserts them;
# in 2020-12 they only annotate), and any `format` outside `FORMATS` (fastjsonschema checks
# hostname, ipv4, regex...; for us an unknown format only annotates).
# Keywords whose value is a map of name -> subschema, or a list of subschemas.
_SCHEMA_MAPS = frozenset({"properties", "patternProperties"})
_SCHEMA_LISTS = frozenset({"allOf", "anyOf", "oneOf"})
_SCHEMA_ONE = frozenset(
    {"items", "additionalProperties", "propertyNames", "not", "if", "then", "else"}
)


@dataclass(frozen=True)
class FieldError:
    """One failing value: where (JSON pointer into the body), why, and which keyword failed."""

    pointer: str
    message: str
    keyword: str

    def as_dict(self) -> dict[str, str]:
        return {"pointer": self.pointer, "message": self.message, "keyword": self.keyword}


def fast_path_supported(schema: Any, formats: Mapping[str, Any] = FORMATS) -> bool:
    """True when every keyword in `schema` means the same to fastjsonschema as to 2020-12."""
    return _fast_ok(schema, formats)


def _fast_ok(schema: Any, formats: Mapping[str, Any]) -> bool:
    if isinstance(schema, bool):
        return True
    if not isinstance(schema, Mapping):
        return False
    for key, value in schema.items():
        if key.startswith("x-"):
            continue
        if key not in _SAME_IN_BOTH:
            return False
        if key == "format" and value not in formats:
            return False
        if key in _SCHEMA_MAPS:
            if not isinstance(value, Mapping) or not all(
                _fast_ok(v, formats) for v in value.values()
            ):
                return False
        elif key in _SCHEMA_LISTS:
            if not isinstance(value, list) or not all(_fast_ok(v, formats) for v in value):
                return False
        elif (key in _SCHEMA_ONE and not _fast_ok(value, formats)) or (
            key == "items" and not isinstance(value, (Mapping, bool))
        ):
            return False
    return True


def _format_checker(formats: Mapping[str, Any]) -> FormatChecker:
    checker = FormatChecker(formats=())
    for name, func in formats.items():
        checker.checks(name)(_string_only(func))
    return checker


def _string_only(func: Any) -> Any:
    def check(value: object) -> bool:
        return not isinstance(value, str) or func(value)

    return check


def _strip_x(schema: Any) -> Any:
    """fastjsonschema rejects unknown keywords it cannot ignore; drop our `x-` annotations."""
    if isinstance(schema, Mapping):
        return {k: _strip_x(v) for k, v in schema.items() if not k.startswith("x-")}
    if isinstance(schema, list):
        return [_strip_x(v) for v in schema]
    return schema


_CLASS_OR_DOLLAR = re.compile(r"\\.|\[\^?\]?(?:\\.|[^\]\\])*\]?|\$", re.DOTALL)


@functools.lru_cache(maxsize=1024)
def ecma_pattern(pattern: str) -> str:
    r"""`pattern` for Python's `re` with ECMA-262's meaning of `$`: the end of the input only.

    Python's `$` also matches before a final newline, so `^[A-Z]+$` would accept "AB\n". Outside
    a character class `$` becomes `\Z`; inside one it is escaped, which also keeps fastjsonschema
    (which rewrites every unescaped `$` to `\Z`) from breaking the class.
    """

    def fix(m: re.Match[str]) -> str:
        token = m.group(0)
        if token == "$":
            return r"\Z"
        if token.startswith("["):
            return re.sub(r"\\.|\$", lambda e: r"\$" if e.group(0) == "$" else e.group(0), token)
        return token

    return _CLASS_OR_DOLLAR.sub(fix, pattern)


def _ecma_patterns(schema: Any) -> Any:
    """A copy of a fast-path schema with every `pattern` rewritten by `ecma_pattern`."""
    if not isinstance(schema, Mapping):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "pattern" and isinstance(value, str):
            out[key] = ecma_pattern(value)
        elif key in _SCHEMA_MAPS and isinstance(value, Mapping):
            out[key] = {k: _ecma_patterns(v) for k, v in value.items()}
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [_ecma_patterns(v) for v in value]
        elif key in _SCHEMA_ONE:
            out[key] = _ecma_patterns(value)
        else:
            out[key] = value
    return out


def _pattern(validator: Any, patrn: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not re.search(ecma_pattern(patrn), instance):
        yield ValidationError(f"{instance!r} does not match {patrn!r}")


def _multiple_of(validator: Any, dB: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    """Exact, on the decimal numbers as written: 0.3 is a multiple of 0.1 (not in float maths)."""
    if not validator.is_type(instance, "number"):
        return
    try:
        failed = (Fraction(repr(instance)) / Fraction(repr(dB))).denominator != 1
    except (ValueError, OverflowError, ZeroDivisionError):  # inf / nan: let jsonschema decide
        yield from Draft202012Validator.VALIDATORS["multipleOf"](validator, dB, instance, schema)
        return
    if failed:
        yield ValidationError(f"{instance!r} is not a multiple of {dB}")


# The reference engine: 2020-12 with ECMA-262 `$` in patterns and exact `multipleOf`.
_Reference = extend(Draft202012Validator, {"pattern": _pattern, "multipleOf": _multiple_of})


def _error_pointer(err: ValidationError) -> str:
    path = list(err.absolute_path)
    if err.validator == "required" and isinstance(err.validator_value, list):
        missing = [
            r
            for r in err.validator_value
            if isinstance(err.instance, dict) and r not in err.instance
        ]
        if len(missing) == 1 or "'" in err.message:
            for r in missing:
                if repr(r) in err.message:
                    return pointer(*path, r)
    if (
        err.validator == "additionalProperties"
        and isinstance(err.instance, dict)
        and isinstance(err.schema, Mapping)
    ):
        allowed = set(err.schema.get("properties") or {})
        extra = [k for k in err.instance if k not in allowed]
        if len(extra) == 1:
            return pointer(*path, extra[0])
    return pointer(*path)


#: compiled checks by the schema's canonical JSON and the format functions (compiling is ~15% of
#: opening a registry; reopening one, reloading schemas or a test's registry reuses them)
_COMPILED: ContentCache[Any] = ContentCache(1024)


def _compiled(schema: Mapping[str, Any], formats: Mapping[str, Any]) -> Any:
    key = (canonical_key(schema), tuple(sorted(formats.items(), key=lambda kv: kv[0])))
    return _COMPILED.get(
        key,
        lambda: fastjsonschema.compile(
            dict(schema), formats=dict(formats), use_default=False, use_formats=True
        ),
    )


class RecordValidator:
    """Validate request bodies and import rows against one entity's JSON Schema."""

    def __init__(
        self,
        schema: Mapping[str, Any],
        *,
        use_fast_path: bool = True,
        formats: Mapping[str, Any] | None = None,
    ):
        """`formats` adds string formats (name -> check) to the built-in ones (plugins do)."""
        self.schema = schema
        all_formats = {**FORMATS, **(formats or {})}
        self._reference = _Reference(schema, format_checker=_format_checker(all_formats))
        self._fast = None
        if use_fast_path and fast_path_supported(schema, all_formats):
            fast_schema = dict(_ecma_patterns(_strip_x(schema)))
            fast_schema.pop("$schema", None)
            self._fast = _compiled(fast_schema, all_formats)

    @property
    def uses_fast_path(self) -> bool:
        return self._fast is not None

    def is_valid(self, record: Any) -> bool:
        """True when `record` is valid; the fastest check available."""
        if self._fast is not None:
            try:
                self._fast(record)
            except fastjsonschema.JsonSchemaException:
                return False
            return True
        return self._reference.is_valid(record)

    def errors(self, record: Any) -> list[FieldError]:
        """Every failing field of `record`, or an empty list when it is valid."""
        if self.is_valid(record):
            return []
        return self.full_errors(record)

    def full_errors(self, record: Any) -> list[FieldError]:
        """Every failing field, from the reference engine (slow path, for invalid records)."""
        out = []
        seen = set()
        for err in self._reference.iter_errors(record):
            for leaf in _leaves(err):
                fe = FieldError(_error_pointer(leaf), leaf.message, str(leaf.validator))
                if (fe.pointer, fe.message) not in seen:
                    seen.add((fe.pointer, fe.message))
                    out.append(fe)
        out.sort(key=lambda e: e.pointer)
        return out


def _leaves(err: ValidationError) -> list[ValidationError]:
    """For anyOf/oneOf failures report the branch errors that got furthest, not just 'no match'."""
    if err.validator in ("anyOf", "oneOf") and err.context:
        deepest = max(len(e.absolute_path) for e in err.context)
        if deepest > len(err.absolute_path):
            return [e for e in err.context if len(e.absolute_path) == deepest]
    return [err]
