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

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import fastjsonschema
from jsonschema import FormatChecker
from jsonschema.exceptions import ValidationError
from jsonschema.validators import Draft202012Validator

from generators.errors import pointer
from generators.formats import FORMATS

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
        "multipleOf",
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
        "contentMediaType",
        "contentEncoding",
    }
)
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


def fast_path_supported(schema: Any) -> bool:
    """True when every keyword in `schema` means the same to fastjsonschema as to 2020-12."""
    if isinstance(schema, bool):
        return True
    if not isinstance(schema, Mapping):
        return False
    for key, value in schema.items():
        if key.startswith("x-"):
            continue
        if key not in _SAME_IN_BOTH:
            return False
        if key in _SCHEMA_MAPS:
            if not isinstance(value, Mapping) or not all(
                fast_path_supported(v) for v in value.values()
            ):
                return False
        elif key in _SCHEMA_LISTS:
            if not isinstance(value, list) or not all(fast_path_supported(v) for v in value):
                return False
        elif (key in _SCHEMA_ONE and not fast_path_supported(value)) or (
            key == "items" and not isinstance(value, (Mapping, bool))
        ):
            return False
    return True


def _format_checker() -> FormatChecker:
    checker = FormatChecker(formats=())
    for name, func in FORMATS.items():
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
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        allowed = set(err.schema.get("properties") or {})
        extra = [k for k in err.instance if k not in allowed]
        if len(extra) == 1:
            return pointer(*path, extra[0])
    return pointer(*path)


class RecordValidator:
    """Validate request bodies and import rows against one entity's JSON Schema."""

    def __init__(self, schema: Mapping[str, Any], *, use_fast_path: bool = True):
        self.schema = schema
        self._reference = Draft202012Validator(schema, format_checker=_format_checker())
        self._fast = None
        if use_fast_path and fast_path_supported(schema):
            fast_schema = dict(_strip_x(schema))
            fast_schema.pop("$schema", None)
            self._fast = fastjsonschema.compile(
                fast_schema,
                formats=dict(FORMATS),
                use_default=False,
                use_formats=True,
            )

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
