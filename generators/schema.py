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
from open_registry.generators.x_registry import Structure
from open_registry.generators.x_registry import check as check_x_registry

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
#: The `x-registry` settings. Their structure is `x-registry.schema.json` (`generators.x_registry`),
#: which lists the same keys, operations and owner kinds (a test checks they agree).
XREG_KEYS = (
    "indexed",
    "unique",
    "references",
    "private",
    "internal",
    "access",
    "privateAccess",
    "writableBy",
    "owner",
    "display",
    "i18n",
)

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}$")
_FIELD = re.compile(r"^[A-Za-z@$][A-Za-z0-9_@$-]{0,62}$")


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
    #: top-level field -> the roles that may set or change it (`x-registry.writableBy`); other
    #: callers keep the stored value (or, on create, leave it out or send its `default`)
    writable_by: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
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


def _check_document(doc: Any, name: str, source: str) -> dict[str, Any]:
    """A schema file holds a JSON object, and its name can name an entity (raises otherwise)."""
    if not isinstance(doc, dict):
        raise SchemaError([SchemaIssue(source, "", "a schema file must hold a JSON object")])
    if not _NAME.fullmatch(name):
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
    return doc


def _native_document(
    doc: dict[str, Any],
    *,
    name: str,
    source: str,
    siblings: Mapping[str, dict[str, Any]],
    warnings: list[SchemaIssue],
) -> tuple[dict[str, Any], str]:
    """The document as valid JSON Schema 2020-12 with its `$ref`s inlined, and its origin
    ("native", or "opensaber" when translated); raises on any problem found so far."""
    issues: list[SchemaIssue] = []
    if opensaber.is_opensaber(doc):
        translated = opensaber.translate(
            doc, name=name, source=source, siblings=siblings, issues=issues, warnings=warnings
        )
        if translated is None or issues:
            raise SchemaError(issues)
        issues.extend(_meta_issues(translated, source))
        if issues:
            raise SchemaError(issues)
        return translated, "opensaber"
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
    return doc, "native"


def _x_registry(doc: Mapping[str, Any], source: str, issues: list[SchemaIssue]) -> Structure:
    """The `x-registry` block, its structure checked against the shipped schema
    (`x-registry.schema.json`): each structural error is reported at its key."""
    xreg = check_x_registry(doc.get("x-registry", {}))
    issues.extend(SchemaIssue(source, pointer("x-registry", *at), msg) for at, msg in xreg.errors)
    return xreg


def _entity_properties(
    doc: Mapping[str, Any], source: str, issues: list[SchemaIssue]
) -> dict[str, Any]:
    """The top level: an object of declared properties and nothing else (raises without any)."""
    if doc.get("type") != "object":
        issues.append(SchemaIssue(source, pointer("type"), 'an entity must be "type": "object"'))
    props = doc.get("properties")
    if not isinstance(props, dict) or not props:
        issues.append(
            SchemaIssue(source, pointer("properties"), "an entity needs at least one property")
        )
        raise SchemaError(issues)
    if doc.get("additionalProperties", False) is not False:
        issues.append(
            SchemaIssue(
                source,
                pointer("additionalProperties"),
                "top-level additionalProperties must be false (or left out): "
                "every field needs a column; put free-form data in an object field",
            )
        )
    for r in sorted(set(doc.get("required") or []) - set(props)):
        issues.append(
            SchemaIssue(source, pointer("required"), f"required field {r!r} is not declared")
        )
    return props


def _field_name_problem(pname: str) -> str | None:
    if pname in SYSTEM_FIELDS or pname.startswith("_"):
        return f"{pname!r} is reserved for system fields ({', '.join(SYSTEM_FIELDS)}); rename it"
    if not _FIELD.fullmatch(pname):
        return (
            "a field name starts with a letter and holds "
            "letters, digits, _ - @ $ (63 at most, no dots)"
        )
    return None


def _field(pname: str, pschema: Any, required: bool) -> Field:
    if not isinstance(pschema, dict):
        pschema = {} if pschema is True else {"not": {}}
    kind, nullable = field_kind(pschema)
    max_len = pschema.get("maxLength") if kind == "string" else None
    enum = pschema.get("enum")
    return Field(
        name=pname,
        kind=kind,
        schema=pschema,
        required=required,
        nullable=nullable,
        title=pschema.get("title"),
        description=pschema.get("description"),
        max_length=max_len if isinstance(max_len, int) else None,
        enum=tuple(enum) if isinstance(enum, list) else None,
    )


