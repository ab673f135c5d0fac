"""Minimal valid records built from a JSON Schema, for tests that walk every entity."""

from __future__ import annotations

import itertools
from typing import Any

_counter = itertools.count(1)

FORMAT_SAMPLES = {
    "date": "2024-05-17",
    "date-time": "2024-05-17T10:30:00Z",
    "time": "09:30",
    "email": "someone@example.org",
    "uri": "https://example.org/x",
    "uuid": "8f14e45f-ceea-467f-a0e6-0e2b2f4c7f5a",
    "phone": "+99 98765 43210",
}


def sample_value(schema: dict[str, Any], *, full: bool = False) -> Any:
    """A value valid against `schema` (the subset of keywords our schemas use)."""
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    if "examples" in schema and schema["examples"] and "pattern" in schema:
        return schema["examples"][0]
    t = schema.get("type")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), None)
    if t == "object" or (t is None and "properties" in schema):
        props = schema.get("properties", {})
        keys = props if full else schema.get("required", [])
        return {k: sample_value(props[k], full=full) for k in keys if k in props}
    if t == "array":
        items = schema.get("items", {})
        n = max(schema.get("minItems", 1 if full else 0), 1 if full else 0)
        return [sample_value(items, full=full) for _ in range(n)] if isinstance(items, dict) else []
    if t == "integer":
        return int(schema.get("minimum", 1))
    if t == "number":
        return float(schema.get("minimum", 1.5))
    if t == "boolean":
        return True
    if t == "string" or t is None:
        fmt = schema.get("format")
        if fmt in FORMAT_SAMPLES:
            return FORMAT_SAMPLES[fmt]
        if "pattern" in schema:
            return f"S{next(_counter):04d}"
        text = f"value-{next(_counter)}"
        low, high = schema.get("minLength", 0), schema.get("maxLength", 10_000)
        return (text + "x" * max(0, low - len(text)))[:high]
    return None


def unique_variant(record: dict[str, Any], entity: Any, n: int) -> dict[str, Any]:
    """A copy of `record` whose unique fields are changed so it can be created again."""
    out = dict(record)
    for group in entity.uniques:
        for name in group:
            value = out.get(name)
            if isinstance(value, str):
                out[name] = f"{value[:24]}-U{n}"
            elif isinstance(value, int):
                out[name] = value + n
    return out
