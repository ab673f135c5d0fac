"""The entity schema model: one JSON Schema file in, one `EntitySchema` out (pure, no I/O).

A file is either a native JSON Schema 2020-12 document with an `x-registry` block, or an
opensaber / Sunbird RC file (translated by `generators.opensaber`). Both end as the same model.
Every problem is collected and raised together as `SchemaError`, each with file, JSON pointer and
reason, so an implementer fixes a file in one pass.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from jsonschema.validators import Draft202012Validator

from open_registry.generators import opensaber
from open_registry.generators.errors import SchemaError, SchemaIssue, pointer
from open_registry.generators.memo import ContentCache, canonical_key
from open_registry.generators.refs import inline_refs

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"

#: The kinds of column a top-level property can become.
SCALAR_KINDS = ("string", "integer", "number", "boolean", "date", "datetime")
KINDS = (*SCALAR_KINDS, "json")

#: System fields: set by the server, present on every record, never accepted in a request body.
SYSTEM_FIELDS = (
    "id",
    "_version",
    "_createdAt",
    "_updatedAt",
    "_createdBy",
    "_updatedBy",
    "_deletedAt",
)

OPERATIONS = ("create", "read", "update", "delete")
#: What an owner path ties a record to (`x-registry.owner`): a facility code or a recipient id.
OWNER_KINDS = ("facility", "recipient")
#: Roles granted private fields when `x-registry.privateAccess` is not given.
DEFAULT_PRIVATE_ACCESS = ("system-admin", "owner")
XREG_KEYS = (
    "indexed",
    "unique",
    "references",
    "private",
    "internal",
    "access",
    "privateAccess",
    "owner",
    "display",
    "i18n",
)

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}$")
_FIELD = re.compile(r"^[A-Za-z@$][A-Za-z0-9_@$-]{0,62}$")
_LOCALE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")


@dataclass(frozen=True)
class Field:
    """A top-level property of an entity, which becomes one column."""

    name: str
    kind: str
    schema: Mapping[str, Any]
    required: bool = False
    nullable: bool = False
    title: str | None = None
    description: str | None = None
    max_length: int | None = None
    enum: tuple[Any, ...] | None = None

    @property
    def is_scalar(self) -> bool:
        return self.kind in SCALAR_KINDS


@dataclass(frozen=True)
class Reference:
    """`path` (a field, or a dotted path through objects and arrays) holds ids of `entity`."""

    path: str
    entity: str
    field: str = "id"


@dataclass(frozen=True)
class EntitySchema:
    """Everything the framework generates for one entity comes from this."""

    name: str
    source: str
    title: str
    description: str | None
    json_schema: Mapping[str, Any]  # self-contained 2020-12 schema used for validation
    fields: Mapping[str, Field]
    indexes: tuple[tuple[str, ...], ...] = ()
    uniques: tuple[tuple[str, ...], ...] = ()
    references: tuple[Reference, ...] = ()
    private: tuple[str, ...] = ()
    internal: tuple[str, ...] = ()
    access: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: roles that see private fields (`x-registry.privateAccess`; default system-admin, owner)
    private_access: tuple[str, ...] = DEFAULT_PRIVATE_ACCESS
    #: a path, or {"facility": path, "recipient": path} (see `owner_paths`)
    owner: str | Mapping[str, str] | None = None
    display: str | None = None
    origin: str = "native"  # or "opensaber"
    warnings: tuple[SchemaIssue, ...] = ()
    #: translations: locale -> {"title", "description", "fields": {dotted path: title or
    #: {"title", "description", "enum": {value: label}}}}
    i18n: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def table_name(self) -> str:
        return table_name_for(self.name)

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields.values() if f.required)

    @property
    def owner_paths(self) -> dict[str, str]:
        """Owner kind ("facility" or "recipient") -> the path holding that key.

        The object form says it; a single path's kind is the entity it references (facility or
        recipient), or the entity itself when it is the facility or recipient entity, else
        "recipient" (a person's own records, as opensaber's ownershipAttributes)."""
        if self.owner is None:
            return {}
        if not isinstance(self.owner, str):
            return dict(self.owner)
        path = self.owner
        for ref in self.references:
            if ref.path == path and ref.entity in OWNER_KINDS:
                return {ref.entity: path}
        if self.name in OWNER_KINDS:
            return {self.name: path}
        return {"recipient": path}


def table_name_for(entity: str) -> str:
    """`FacilityProgramSlot` -> `facility_program_slot`; `cold_chain_equipment` unchanged."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", entity).lower()
    return snake


