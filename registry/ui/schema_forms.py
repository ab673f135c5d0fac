"""The schema editor's forms: one field (add or edit) and a new entity, to and from a schema
document. Pure functions over JSON documents; the checking proper is `parse_entity_schema`'s.

A field form sets only what it shows (type, format, enum values, title, description, required,
indexed, unique) and keeps every other keyword of the field (`pattern`, `maxLength`, `examples`,
translations...), except keywords that no longer fit when the type changes.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from open_registry.generators.schema import DRAFT_2020_12, field_kind

#: types the form offers; "other" keeps a field's own type (objects, arrays, unions)
TYPES = ("string", "integer", "number", "boolean")
OTHER = "other"
#: formats the form offers for text fields ("" = none)
FORMATS = ("", "date", "date-time", "time", "email", "phone", "uri", "uuid")
#: keywords that only make sense for one kind of value, dropped when the type changes
_STRING_ONLY = ("format", "pattern", "minLength", "maxLength")
_NUMBER_ONLY = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")
_FIELD_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,62}")  # fullmatch: `$` lets "\n" through

FormErrors = dict[str, list[str]]


@dataclass
class FieldSpec:
    """What the field form shows and submits."""

    name: str = ""
    title: str = ""
    description: str = ""
    type: str = "string"
    format: str = ""
    enum: str = ""  # one value per line
    required: bool = False
    indexed: bool = False
    unique: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)  # the field's other keywords

    @property
    def simple(self) -> bool:
        return self.type in TYPES


def _single_groups(xreg: Mapping[str, Any], key: str) -> set[str]:
    out = set()
    for g in xreg.get(key) or []:
        if isinstance(g, str):
            out.add(g)
        elif isinstance(g, list) and len(g) == 1 and isinstance(g[0], str):
            out.add(g[0])
    return out


def spec_of(doc: Mapping[str, Any], name: str) -> FieldSpec:
    """The form values of field `name` of a document (KeyError when there is no such field)."""
    schema = doc["properties"][name]
    schema = schema if isinstance(schema, dict) else {}
    xreg = doc.get("x-registry") or {}
    t = schema.get("type")
    kind, _ = field_kind(schema)
    simple_type = t if isinstance(t, str) and t in TYPES and kind != "json" else OTHER
    enum = schema.get("enum")
    return FieldSpec(
        name=name,
        title=str(schema.get("title") or ""),
        description=str(schema.get("description") or ""),
        type=simple_type,
        format=str(schema.get("format") or ""),
        enum="\n".join(str(v) for v in enum if v is not None) if isinstance(enum, list) else "",
        required=name in (doc.get("required") or []),
        indexed=name in _single_groups(xreg, "indexed"),
        unique=name in _single_groups(xreg, "unique"),
        extra=schema,
    )


def spec_from_form(form: Mapping[str, str], *, name: str | None = None) -> FieldSpec:
    """The submitted field form (`name` given when editing: the name cannot change)."""
    return FieldSpec(
        name=(name if name is not None else form.get("name", "")).strip(),
        title=form.get("title", "").strip(),
        description=form.get("description", "").strip(),
        type=form.get("type", "string"),
        format=form.get("format", ""),
        enum=form.get("enum", ""),
        required=form.get("required") == "on",
        indexed=form.get("indexed") == "on",
        unique=form.get("unique") == "on",
    )


def _enum_values(spec: FieldSpec, errors: FormErrors) -> list[Any] | None:
    lines = [v.strip() for v in spec.enum.splitlines() if v.strip()]
    if not lines:
        return None
    if spec.type == "boolean":
        errors.setdefault("enum", []).append("a yes/no field has no list of values")
        return None
    values: list[Any] = []
    for line in lines:
        if spec.type in ("integer", "number"):
            try:
                values.append(int(line) if spec.type == "integer" else float(line))
            except ValueError:
                kind = "whole number" if spec.type == "integer" else "number"
                errors.setdefault("enum", []).append(f"{line!r} is not a {kind}")
                continue
        else:
            values.append(line)
    if len(set(map(str, values))) != len(values):
        errors.setdefault("enum", []).append("each value may appear once")
    return values


def _toggle_group(xreg: dict[str, Any], key: str, name: str, on: bool) -> None:
    groups = [
        g for g in xreg.get(key) or [] if g != name and not (isinstance(g, list) and g == [name])
    ]
    if on:
        groups.append(name)
    if groups:
        xreg[key] = groups
    else:
        xreg.pop(key, None)


def apply_spec(  # noqa: C901
    doc: Mapping[str, Any], spec: FieldSpec, *, editing: bool
) -> tuple[dict[str, Any], FormErrors]:
    """A copy of `doc` with the field of `spec` added (or changed, when `editing`), and the
    errors of the form itself (input name -> messages); the document is checked afterwards."""
    errors: FormErrors = {}
    out = copy.deepcopy(dict(doc))
    props = out.setdefault("properties", {})
    if not _FIELD_NAME.fullmatch(spec.name):
        errors.setdefault("name", []).append(
            "start with a letter; letters, digits and _ only (63 at most)"
        )
    elif not editing and spec.name in props:
        errors.setdefault("name", []).append(f"there is a field {spec.name!r} already")
    if spec.type not in (*TYPES, OTHER) or (spec.type == OTHER and not editing):
        errors.setdefault("type", []).append("choose a type")
    if spec.format not in FORMATS:
        errors.setdefault("format", []).append("choose a format from the list")
    elif spec.format and spec.type != "string":
        errors.setdefault("format", []).append("a format applies to text fields only")
    enum = _enum_values(spec, errors) if spec.type != OTHER else None
    if errors:
        return out, errors

    schema = dict(props.get(spec.name) or {}) if editing else {}
    if spec.type != OTHER:
        if schema.get("type") != spec.type:
            drop = ["examples", "default", "const"]
            if spec.type != "string":
                drop.extend(_STRING_ONLY)
            if spec.type not in ("integer", "number"):
                drop.extend(_NUMBER_ONLY)
            for k in drop:
                schema.pop(k, None)
        schema["type"] = spec.type
        if spec.format:
            schema["format"] = spec.format
        else:
            schema.pop("format", None)
        if enum:
            schema["enum"] = enum
        else:
            schema.pop("enum", None)
    for key in ("title", "description"):
        value = getattr(spec, key)
        if value:
            schema[key] = value
        else:
            schema.pop(key, None)
    props[spec.name] = schema

    required = [r for r in out.get("required") or [] if r != spec.name]
    if spec.required:
        required.append(spec.name)
    if required:
        out["required"] = required
    else:
        out.pop("required", None)
    xreg = dict(out.get("x-registry") or {})
    _toggle_group(xreg, "indexed", spec.name, spec.indexed)
    _toggle_group(xreg, "unique", spec.name, spec.unique)
    if xreg:
        out["x-registry"] = xreg
    else:
        out.pop("x-registry", None)
    return out, errors


def remove_field(doc: Mapping[str, Any], name: str) -> dict[str, Any]:
    """A copy of `doc` without field `name` (and without it in `required`, single-field keys,
    `private`, `internal`, `display` and the translations of it and of its sub-fields; other
    mentions are reported when the copy is checked)."""
    out = copy.deepcopy(dict(doc))
    (out.get("properties") or {}).pop(name, None)
    if name in (out.get("required") or []):
        out["required"] = [r for r in out["required"] if r != name]
    xreg = out.get("x-registry")
    if isinstance(xreg, dict):
        for key in ("indexed", "unique"):
            _toggle_group(xreg, key, name, False)
        for key in ("private", "internal"):
            if isinstance(xreg.get(key), list) and name in xreg[key]:
                xreg[key] = [v for v in xreg[key] if v != name]
        if xreg.get("display") == name:
            del xreg["display"]
        for spec in (xreg.get("i18n") or {}).values():
            fields = spec.get("fields") if isinstance(spec, dict) else None
            if isinstance(fields, dict):
                for path in [p for p in fields if p == name or p.startswith(f"{name}.")]:
                    del fields[path]
    return out


def new_entity_document(title: str, description: str) -> dict[str, Any]:
    """The document of a new entity, without fields yet (`apply_spec` adds the first one)."""
    doc: dict[str, Any] = {"$schema": DRAFT_2020_12, "type": "object"}
    if title:
        doc["title"] = title
    if description:
        doc["description"] = description
    doc["properties"] = {}
    doc["additionalProperties"] = False
    return doc


def errors_by_input(
    issues: Sequence[Mapping[str, str]], field_name: str | None = None
) -> FormErrors:
    """Schema problems (`{pointer, message}`) attached to the field form's inputs where one
    names them; every problem also stays in the summary at the top of the page."""
    out: FormErrors = {}
    for issue in issues:
        ptr, message = issue.get("pointer", ""), issue.get("message", "")
        parts = ptr.split("/")[1:]
        target = None
        if field_name and parts[:2] == ["properties", field_name]:
            rest = parts[2:3]
            target = rest[0] if rest and rest[0] in ("type", "format", "enum", "title") else "name"
        elif parts[:1] == ["required"]:
            target = "required"
        elif parts[:2] in (["x-registry", "indexed"], ["x-registry", "unique"]):
            target = parts[1]
        if target:
            out.setdefault(target, []).append(message)
    return out
