"""Translate opensaber / Sunbird RC schema files (as DIVOC ships them) into our 2020-12 model.

Such a file is draft-07, wraps the entity in `definitions`, may `$ref` a sibling file such as
`Common.json`, and keeps registry settings in `_osConfig`. The translation keeps the file
unchanged on disk and produces the same kind of document a native schema is: a 2020-12 schema of
the entity with an `x-registry` block. Quirks of real files are handled, and each is recorded as a
warning rather than silently: `required` names that are never declared, index fields that do not
exist, opensaber's `___encryptedFields` markers and fragment `$id`s.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from open_registry.generators.errors import SchemaIssue, pointer
from open_registry.generators.refs import inline_refs

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"

# opensaber pseudo-roles onto ours.
_ROLE_MAP = {"anonymous": "public"}


def is_opensaber(doc: Mapping[str, Any]) -> bool:
    """True when a document is an opensaber / Sunbird RC schema file."""
    if "_osConfig" in doc:
        return True
    schema = str(doc.get("$schema", ""))
    return "draft-07" in schema and isinstance(doc.get("definitions"), dict)


def is_definitions_only(doc: Mapping[str, Any]) -> bool:
    """True for a shared-definitions file such as DIVOC's `Common.json` (no entity of its own)."""
    return is_opensaber(doc) and not doc.get("properties") and "_osConfig" not in doc


def _entity_definition(doc: Mapping[str, Any], name: str) -> tuple[str | None, Any]:
    defs = doc.get("definitions") or {}
    if name in defs:
        return name, defs[name]
    props = doc.get("properties") or {}
    if len(props) == 1:
        (only,) = props.values()
        ref = only.get("$ref", "") if isinstance(only, dict) else ""
        if ref.startswith("#/definitions/"):
            key = ref.split("/", 2)[2]
            if key in defs:
                return key, defs[key]
    return None, None