def schema_types(schema: Mapping[str, Any]) -> tuple[set[str], bool]:
    """The JSON types a schema admits (from `type`, or its `enum`/`const` values), and whether
    null is one of them (null itself is left out of the set)."""
    t = schema.get("type")
    if isinstance(t, str):
        types = {t}
    elif isinstance(t, list):
        types = {x for x in t if isinstance(x, str)}
    elif schema.get("enum"):
        types = {_json_type(v) for v in schema["enum"]}
    elif "const" in schema:
        types = {_json_type(schema["const"])}
    else:
        types = set()
    nullable = "null" in types
    types.discard("null")
    return types, nullable


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    return "array" if isinstance(v, list) else "object"


def field_kind(schema: Mapping[str, Any]) -> tuple[str, bool]:
    """The column kind of a property schema, and whether null is allowed."""
    types, nullable = schema_types(schema)
    if len(types) != 1 or any(k in schema for k in ("anyOf", "oneOf", "allOf")):
        return "json", nullable
    (t,) = types
    if t == "string":
        fmt = schema.get("format")
        if fmt == "date":
            return "date", nullable
        if fmt == "date-time":
            return "datetime", nullable
        return "string", nullable
    if t in ("integer", "number", "boolean"):
        return t, nullable
    return "json", nullable


_META = Draft202012Validator(Draft202012Validator.META_SCHEMA)
#: meta-schema results by the document's canonical JSON (the check is most of a parse's cost)
_META_RESULTS: ContentCache[tuple[tuple[str, str], ...]] = ContentCache(512)


def _meta_issues(doc: Mapping[str, Any], source: str) -> list[SchemaIssue]:
    def check() -> tuple[tuple[str, str], ...]:
        errors = sorted(_META.iter_errors(doc), key=lambda e: list(e.absolute_path))
        return tuple((pointer(*e.absolute_path), e.message) for e in errors)

    found = _META_RESULTS.get(canonical_key(doc), check)
    return [
        SchemaIssue(source, ptr, f"not valid JSON Schema 2020-12: {message}")
        for ptr, message in found
    ]


def walk_path(props: Mapping[str, Any], path: str) -> Mapping[str, Any] | None:
    """Follow a dotted path through object properties and array items."""
    node: Mapping[str, Any] | None = {"type": "object", "properties": props}
    for part in path.split("."):
        while node is not None and isinstance(node.get("items"), dict):
            node = node["items"]
        if node is None:
            return None
        sub = (node.get("properties") or {}).get(part)
        if not isinstance(sub, dict):
            return None
        node = sub
    while node is not None and isinstance(node.get("items"), dict):
        node = node["items"]
    return node


def _field_groups(
    value: Any,
    where: str,
    source: str,
    fields: Mapping[str, Field],
    issues: list[SchemaIssue],
    *,
    allow_json: bool = False,
) -> list[tuple[str, ...]]:
    groups: list[tuple[str, ...]] = []
    if not isinstance(value, list):
        issues.append(
            SchemaIssue(
                source,
                pointer("x-registry", where),
                "must be a list of field names or of lists of field names",
            )
        )
        return groups
    for i, item in enumerate(value):
        group = (
            (item,) if isinstance(item, str) else tuple(item) if isinstance(item, list) else None
        )
        if not group or not all(isinstance(g, str) for g in group):
            issues.append(
                SchemaIssue(
                    source,
                    pointer("x-registry", where, i),
                    "must be a field name or a non-empty list of field names",
                )
            )
            continue
        bad = False
        for name in group:
            f = fields.get(name)
            if f is None:
                issues.append(
                    SchemaIssue(
                        source, pointer("x-registry", where, i), f"field {name!r} does not exist"
                    )
                )
                bad = True
            elif not f.is_scalar and not (allow_json and len(group) == 1):
                issues.append(
                    SchemaIssue(
                        source,
                        pointer("x-registry", where, i),
                        f"field {name!r} is a nested value ({f.kind}); only "
                        f"scalar fields can be {where} here",
                    )
                )
                bad = True
        if not bad:
            groups.append(group)
    return groups


def _names(
    value: Any, where: str, source: str, props: Mapping[str, Any], issues: list[SchemaIssue]
) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        issues.append(
            SchemaIssue(source, pointer("x-registry", where), "must be a list of field names")
        )
        return ()
    for i, v in enumerate(value):
        if v not in props:
            issues.append(
                SchemaIssue(source, pointer("x-registry", where, i), f"field {v!r} does not exist")
            )
    return tuple(v for v in value if v in props)