def _fields(
    doc: Mapping[str, Any], props: Mapping[str, Any], source: str, issues: list[SchemaIssue]
) -> dict[str, Field]:
    """One `Field` per top-level property whose name can be a column."""
    required = set(doc.get("required") or [])
    fields: dict[str, Field] = {}
    for pname, pschema in props.items():
        problem = _field_name_problem(pname)
        if problem is not None:
            issues.append(SchemaIssue(source, pointer("properties", pname), problem))
            continue
        fields[pname] = _field(pname, pschema, pname in required)
    return fields


def _group_problem(
    name: str, fields: Mapping[str, Field], where: str, *, allow_json: bool
) -> str | None:
    f = fields.get(name)
    if f is None:
        return f"field {name!r} does not exist"
    if not f.is_scalar and not allow_json:
        return (
            f"field {name!r} is a nested value ({f.kind}); only scalar fields can be {where} here"
        )
    return None


def _field_groups(
    xreg: Structure,
    where: str,
    source: str,
    fields: Mapping[str, Field],
    issues: list[SchemaIssue],
    *,
    allow_json: bool = False,
) -> list[tuple[str, ...]]:
    """`indexed` / `unique`: each item a field name or a list of them, naming existing fields
    (scalar ones, but for a single nested field when `allow_json`)."""
    groups: list[tuple[str, ...]] = []
    for i, item in enumerate(xreg.get(where, [])):
        if not xreg.sound(where, i):
            continue
        group = (item,) if isinstance(item, str) else tuple(item)
        problems = [
            _group_problem(n, fields, where, allow_json=allow_json and len(group) == 1)
            for n in group
        ]
        found = [p for p in problems if p is not None]
        for problem in found:
            issues.append(SchemaIssue(source, pointer("x-registry", where, i), problem))
        if not found:
            groups.append(group)
    return groups


def _names(
    xreg: Structure, where: str, source: str, props: Mapping[str, Any], issues: list[SchemaIssue]
) -> tuple[str, ...]:
    """`private` / `internal`: names of declared properties."""
    names = [(i, v) for i, v in enumerate(xreg.get(where, [])) if xreg.sound(where, i)]
    for i, v in names:
        if v not in props:
            issues.append(
                SchemaIssue(source, pointer("x-registry", where, i), f"field {v!r} does not exist")
            )
    return tuple(v for _, v in names if v in props)


def _reference_problem(props: Mapping[str, Any], path: str) -> str | None:
    leaf = walk_path(props, path)
    if leaf is None:
        return f"field {path!r} does not exist"
    if schema_types(leaf)[0] - {"string", "integer"}:
        return (
            f"field {path!r} must hold strings or "
            "integers (or arrays of them) to reference another entity"
        )
    return None


def _references(
    xreg: Structure, source: str, props: Mapping[str, Any], issues: list[SchemaIssue]
) -> list[Reference]:
    """`references`: each path exists and holds ids (strings or integers)."""
    references: list[Reference] = []
    for path, target in xreg.get("references", {}).items():
        if not xreg.sound("references", path):
            continue
        problem = _reference_problem(props, path)
        if problem is not None:
            issues.append(SchemaIssue(source, pointer("x-registry", "references", path), problem))
        elif isinstance(target, str):
            references.append(Reference(path=path, entity=target))
        else:
            references.append(Reference(path, target["entity"], target.get("field", "id")))
    return references


def _access(xreg: Structure) -> dict[str, tuple[str, ...]]:
    """`access`: operation -> roles (the structure is all there is to check)."""
    acc = xreg.get("access", {})
    return {op: tuple(roles) for op, roles in acc.items() if xreg.sound("access", op)}


def _private_access(xreg: Structure) -> tuple[str, ...]:
    """`privateAccess`: the roles that see private fields (a default when absent)."""
    roles = xreg.get("privateAccess")
    return DEFAULT_PRIVATE_ACCESS if roles is None else tuple(roles)