def _clean(node: Any) -> Any:
    """Drop opensaber-only markers and rewrite draft-07 keywords into their 2020-12 forms."""
    if isinstance(node, list):
        return [_clean(v) for v in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for k, v in node.items():
        if k in ("$id", "$schema"):
            continue  # opensaber puts fragment ids such as "#/properties/x" everywhere
        if k == "properties" and isinstance(v, dict):
            out[k] = {pk: _clean(pv) for pk, pv in v.items() if not pk.startswith("___")}
        elif k == "items" and isinstance(v, list):
            out["prefixItems"] = _clean(v)
        elif k == "additionalItems":
            out["items"] = _clean(v)
        elif k == "dependencies" and isinstance(v, dict):
            req = {dk: dv for dk, dv in v.items() if isinstance(dv, list)}
            sch = {dk: _clean(dv) for dk, dv in v.items() if not isinstance(dv, list)}
            if req:
                out["dependentRequired"] = req
            if sch:
                out["dependentSchemas"] = sch
        else:
            out[k] = _clean(v)
    return out


_COMPOSITE = re.compile(r"^\((.*)\)$")


def _index_list(values: Any) -> list[list[str]]:
    out: list[list[str]] = []
    for v in values or []:
        if not isinstance(v, str) or not v.strip():
            continue
        m = _COMPOSITE.match(v.strip())
        parts = [p.strip() for p in (m.group(1) if m else v).split(",") if p.strip()]
        if parts:
            out.append(parts)
    return out


def _missing_definition(source: str, name: str) -> SchemaIssue:
    return SchemaIssue(
        source,
        pointer("definitions"),
        f"no definition {name!r} (the file name) and no single top-level property pointing at one",
    )


def _entity_schema(
    doc: Mapping[str, Any],
    key: str | None,
    definition: dict[str, Any],
    *,
    source: str,
    siblings: Mapping[str, dict[str, Any]],
    issues: list[SchemaIssue],
) -> dict[str, Any]:
    """The definition with its `$ref`s inlined and its draft-07 keywords rewritten."""
    ref_issues: list[SchemaIssue] = []
    inlined = inline_refs(
        definition, source=source, siblings=siblings, root=dict(doc), issues=ref_issues
    )
    # inline_refs points into the definition; report pointers into the file.
    issues.extend(
        SchemaIssue(i.source, pointer("definitions", key) + i.pointer, i.message)
        for i in ref_issues
    )
    entity: dict[str, Any] = _clean(inlined)
    entity.setdefault("type", "object")
    entity.setdefault("properties", {})
    return entity


def _drop_undeclared_required(
    entity: dict[str, Any], key: str | None, source: str, warnings: list[SchemaIssue]
) -> None:
    """`required` names that no property declares: a warning each, and out of `required`."""
    required = entity.get("required")
    if not isinstance(required, list):
        return
    props = entity["properties"]
    for r in required:
        if r not in props:
            warnings.append(
                SchemaIssue(
                    source,
                    pointer("definitions", key, "required"),
                    f"required field {r!r} is never declared; ignored",
                )
            )
    entity["required"] = [r for r in required if r in props]
    if not entity["required"]:
        del entity["required"]


def _declared(
    groups: list[list[str]],
    what: str,
    props: Mapping[str, Any],
    source: str,
    warnings: list[SchemaIssue],
) -> list[Any]:
    """The groups (of one `_osConfig` list) whose fields all exist: a field name, or a list of
    them for a composite; a group naming an undeclared field is a warning and left out."""
    kept: list[Any] = []
    for group in groups:
        unknown = [f for f in group if f not in props]
        if unknown:
            warnings.append(
                SchemaIssue(
                    source,
                    pointer("_osConfig", what),
                    f"{what} names undeclared field(s) {unknown}; ignored",
                )
            )
            continue
        kept.append(group[0] if len(group) == 1 else group)
    return kept


def _access(conf: Mapping[str, Any]) -> dict[str, list[str]]:
    """Who may create (`inviteRoles`), read and update (`roles`), in our role names."""
    access: dict[str, list[str]] = {}
    if conf.get("inviteRoles"):
        access["create"] = [_ROLE_MAP.get(r, r) for r in conf["inviteRoles"]]
    if conf.get("roles"):
        roles = [_ROLE_MAP.get(r, r) for r in conf["roles"]]
        access["read"] = roles
        access["update"] = roles
    return access


def _owner(conf: Mapping[str, Any], props: Mapping[str, Any]) -> str | None:
    """The dotted path of the owning user's id (the first `ownershipAttributes` entry's
    `userId`), when it starts at a declared field."""
    owners = conf.get("ownershipAttributes") or []
    if not (owners and isinstance(owners[0], dict) and owners[0].get("userId")):
        return None
    path = str(owners[0]["userId"]).strip("/").replace("/", ".")
    return path if path.split(".")[0] in props else None


def _warn_unsupported(conf: Mapping[str, Any], source: str, warnings: list[SchemaIssue]) -> None:
    for ignored in ("signedFields",):
        if [f for f in conf.get(ignored) or [] if f]:
            warnings.append(
                SchemaIssue(
                    source, pointer("_osConfig", ignored), f"{ignored} is not supported; ignored"
                )
            )


def _x_registry(
    conf: Mapping[str, Any],
    props: Mapping[str, Any],
    source: str,
    warnings: list[SchemaIssue],
) -> dict[str, Any]:
    """Our `x-registry` block from opensaber's `_osConfig`: `indexed`, `unique`, `private` and
    `internal` from its field lists, then `access` and `owner`."""
    xreg: dict[str, Any] = {}
    for os_key, our_key in (("indexFields", "indexed"), ("uniqueIndexFields", "unique")):
        kept = _declared(_index_list(conf.get(os_key)), os_key, props, source, warnings)
        if kept:
            xreg[our_key] = kept
    for os_key, our_key in (("privateFields", "private"), ("internalFields", "internal")):
        fields = [f for f in conf.get(os_key) or [] if isinstance(f, str) and f.strip()]
        kept = _declared(
            [[f.lstrip("$.").split(".")[0]] for f in fields], os_key, props, source, warnings
        )
        if kept:
            xreg[our_key] = kept
    access = _access(conf)
    if access:
        xreg["access"] = access
    owner = _owner(conf, props)
    if owner:
        xreg["owner"] = owner
    _warn_unsupported(conf, source, warnings)
    return xreg


def translate(
    doc: Mapping[str, Any],
    *,
    name: str,
    source: str,
    siblings: Mapping[str, dict[str, Any]],
    issues: list[SchemaIssue],
    warnings: list[SchemaIssue],
) -> dict[str, Any] | None:
    """The 2020-12 entity schema for an opensaber file, or None (with issues) if impossible."""
    key, definition = _entity_definition(doc, name)
    if not isinstance(definition, dict):
        issues.append(_missing_definition(source, name))
        return None
    entity = _entity_schema(doc, key, definition, source=source, siblings=siblings, issues=issues)
    _drop_undeclared_required(entity, key, source, warnings)
    xreg = _x_registry(doc.get("_osConfig") or {}, entity["properties"], source, warnings)
    out: dict[str, Any] = {"$schema": DRAFT_2020_12}
    out["title"] = entity.pop("title", None) or doc.get("title") or name
    out.update(entity)
    if xreg:
        out["x-registry"] = xreg
    return out