def parse_entity_schema(  # noqa: C901
    doc: Any,
    *,
    name: str,
    source: str,
    siblings: Mapping[str, dict[str, Any]] | None = None,
) -> EntitySchema:
    """Parse one schema document into an `EntitySchema`, or raise `SchemaError` listing every issue.

    `name` is the entity name (the file stem); `siblings` maps the file names of the other files in
    the same folder to their documents, for cross-file `$ref`.
    """
    issues: list[SchemaIssue] = []
    warnings: list[SchemaIssue] = []
    siblings = siblings or {}
    if not isinstance(doc, dict):
        raise SchemaError([SchemaIssue(source, "", "a schema file must hold a JSON object")])
    if not _NAME.match(name):
        raise SchemaError(
            [
                SchemaIssue(
                    source,
                    "",
                    f"entity name {name!r} (the file name) must "
                    "start with a letter and hold only letters, digits and _",
                )
            ]
        )
    origin = "native"
    if opensaber.is_opensaber(doc):
        origin = "opensaber"
        translated = opensaber.translate(
            doc, name=name, source=source, siblings=siblings, issues=issues, warnings=warnings
        )
        if translated is None or issues:
            raise SchemaError(issues)
        doc = translated
        issues.extend(_meta_issues(doc, source))
        if issues:
            raise SchemaError(issues)
    else:
        declared = doc.get("$schema")
        if declared is not None and declared.rstrip("#") != DRAFT_2020_12:
            issues.append(
                SchemaIssue(
                    source,
                    pointer("$schema"),
                    f"must be {DRAFT_2020_12!r} (or leave it out); got {declared!r}",
                )
            )
        issues.extend(_meta_issues(doc, source))
        if issues:
            raise SchemaError(issues)
        doc = inline_refs(doc, source=source, siblings=siblings, issues=issues)
        if issues:
            raise SchemaError(issues)

    xreg = doc.get("x-registry", {})
    if not isinstance(xreg, dict):
        raise SchemaError([SchemaIssue(source, pointer("x-registry"), "must be an object")])
    for key in xreg:
        if key not in XREG_KEYS:
            issues.append(
                SchemaIssue(
                    source,
                    pointer("x-registry", key),
                    f"unknown setting {key!r}; known: {', '.join(XREG_KEYS)}",
                )
            )
    if doc.get("type") != "object":
        issues.append(SchemaIssue(source, pointer("type"), 'an entity must be "type": "object"'))
    props = doc.get("properties")
    if not isinstance(props, dict) or not props:
        issues.append(
            SchemaIssue(source, pointer("properties"), "an entity needs at least one property")
        )
        raise SchemaError(issues)
    extra = doc.get("additionalProperties", False)
    if extra is not False:
        issues.append(
            SchemaIssue(
                source,
                pointer("additionalProperties"),
                "top-level additionalProperties must be false (or left out): "
                "every field needs a column; put free-form data in an object field",
            )
        )
    required = set(doc.get("required") or [])
    for r in sorted(required - set(props)):
        issues.append(
            SchemaIssue(source, pointer("required"), f"required field {r!r} is not declared")
        )

    fields: dict[str, Field] = {}
    for pname, pschema in props.items():
        where = pointer("properties", pname)
        if pname in SYSTEM_FIELDS or pname.startswith("_"):
            issues.append(
                SchemaIssue(
                    source,
                    where,
                    f"{pname!r} is reserved for system fields "
                    f"({', '.join(SYSTEM_FIELDS)}); rename it",
                )
            )
            continue
        if not _FIELD.match(pname):
            issues.append(
                SchemaIssue(
                    source,
                    where,
                    "a field name starts with a letter and holds "
                    "letters, digits, _ - @ $ (63 at most, no dots)",
                )
            )
            continue
        if not isinstance(pschema, dict):
            pschema = {} if pschema is True else {"not": {}}
        kind, nullable = field_kind(pschema)
        max_len = pschema.get("maxLength") if kind == "string" else None
        enum = pschema.get("enum")
        fields[pname] = Field(
            name=pname,
            kind=kind,
            schema=pschema,
            required=pname in required,
            nullable=nullable,
            title=pschema.get("title"),
            description=pschema.get("description"),
            max_length=max_len if isinstance(max_len, int) else None,
            enum=tuple(enum) if isinstance(enum, list) else None,
        )

    indexes = _field_groups(
        xreg.get("indexed", []), "indexed", source, fields, issues, allow_json=True
    )
    uniques = _field_groups(xreg.get("unique", []), "unique", source, fields, issues)
    private = _names(xreg.get("private", []), "private", source, props, issues)
    internal = _names(xreg.get("internal", []), "internal", source, props, issues)

    references: list[Reference] = []
    refs = xreg.get("references", {})
    if not isinstance(refs, dict):
        issues.append(
            SchemaIssue(
                source,
                pointer("x-registry", "references"),
                'must map a field to an entity: {"facilityId": "facility"}',
            )
        )
        refs = {}
    for path, target in refs.items():
        where = pointer("x-registry", "references", path)
        if isinstance(target, str):
            ref = Reference(path=path, entity=target)
        elif (
            isinstance(target, dict)
            and isinstance(target.get("entity"), str)
            and isinstance(target.get("field", "id"), str)
            and set(target) <= {"entity", "field"}
        ):
            ref = Reference(path=path, entity=target["entity"], field=target.get("field", "id"))
        else:
            issues.append(
                SchemaIssue(
                    source, where, 'must be an entity name or {"entity": ..., "field": ...}'
                )
            )
            continue
        leaf = walk_path(props, path)
        if leaf is None:
            issues.append(SchemaIssue(source, where, f"field {path!r} does not exist"))
            continue
        if schema_types(leaf)[0] - {"string", "integer"}:
            issues.append(
                SchemaIssue(
                    source,
                    where,
                    f"field {path!r} must hold strings or "
                    "integers (or arrays of them) to reference another entity",
                )
            )
            continue
        references.append(ref)

    access: dict[str, tuple[str, ...]] = {}
    acc = xreg.get("access", {})
    if not isinstance(acc, dict):
        issues.append(
            SchemaIssue(
                source,
                pointer("x-registry", "access"),
                'must map operations to roles: {"read": ["public"]}',
            )
        )
        acc = {}
    for op, roles in acc.items():
        if op not in OPERATIONS:
            issues.append(
                SchemaIssue(
                    source,
                    pointer("x-registry", "access", op),
                    f"unknown operation {op!r}; known: {', '.join(OPERATIONS)}",
                )
            )
        elif not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            issues.append(
                SchemaIssue(
                    source, pointer("x-registry", "access", op), "must be a list of role names"
                )
            )
        else:
            access[op] = tuple(roles)

    private_access = _roles(xreg, "privateAccess", source, issues)
    owner = _owner(xreg.get("owner"), source, props, issues)
    display = xreg.get("display")
    if display is not None and display not in fields:
        issues.append(
            SchemaIssue(
                source, pointer("x-registry", "display"), f"field {display!r} does not exist"
            )
        )
        display = None
    if display is None:
        display = _guess_display(fields)
    i18n = _i18n(xreg.get("i18n", {}), source, props, issues)

    if issues:
        raise SchemaError(issues)

    validation = {k: v for k, v in doc.items() if k not in ("x-registry", "$defs", "definitions")}
    validation["$schema"] = DRAFT_2020_12
    validation["additionalProperties"] = False
    return EntitySchema(
        name=name,
        source=source,
        title=str(doc.get("title") or name),
        description=doc.get("description"),
        json_schema=validation,
        fields=fields,
        indexes=tuple(indexes),
        uniques=tuple(uniques),
        references=tuple(references),
        private=private,
        internal=internal,
        access=access,
        private_access=DEFAULT_PRIVATE_ACCESS if private_access is None else private_access,
        owner=owner,
        display=display,
        origin=origin,
        warnings=tuple(warnings),
        i18n=i18n,
    )


