"""OpenAPI 3.1 fragments from entity schemas (pure).

OpenAPI 3.1 speaks JSON Schema 2020-12, so each entity's own schema is published as it is: the
request body of create/replace is the entity schema; responses add the system fields.

The document says what the app really answers: every generated operation's responses
(`entity_responses`: the record, a page, 201 with Location, 204, 304, every error as
`application/problem+json`), and for every operation who may call it (`finish_operation`: its
`security` and its rule in words, `x-access`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from open_registry.generators.formats import _EMAIL, _TIME, _URI
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

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_REF = "#/components/schemas/Problem"

#: what each error status means on the generated routes
ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "Bad request: a parameter, a filter or the body is malformed",
    401: "Sign-in needed (a bearer token), or the token is not valid",
    403: "Your roles may not do this",
    404: "Not found (or outside your scope)",
    409: "Conflict (unique field taken)",
    412: "Stale or malformed If-Match",
    413: "Body too large",
    415: "Not JSON",
    422: "Validation failed: every failing field listed",
}

#: the errors each generated operation answers (beside those of its access rule: 401, 403)
ENTITY_ERRORS: dict[str, tuple[int, ...]] = {
    "create": (400, 409, 413, 415, 422),
    "list": (400,),
    "search": (400, 413, 415),
    "export": (400,),
    "read": (404,),
    "replace": (400, 404, 409, 412, 413, 415, 422),
    "patch": (400, 404, 409, 412, 413, 415, 422),
    "delete": (400, 404, 412),
}

ETAG_HEADER: dict[str, Any] = {
    "description": 'The record\'s version, quoted: `"3"`; send it back in If-Match',
    "required": True,
    "schema": {"type": "string", "pattern": '^"[0-9]+"$'},
}


def problem_response(description: str) -> dict[str, Any]:
    """An error response: RFC 9457 problem details."""
    return {
        "description": description,
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": PROBLEM_REF}}},
    }


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {str(c): problem_response(ERROR_DESCRIPTIONS[c]) for c in codes}


def _json(ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}


def entity_responses(entity: str, operation: str) -> dict[int | str, dict[str, Any]]:
    """The responses of one generated operation of `entity` (`ENTITY_ERRORS`' keys), for the
    route's `responses=`: what it answers on success, then its errors, all problem+json."""
    comp = component_name(entity)
    record = {"description": "The record", "headers": {"ETag": ETAG_HEADER}, "content": _json(comp)}
    page = {
        "description": "A page of records; `next` is the cursor of the next page (null on the "
        "last), `total` is there when asked with count=true",
        "headers": {
            "Link": {
                "description": 'The next page: `<url>; rel="next"` (GET only, not on the last)',
                "schema": {"type": "string"},
            }
        },
        "content": _json(f"{comp}Page"),
    }
    ok: dict[str, dict[int | str, dict[str, Any]]] = {
        "create": {
            "201": {
                "description": "Created",
                "headers": {
                    "Location": {
                        "description": "The record's URL",
                        "required": True,
                        "schema": {"type": "string", "format": "uri-reference"},
                    },
                    "ETag": ETAG_HEADER,
                },
                "content": _json(comp),
            }
        },
        "list": {"200": page},
        "search": {"200": page},
        "export": {
            "200": {
                "description": "The rows and fields you may read: CSV (format=csv, the default) "
                "or JSON Lines (format=jsonl)",
                "headers": {
                    "Content-Disposition": {
                        "description": f'`attachment; filename="{entity}.csv"` (or .jsonl)',
                        "required": True,
                        "schema": {"type": "string"},
                    }
                },
                "content": {
                    "text/csv": {"schema": {"type": "string"}},
                    "application/x-ndjson": {"schema": {"type": "string"}},
                },
            }
        },
        "read": {
            "200": record,
            "304": {
                "description": "Not modified: If-None-Match names the current version",
                "headers": {"ETag": ETAG_HEADER},
            },
        },
        "replace": {"200": {**record, "description": "The record after the change"}},
        "patch": {"200": {**record, "description": "The record after the change"}},
        "delete": {"204": {"description": "Deleted (soft; purge=true removes it)"}},
    }
    responses: dict[int | str, dict[str, Any]] = {**ok[operation]}
    responses.update(error_responses(*ENTITY_ERRORS[operation]))
    return responses


def condition_parameter(name: str) -> dict[str, Any]:
    """The `If-Match` (writes) or `If-None-Match` (reads) header of a record route."""
    what = {
        "If-Match": "change only that version of the record (else 412); `*` or absent: any",
        "If-None-Match": "answer 304 without a body when it names the current version",
    }[name]
    return {
        "name": name,
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": f'An ETag (`"3"`): {what}',
    }


def finish_operation(
    operation: dict[str, Any],
    *,
    public: bool | None,
    access: dict[str, Any] | None = None,
    declared: Mapping[Any, Any] | None = None,
) -> None:
    """Make one operation of FastAPI's document say what the app answers (in place).

    - FastAPI's placeholder schema for a response class it does not know (`{"type": "string"}`
      under application/json; ours renders with orjson) goes: beside a `$ref` it is dropped;
      where the route's own `responses` (`declared`) name other media types and not JSON, the
      JSON entry goes; else the body is any JSON (`{}`, or the declared schema);
    - FastAPI's 422 `HTTPValidationError` goes: the app answers a malformed parameter or body
      with a 400 problem;
    - `public` (the route's rule lets anyone in) gives `security: [{}]`, else
      `[{"bearer": []}]` and the 401 (and 403 unless `access["rule"]` is `signed-in`) problems;
      `None` (no rule known) leaves the document's default;
    - `access` (the rule: `rule`, `description`, ...) becomes `x-access` and a line of the
      description;
    - a route that lists none of its errors in `declared` answers `4XX` problems.
    """
    declared = {str(k).upper(): v for k, v in (declared or {}).items()}
    responses: dict[str, Any] = operation.setdefault("responses", {})
    for status, response in responses.items():
        content = response.get("content") or {}
        schema = (content.get("application/json") or {}).get("schema")
        if not isinstance(schema, dict) or schema.get("type") != "string":
            continue
        if "$ref" in schema:
            del schema["type"]
        elif schema == {"type": "string"}:
            own = (declared.get(status) or {}).get("content") or {}
            if "application/json" in own:
                content["application/json"]["schema"] = own["application/json"].get("schema", {})
            elif own:
                del content["application/json"]
            else:
                content["application/json"]["schema"] = {}
    validation = responses.get("422", {}).get("content", {}).get("application/json", {})
    if str(validation.get("schema", {}).get("$ref", "")).endswith("/HTTPValidationError"):
        del responses["422"]
        responses.setdefault("400", problem_response(ERROR_DESCRIPTIONS[400]))
    if public is not None:
        operation["security"] = [{}] if public else [{"bearer": []}]
    if public is False:
        responses.setdefault("401", problem_response(ERROR_DESCRIPTIONS[401]))
        if (access or {}).get("rule") != "signed-in":
            responses.setdefault("403", problem_response(ERROR_DESCRIPTIONS[403]))
    if not any(k.startswith("4") or k == "DEFAULT" for k in declared):
        responses.setdefault(
            "4XX", problem_response("An error; every error of every route is a problem")
        )
    if access:
        operation["x-access"] = access
        line = f"Access: {access['description']}"
        text = operation.get("description")
        operation["description"] = f"{text}\n\n{line}" if text else line


def add_problems(
    spec: dict[str, Any], parameter: dict[str, Any], problems: Mapping[int, str]
) -> None:
    """Every operation of `spec` taking `parameter` (a `$ref`) may also answer `problems`
    (status -> description; a status it already lists keeps its description)."""
    for operations in (spec.get("paths") or {}).values():
        for operation in operations.values():
            if isinstance(operation, dict) and parameter in operation.get("parameters", ()):
                responses = operation.setdefault("responses", {})
                for status, description in problems.items():
                    responses.setdefault(str(status), problem_response(description))


def _refs(node: Any, out: set[str]) -> set[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            out.add(ref)
        for value in node.values():
            _refs(value, out)
    elif isinstance(node, list):
        for value in node:
            _refs(value, out)
    return out


def unused_components(spec: dict[str, Any], names: tuple[str, ...]) -> list[str]:
    """Which of the component schemas `names` nothing else in `spec` refers to."""
    schemas = spec.get("components", {}).get("schemas", {})
    rest = {k: v for k, v in spec.items() if k != "components"}
    refs = _refs([rest, [v for k, v in schemas.items() if k not in names]], set())
    return [n for n in names if n in schemas and f"#/components/schemas/{n}" not in refs]


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


#: formats the registry checks more loosely than JSON Schema does (`generators/formats.py`):
#: `time` is also HH:MM, `email` and `uri` a plain shape. A stored value may not be what a strict
#: validator calls that format, so the record (what responses hold) states the registry's own
#: rule as a pattern instead.
STORED_FORMATS: dict[str, str] = {
    "time": _TIME.pattern,
    "email": _EMAIL.pattern,
    "uri": _URI.pattern,
}
#: keywords whose values are data, not schemas; and those whose values map names to schemas
_DATA_KEYWORDS = frozenset({"const", "default", "enum", "examples", "example"})
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "dependentSchemas", "$defs"})


