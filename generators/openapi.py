"""OpenAPI 3.1 fragments from entity schemas (pure).

OpenAPI 3.1 speaks JSON Schema 2020-12, so each entity's own schema is published as it is: the
request body of create/replace is the entity schema; responses add the system fields.
"""

from __future__ import annotations

import copy
from typing import Any

from open_registry.generators.query_ops import OPERATORS
from open_registry.generators.schema import EntitySchema


def component_name(entity: str, suffix: str = "") -> str:
    """`cold_chain_equipment` -> `ColdChainEquipment` (+ suffix)."""
    parts = entity.replace("-", "_").split("_")
    return "".join(p[:1].upper() + p[1:] for p in parts if p) + suffix


PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details; every error of every route has this shape.",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "description": "Every failing field, for validation errors.",
            "items": {
                "type": "object",
                "required": ["pointer", "message", "keyword"],
                "properties": {
                    "pointer": {"type": "string", "description": "JSON pointer to the field"},
                    "message": {"type": "string"},
                    "keyword": {"type": "string", "description": "the rule that failed"},
                },
            },
        },
    },
}

SYSTEM_PROPERTIES: dict[str, Any] = {
    "id": {
        "type": "string",
        "format": "uuid",
        "readOnly": True,
        "description": "Set by the server",
    },
    "_version": {
        "type": "integer",
        "readOnly": True,
        "description": "Increases on every change; the ETag",
    },
    "_createdAt": {"type": "string", "format": "date-time", "readOnly": True},
    "_updatedAt": {"type": "string", "format": "date-time", "readOnly": True},
    "_createdBy": {"type": "string", "readOnly": True},
    "_updatedBy": {"type": "string", "readOnly": True},
    "_deletedAt": {"type": "string", "format": "date-time", "readOnly": True},
}


def _clean(schema: dict[str, Any]) -> dict[str, Any]:
    out = {k: copy.deepcopy(v) for k, v in schema.items() if k not in ("$schema", "x-registry")}
    return out


def entity_components(entity: EntitySchema) -> dict[str, Any]:
    """Component schemas for one entity: input, record, patch, page, search."""
    base = _clean(dict(entity.json_schema))
    name = component_name(entity.name)
    props = dict(base.get("properties", {}))
    for hidden in entity.internal:
        props.pop(hidden, None)
    record = {
        **{k: v for k, v in base.items() if k not in ("properties", "required")},
        "properties": {
            "id": SYSTEM_PROPERTIES["id"],
            **props,
            **{k: v for k, v in SYSTEM_PROPERTIES.items() if k != "id"},
        },
        "required": [
            "id",
            *[r for r in base.get("required", []) if r not in entity.internal],
            "_version",
            "_createdAt",
            "_updatedAt",
        ],
    }
    patch = {
        "type": "object",
        "description": f"RFC 7396 merge patch of a {entity.name}; null removes a field",
        "properties": {k: {"anyOf": [v, {"type": "null"}]} for k, v in base["properties"].items()},
        "additionalProperties": False,
    }
    page = {
        "type": "object",
        "required": ["items", "next"],
        "properties": {
            "items": {"type": "array", "items": {"$ref": f"#/components/schemas/{name}"}},
            "next": {"type": ["string", "null"], "description": "cursor of the next page"},
            "total": {"type": "integer", "description": "when asked with count=true"},
        },
    }
    filters = {
        "type": "object",
        "description": "field (or dotted path) -> {operator: value}; a bare value means eq.",
        "additionalProperties": {
            "type": "object",
            "propertyNames": {"enum": list(OPERATORS)},
        },
        "properties": {
            k: {"type": "object", "propertyNames": {"enum": list(OPERATORS)}}
            for k, f in entity.fields.items()
            if k not in entity.private and k not in entity.internal
        },
    }
    search = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "filters": filters,
            "sort": {
                "type": "array",
                "items": {"type": "string"},
                "description": "field names, '-' first for descending",
            },
            "limit": {"type": "integer", "minimum": 1},
            "cursor": {"type": "string"},
            "count": {"type": "boolean"},
        },
        "examples": [
            {
                "filters": {k: {"eq": "..."} for k in list(filters["properties"])[:1]},
                "sort": ["-_createdAt"],
                "limit": 20,
            }
        ],
    }
    return {
        f"{name}Input": base,
        name: record,
        f"{name}Patch": patch,
        f"{name}Page": page,
        f"{name}Search": search,
    }


def filter_parameters(entity: EntitySchema) -> list[dict[str, Any]]:
    """Query parameters of the list route, one per searchable top-level field."""
    params: list[dict[str, Any]] = [
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}},
        {
            "name": "cursor",
            "in": "query",
            "schema": {"type": "string"},
            "description": "the `next` value of the previous page",
        },
        {
            "name": "sort",
            "in": "query",
            "schema": {"type": "string"},
            "description": "comma-separated fields, - first for descending: -_createdAt,name",
        },
        {"name": "count", "in": "query", "schema": {"type": "boolean"}},
    ]
    for name, f in entity.fields.items():
        if name in entity.private or name in entity.internal:
            continue
        schema = (
            {k: v for k, v in f.schema.items() if k in ("type", "format", "enum")}
            if f.is_scalar
            else {"type": "string"}
        )
        params.append(
            {
                "name": name,
                "in": "query",
                "required": False,
                "schema": schema,
                "description": (f.title or name)
                + f". Also `{name}[op]=` with op one of "
                + ", ".join(OPERATORS)
                + ("; dotted paths reach nested values" if not f.is_scalar else ""),
            }
        )
    return params