def _roles(
    xreg: Mapping[str, Any], key: str, source: str, issues: list[SchemaIssue]
) -> tuple[str, ...] | None:
    """A list of role names (`x-registry.privateAccess`), None when absent."""
    value = xreg.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(r, str) for r in value):
        issues.append(
            SchemaIssue(source, pointer("x-registry", key), "must be a list of role names")
        )
        return None
    return tuple(value)


def _owner(
    value: Any, source: str, props: Mapping[str, Any], issues: list[SchemaIssue]
) -> str | dict[str, str] | None:
    """`x-registry.owner`: a field path, or {"facility": path, "recipient": path} (`id` allowed:
    the record's own id)."""
    if value is None:
        return None
    where = pointer("x-registry", "owner")
    if isinstance(value, str):
        if walk_path(props, value) is None:
            issues.append(SchemaIssue(source, where, f"field {value!r} does not exist"))
            return None
        return value
    if not isinstance(value, dict) or not value:
        issues.append(
            SchemaIssue(
                source, where, 'must be a field path or {"facility": path, "recipient": path}'
            )
        )
        return None
    out: dict[str, str] = {}
    for kind, path in value.items():
        if kind not in OWNER_KINDS:
            issues.append(
                SchemaIssue(
                    source,
                    pointer("x-registry", "owner", kind),
                    f"unknown owner kind {kind!r}; known: {', '.join(OWNER_KINDS)}",
                )
            )
        elif not isinstance(path, str) or (path != "id" and walk_path(props, path) is None):
            issues.append(
                SchemaIssue(
                    source, pointer("x-registry", "owner", kind), f"field {path!r} does not exist"
                )
            )
        else:
            out[kind] = path
    return out or None