def _writable_by(
    xreg: Structure,
    source: str,
    props: Mapping[str, Any],
    internal: Iterable[str],
    issues: list[SchemaIssue],
) -> dict[str, tuple[str, ...]]:
    """`writableBy`: top-level fields that callers may send (not internal) -> roles (the role
    names are checked by the structure)."""
    out: dict[str, tuple[str, ...]] = {}
    for name, roles in xreg.get("writableBy", {}).items():
        if not xreg.sound("writableBy", name):
            continue
        problem = None
        if name not in props:
            problem = f"field {name!r} does not exist"
            if "." in name and walk_path(props, name) is not None:
                problem = f"field {name!r} is nested: writableBy takes top-level fields only"
        elif name in internal:
            problem = f"field {name!r} is internal (only the server sets it): leave it out here"
        if problem is not None:
            issues.append(SchemaIssue(source, pointer("x-registry", "writableBy", name), problem))
        else:
            out[name] = tuple(roles)
    return out


def _owner(
    xreg: Structure, source: str, props: Mapping[str, Any], issues: list[SchemaIssue]
) -> str | dict[str, str] | None:
    """`x-registry.owner`: a field path, or {"facility": path, "recipient": path} (`id` allowed:
    the record's own id)."""
    value = xreg.get("owner")
    if isinstance(value, str):
        if walk_path(props, value) is None:
            issues.append(
                SchemaIssue(
                    source, pointer("x-registry", "owner"), f"field {value!r} does not exist"
                )
            )
            return None
        return value
    if not isinstance(value, dict):
        return None  # absent, or not well formed (reported)
    out: dict[str, str] = {}
    for kind, path in value.items():
        if not xreg.sound("owner", kind):
            continue
        if path != "id" and walk_path(props, path) is None:
            issues.append(
                SchemaIssue(
                    source, pointer("x-registry", "owner", kind), f"field {path!r} does not exist"
                )
            )
        else:
            out[kind] = path
    return out or None


def _display(
    xreg: Structure, source: str, fields: Mapping[str, Field], issues: list[SchemaIssue]
) -> str | None:
    """`display`: a field, or a guess when absent."""
    display = xreg.get("display")
    if display is not None and display not in fields:
        issues.append(
            SchemaIssue(
                source, pointer("x-registry", "display"), f"field {display!r} does not exist"
            )
        )
        display = None
    return _guess_display(fields) if display is None else display


def _i18n(
    xreg: Structure, source: str, props: Mapping[str, Any], issues: list[SchemaIssue]
) -> dict[str, dict[str, Any]]:
    """`x-registry.i18n`: the translated field paths exist (titles, descriptions and enum
    labels per locale are checked by the structure)."""
    value: dict[str, dict[str, Any]] = xreg.get("i18n", {})
    for locale, spec in value.items():
        if not xreg.intact("i18n", locale, "fields"):
            continue
        for path in spec.get("fields", {}):
            here = ("i18n", locale, "fields", path)
            if xreg.sound(*here) and walk_path(props, path) is None:
                issues.append(
                    SchemaIssue(
                        source, pointer("x-registry", *here), f"field {path!r} does not exist"
                    )
                )
    return dict(value)


def parse_entity_schema(
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
    warnings: list[SchemaIssue] = []
    doc, origin = _native_document(
        _check_document(doc, name, source),
        name=name,
        source=source,
        siblings=siblings or {},
        warnings=warnings,
    )
    issues: list[SchemaIssue] = []
    xreg = _x_registry(doc, source, issues)
    props = _entity_properties(doc, source, issues)
    fields = _fields(doc, props, source, issues)
    indexes = _field_groups(xreg, "indexed", source, fields, issues, allow_json=True)
    uniques = _field_groups(xreg, "unique", source, fields, issues)
    private = _names(xreg, "private", source, props, issues)
    internal = _names(xreg, "internal", source, props, issues)
    writable_by = _writable_by(xreg, source, props, internal, issues)
    references = _references(xreg, source, props, issues)
    owner = _owner(xreg, source, props, issues)
    display = _display(xreg, source, fields, issues)
    i18n = _i18n(xreg, source, props, issues)
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
        access=_access(xreg),
        private_access=_private_access(xreg),
        writable_by=writable_by,
        owner=owner,
        display=display,
        origin=origin,
        warnings=tuple(warnings),
        i18n=i18n,
    )


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
