"""Between HTML form data and JSON records, driven by the form fields (pure).

Input names are dotted paths with array indices: `address.district`, `admins.0.name`,
`programs.1.schedule.days` (a checkbox group sends one value per ticked box). An empty input means
the field is absent; an object whose inputs are all empty is absent; an array row that is empty is
dropped and the rows are renumbered, so the pointers of validation errors (`/admins/0/name`) match
the names of the form that is shown again (`admins.0.name`).

A value that does not convert (letters in a number field, broken JSON) is passed on as the text
typed, so the validator reports it at the right pointer and the form shows it again unchanged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from open_registry.generators.forms import FormField

#: flat form values: input name -> text (or list of texts for checkbox groups)
FormValues = dict[str, Any]

_INT = re.compile(r"^[+-]?\d+$")
_ABSENT = object()


def collect(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """Form pairs (repeated names allowed) to name -> values."""
    out: dict[str, list[str]] = {}
    for name, value in pairs:
        out.setdefault(name, []).append(value)
    return out


def row_indices(values: Mapping[str, Any], name: str) -> list[int]:
    """The row numbers present for the array input `name` (`admins` -> [0, 1])."""
    found: set[int] = set()
    prefix = name + "."
    for key in values:
        if key.startswith(prefix):
            head = key[len(prefix) :].split(".", 1)[0]
            if head.isdigit():
                found.add(int(head))
    return sorted(found)


def _scalar(f: FormField, text: str) -> Any:
    if f.widget not in ("textarea", "json"):
        text = text.strip()
    if text == "":
        return _ABSENT
    kind = f.kind
    if kind == "integer":
        return int(text) if _INT.fullmatch(text) else text
    if kind == "number":
        if _INT.fullmatch(text):
            return int(text)
        try:
            number = float(text)
        except ValueError:
            return text
        return number if number == number and abs(number) != float("inf") else text
    if kind == "boolean":
        return text.lower() in ("true", "on", "1", "yes")
    if kind == "datetime":
        return datetime_from_input(text)
    if kind == "json":
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def datetime_from_input(text: str) -> str:
    """`2026-01-15T09:30` (a datetime-local input, read as UTC) -> `2026-01-15T09:30:00Z`."""
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}", text):
        return text + ":00Z"
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?", text):
        return text + "Z"
    return text


def datetime_to_input(value: str) -> str:
    """`2026-01-15T09:30:00Z` (or any offset) -> `2026-01-15T09:30:00` in UTC for the input."""
    try:
        dt = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        return value
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    return dt.isoformat(timespec="seconds")


class _Reader:
    """Reads one submitted form into JSON plus the renumbered flat values shown again."""

    def __init__(self, values: Mapping[str, list[str]]):
        self.values = values
        self.kept: FormValues = {}

    def read(self, f: FormField, name: str, out_name: str) -> Any:
        if f.widget == "fieldset":
            obj = {}
            for c in f.children:
                v = self.read(c, f"{name}.{c.key}", f"{out_name}.{c.key}")
                if v is not _ABSENT:
                    obj[c.key] = v
            meaningful = any(v is not False for v in obj.values())
            return obj if meaningful else _ABSENT
        if f.widget == "array" and f.item is not None:
            rows: list[Any] = []
            for i in row_indices(self.values, name):
                v = self.read(f.item, f"{name}.{i}", f"{out_name}.{len(rows)}")
                if v is not _ABSENT:
                    rows.append(v)
                else:
                    self._forget(f"{out_name}.{len(rows)}")
            return rows if rows else _ABSENT
        if f.widget == "checkboxes":
            texts = [t for t in self.values.get(name, []) if t != ""]
            if texts:
                self.kept[out_name] = texts
            items = [_scalar(f, t) for t in texts]
            return items if items else _ABSENT
        texts = self.values.get(name, [])
        text = texts[-1] if texts else ""
        if f.kind == "boolean" and f.widget == "checkbox":
            if text:
                self.kept[out_name] = "true"
            return bool(text) and _scalar(f, text)
        if text != "":
            self.kept[out_name] = text
        return _scalar(f, text)

    def _forget(self, prefix: str) -> None:
        for key in [k for k in self.kept if k == prefix or k.startswith(prefix + ".")]:
            del self.kept[key]


def form_to_json(
    fields: Sequence[FormField], pairs: Iterable[tuple[str, str]]
) -> tuple[dict[str, Any], FormValues]:
    """Submitted form pairs -> (the JSON record, the flat values to show if it is refused).

    Names that are not inputs of the form (`_version`, buttons) are ignored.
    """
    reader = _Reader(collect(pairs))
    body: dict[str, Any] = {}
    for f in fields:
        v = reader.read(f, f.key, f.key)
        if v is not _ABSENT:
            body[f.key] = v
    return body, reader.kept


def record_to_form(fields: Sequence[FormField], record: Mapping[str, Any]) -> FormValues:
    """A stored record -> flat form values (the edit form's starting point)."""
    out: FormValues = {}

    def put(f: FormField, name: str, value: Any) -> None:
        if value is None:
            return
        if f.widget == "fieldset" and isinstance(value, dict):
            for c in f.children:
                put(c, f"{name}.{c.key}", value.get(c.key))
        elif f.widget == "array" and f.item is not None and isinstance(value, list):
            for i, v in enumerate(value):
                put(f.item, f"{name}.{i}", v)
        elif f.widget == "checkboxes" and isinstance(value, list):
            out[name] = [_text(v) for v in value]
        elif f.kind == "json" or isinstance(value, dict | list):
            out[name] = json.dumps(value, ensure_ascii=False, indent=1)
        elif f.kind == "datetime" and isinstance(value, str):
            out[name] = datetime_to_input(value)
        else:
            out[name] = _text(value)

    for f in fields:
        put(f, f.key, record.get(f.key))
    return out


def _text(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return ""
    return str(value)


def pointer_to_name(pointer: str) -> str:
    """`/admins/0/name` -> `admins.0.name` (RFC 6901 escapes undone)."""
    parts = [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]]
    return ".".join(parts)


def errors_by_name(
    fields: Sequence[FormField], errors: Iterable[Mapping[str, str]]
) -> dict[str, list[str]]:
    """Validation errors keyed by the input (or fieldset) they belong to.

    An error below an input that is itself a JSON text box (a `json` widget) goes to that box;
    an error at the record itself goes to the key "" (shown at the top of the form).
    """
    json_inputs = {f.path for top in fields for f in top.walk() if f.widget == "json"}
    out: dict[str, list[str]] = {}
    for err in errors:
        name = pointer_to_name(str(err.get("pointer", "")))
        parts = name.split(".") if name else []
        for n in range(1, len(parts) + 1):
            schema_path = ".".join(p for p in parts[:n] if not p.isdigit())
            if schema_path in json_inputs:
                name = ".".join(parts[:n])
                break
        out.setdefault(name, []).append(str(err.get("message", "")))
    return out
