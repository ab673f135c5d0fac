"""Validation messages for people: an API error (JSON pointer, keyword, message for developers)
becomes a sentence in the page's language, written from the field's label and its schema
("Enter 4 to 10 digits", "Date of birth is required").

The API keeps its error bodies as they are (`pointer`, `message`, `keyword`: clients rely on
them); only the pages show these sentences, each still placed by the error's pointer. A keyword
this module has no sentence for keeps the API's message, so nothing is ever lost.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from open_registry.core.i18n import Translator
from open_registry.generators.formdata import errors_by_name, pointer_to_name
from open_registry.generators.forms import FormField

#: `^[0-9]{4,10}$`, `^\d{6}$`: a pattern of digits only, with its lengths
_DIGITS = re.compile(r"^\^(?:\[0-9\]|\\d)\{(\d+)(?:,(\d*))?\}\$$")
#: formats with a sentence of their own (`valid.format.<name>`)
_FORMATS = ("date", "date-time", "time", "email", "phone", "uri", "url")


def _field_at(fields: Sequence[FormField], pointer: str) -> FormField | None:
    """The form field an error's pointer names (row numbers skipped), if the form has it."""
    name = pointer_to_name(pointer)
    path = ".".join(p for p in name.split(".") if p and not p.isdigit())
    for top in fields:
        for f in top.walk():
            if f.path == path:
                return f
    return None


def _number(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _pattern(f: FormField, schema: Mapping[str, Any], t: Translator) -> str:
    digits = _DIGITS.match(str(schema.get("pattern", "")))
    if digits:
        low, high = digits.group(1), digits.group(2)
        if high is None:
            return t("valid.digits_exactly", n=low)
        return t("valid.digits_between", low=low, high=high or "…")
    return t("valid.pattern", field=f.label)


def _length(f: FormField, schema: Mapping[str, Any], keyword: str, t: Translator) -> str:
    low, high = schema.get("minLength"), schema.get("maxLength")
    if keyword == "minLength" and low in (None, 1):
        return t("valid.required", field=f.label)
    if keyword == "maxLength" and isinstance(high, int):
        return t("valid.max_length", n=high)
    return t("valid.min_length", n=low)


def _range(schema: Mapping[str, Any], keyword: str, t: Translator) -> str | None:
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None and high is not None:
        return t("valid.between", low=_number(low), high=_number(high))
    if keyword.endswith("inimum") and low is not None:
        return t("valid.at_least", n=_number(low))
    if high is not None:
        return t("valid.at_most", n=_number(high))
    return None


def message_for(f: FormField | None, error: Mapping[str, Any], t: Translator) -> str:
    """The sentence for one error of field `f` (None: the record as a whole) in `t`'s
    language; the API's message when there is none for its keyword."""
    keyword = str(error.get("keyword", ""))
    original = str(error.get("message", ""))
    if f is None:
        return original
    schema: Mapping[str, Any] = f.schema or {}
    fmt = str(schema.get("format", ""))
    simple = {
        "required": lambda: t("valid.required", field=f.label),
        "pattern": lambda: _pattern(f, schema, t),
        "format": lambda: (
            t(f"valid.format.{fmt}") if fmt in _FORMATS else t("valid.pattern", field=f.label)
        ),
        "enum": lambda: t("valid.enum", field=f.label),
        "minLength": lambda: _length(f, schema, keyword, t),
        "maxLength": lambda: _length(f, schema, keyword, t),
        "reference": lambda: t("valid.reference", field=f.label),
    }
    if keyword in simple:
        return simple[keyword]()
    if keyword in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        return _range(schema, keyword, t) or original
    if keyword == "type" and f.kind in ("integer", "number"):
        return t(f"valid.type.{f.kind}")
    return original


def people_errors(
    fields: Sequence[FormField], errors: Iterable[Mapping[str, Any]], t: Translator
) -> dict[str, list[str]]:
    """`errors_by_name` with every message written for people in `t`'s language."""
    rewritten = [
        {**e, "message": message_for(_field_at(fields, str(e.get("pointer", ""))), e, t)}
        for e in errors
    ]
    return errors_by_name(fields, rewritten)