def as_stored(schema: Any) -> Any:
    """A copy of `schema` where the `STORED_FORMATS` are their patterns (a `pattern` of the
    field's own stays: the registry checks both)."""
    if isinstance(schema, list):
        return [as_stored(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: as_stored(s) for name, s in value.items()}
        else:
            out[key] = copy.deepcopy(value) if key in _DATA_KEYWORDS else as_stored(value)
    fmt = out.get("format")
    if isinstance(fmt, str) and fmt in STORED_FORMATS:
        del out["format"]
        out.setdefault("pattern", STORED_FORMATS[fmt])
    return out


def entity_components(entity: EntitySchema) -> dict[str, Any]:
    """Component schemas for one entity: input, record, patch, page, search."""
    base = _clean(dict(entity.json_schema))
    name = component_name(entity.name)
    props = {k: as_stored(v) for k, v in base.get("properties", {}).items()}
    for hidden in entity.internal:
        props.pop(hidden, None)
    record = {
        **as_stored({k: v for k, v in base.items() if k not in ("properties", "required")}),
        "properties": {
            "id": SYSTEM_PROPERTIES["id"],
            **props,
            **{k: v for k, v in SYSTEM_PROPERTIES.items() if k != "id"},
        },
        # private fields are left out for callers without the grant: never required
        "required": [
            "id",
            *[
                r
                for r in base.get("required", [])
                if r not in entity.internal and r not in entity.private
            ],
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
