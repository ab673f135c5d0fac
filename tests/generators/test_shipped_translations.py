"""Every shipped schema (entity_schemas/ and the built-in plugins' schemas/) is translated to
Hindi and French: the entity's title, every field's title (nested fields and the fields of
array rows too) and every enum value's label, in `x-registry.i18n` (docs/ui.md)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from open_registry.core.schemas.loading import load_schemas

ROOT = Path(__file__).parents[2]
FOLDERS = [ROOT / "entity_schemas", *sorted((ROOT / "plugins").glob("*/schemas"))]
FILES = sorted(p for folder in FOLDERS for p in folder.glob("*.json"))
LOCALES = ("hi", "fr")


def _fields(props: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """(dotted path, schema) of every field, nested objects and array rows included."""
    for name, schema in props.items():
        path = prefix + name
        yield path, schema
        inner = schema.get("items", schema) if schema.get("type") == "array" else schema
        if isinstance(inner, dict) and isinstance(inner.get("properties"), dict):
            yield from _fields(inner["properties"], path + ".")


def _enum(schema: Mapping[str, Any]) -> list[Any]:
    items = schema.get("items")
    return list(schema.get("enum") or (items.get("enum") if isinstance(items, dict) else []) or [])


def test_the_shipped_schemas_are_found():
    names = {p.stem for p in FILES}
    assert {"recipient", "vaccinator", "facility", "side_effect", "schedule"} <= names


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
@pytest.mark.parametrize("locale", LOCALES)
def test_every_field_and_enum_value_is_translated(path: Path, locale: str):
    doc = json.loads(path.read_text(encoding="utf-8"))
    block = doc.get("x-registry", {}).get("i18n", {}).get(locale)
    assert block, f"{path.name}: no x-registry.i18n.{locale}"
    assert block.get("title"), f"{path.name}: no {locale} title"
    translated = block.get("fields", {})
    missing = []
    for field, schema in _fields(doc["properties"]):
        entry = translated.get(field)
        title = entry if isinstance(entry, str) else (entry or {}).get("title")
        if not title:
            missing.append(field)
            continue
        labels = {} if isinstance(entry, str) else entry.get("enum", {})
        missing += [f"{field}={v}" for v in _enum(schema) if not labels.get(str(v))]
    assert not missing, f"{path.name}: no {locale} text for {missing}"


def test_the_translations_load():
    """The paths they name exist (the loader refuses a translation of an unknown field)."""
    schemas = load_schemas(FOLDERS)
    assert {p.stem for p in FILES} <= {s.name for s in schemas}