def _i18n(
    value: Any, source: str, props: Mapping[str, Any], issues: list[SchemaIssue]
) -> dict[str, dict[str, Any]]:
    """Check `x-registry.i18n`: titles, descriptions and enum labels per locale."""
    where = pointer("x-registry", "i18n")
    shape = 'must map a locale to {"title", "description", "fields": {"path": "title"}}'
    if not isinstance(value, dict):
        issues.append(SchemaIssue(source, where, shape))
        return {}
    out: dict[str, dict[str, Any]] = {}
    for locale, spec in value.items():
        at = pointer("x-registry", "i18n", locale)
        if not _LOCALE.match(locale):
            issues.append(SchemaIssue(source, at, f"{locale!r} is not a language tag (fr, hi-IN)"))
            continue
        if not isinstance(spec, dict) or set(spec) - {"title", "description", "fields"}:
            issues.append(SchemaIssue(source, at, shape))
            continue
        bad = [k for k in ("title", "description") if k in spec and not isinstance(spec[k], str)]
        for k in bad:
            issues.append(
                SchemaIssue(source, pointer("x-registry", "i18n", locale, k), "must be text")
            )
        fields_spec = spec.get("fields", {})
        if not isinstance(fields_spec, dict):
            issues.append(
                SchemaIssue(source, pointer("x-registry", "i18n", locale, "fields"), shape)
            )
            continue
        for path, label in fields_spec.items():
            here = pointer("x-registry", "i18n", locale, "fields", path)
            if walk_path(props, path) is None:
                issues.append(SchemaIssue(source, here, f"field {path!r} does not exist"))
            elif not (isinstance(label, str) or _label_object(label)):
                issues.append(
                    SchemaIssue(
                        source,
                        here,
                        'must be a title or {"title", "description", "enum": {value: label}}',
                    )
                )
        out[locale] = spec
    return out


def _label_object(label: Any) -> bool:
    if not isinstance(label, dict) or set(label) - {"title", "description", "enum"}:
        return False
    if any(not isinstance(label.get(k, ""), str) for k in ("title", "description")):
        return False
    enum = label.get("enum", {})
    return isinstance(enum, dict) and all(isinstance(v, str) for v in enum.values())


def _guess_display(fields: Mapping[str, Field]) -> str | None:
    for candidate in ("name", "facilityName", "title", "code"):
        if candidate in fields and fields[candidate].kind == "string":
            return candidate
    for f in fields.values():
        if f.kind == "string":
            return f.name
    return None


def check_schema_set(entities: Iterable[EntitySchema]) -> list[SchemaIssue]:
    """Problems that only show across files: unknown referenced entities, clashing table names."""
    entities = list(entities)
    by_name = {e.name: e for e in entities}
    issues: list[SchemaIssue] = []
    tables: dict[str, EntitySchema] = {}
    for e in entities:
        other = tables.get(e.table_name)
        if other is not None:
            issues.append(
                SchemaIssue(
                    e.source,
                    "",
                    f"entity {e.name!r} needs table "
                    f"{e.table_name!r}, already taken by {other.name!r} "
                    f"({other.source})",
                )
            )
        tables[e.table_name] = e
        for ref in e.references:
            target = by_name.get(ref.entity)
            where = pointer("x-registry", "references", ref.path)
            if target is None:
                issues.append(
                    SchemaIssue(
                        e.source,
                        where,
                        f"references unknown entity "
                        f"{ref.entity!r}; known: {', '.join(sorted(by_name))}",
                    )
                )
            elif ref.field != "id" and (ref.field,) not in target.uniques:
                issues.append(
                    SchemaIssue(
                        e.source,
                        where,
                        f"{ref.entity}.{ref.field} must be "
                        "declared unique in that entity to be referenced",
                    )
                )
    return issues
