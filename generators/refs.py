"""Inline every `$ref` of a schema so the result is self-contained (no `$ref` left).

Local references (`#/$defs/X`, `#/definitions/X`) and references to sibling files
(`common.json#/$defs/Address`, opensaber's `Common.json#/definitions/Address`) are both supported.
Recursive references are reported as an error: a registry entity is a finite tree of fields.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from open_registry.generators.errors import SchemaIssue, pointer

# Keywords that only annotate; a `$ref` sibling carrying one of these may simply override.
ANNOTATIONS = frozenset(
    {
        "title",
        "description",
        "examples",
        "default",
        "$comment",
        "$id",
        "readOnly",
        "writeOnly",
        "deprecated",
        "x-registry",
    }
)


def _resolve_pointer(doc: Any, frag: str) -> Any:
    if frag in ("", "/"):
        return doc
    if not frag.startswith("/"):
        raise KeyError(frag)
    node = doc
    for raw in frag[1:].split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def inline_refs(
    schema: dict[str, Any],
    *,
    source: str,
    siblings: Mapping[str, dict[str, Any]] | None = None,
    root: dict[str, Any] | None = None,
    issues: list[SchemaIssue],
) -> dict[str, Any]:
    """Return a copy of `schema` with every `$ref` replaced by its target; problems go to `issues`.

    `root` is the document local references (`#/...`) point into (default: `schema` itself).
    """
    siblings = siblings or {}

    def walk(
        node: Any, doc_name: str, doc: Any, path: tuple[Any, ...], stack: tuple[str, ...]
    ) -> Any:
        if isinstance(node, list):
            return [walk(v, doc_name, doc, (*path, i), stack) for i, v in enumerate(node)]
        if not isinstance(node, dict):
            return node
        out: dict[str, Any] = {}
        ref = node.get("$ref")
        if isinstance(ref, str):
            file_part, _, frag = ref.partition("#")
            target_name = file_part or doc_name
            target_doc = doc if not file_part else siblings.get(file_part)
            key = f"{target_name}#{frag}"
            if target_doc is None:
                issues.append(
                    SchemaIssue(
                        source,
                        pointer(*path, "$ref"),
                        f"$ref {ref!r}: no schema file {file_part!r} next to this one",
                    )
                )
                return {k: v for k, v in node.items() if k != "$ref"}
            if key in stack:
                issues.append(
                    SchemaIssue(
                        source,
                        pointer(*path, "$ref"),
                        f"$ref {ref!r} is recursive; registry fields must be a finite tree",
                    )
                )
                return {k: v for k, v in node.items() if k != "$ref"}
            try:
                target = _resolve_pointer(target_doc, frag)
            except (KeyError, IndexError, ValueError, TypeError):
                issues.append(
                    SchemaIssue(source, pointer(*path, "$ref"), f"$ref {ref!r} points to nothing")
                )
                return {k: v for k, v in node.items() if k != "$ref"}
            resolved = walk(copy.deepcopy(target), target_name, target_doc, path, (*stack, key))
            rest = {
                k: walk(v, doc_name, doc, (*path, k), stack) for k, v in node.items() if k != "$ref"
            }
            if not isinstance(resolved, dict):
                return resolved
            clash = [k for k in rest if k in resolved and k not in ANNOTATIONS]
            if clash:
                return {"allOf": [resolved], **rest}
            merged = {k: v for k, v in resolved.items() if k not in ("$defs", "definitions")}
            merged.update(rest)
            return merged
        for k, v in node.items():
            if k in ("$defs", "definitions") and isinstance(v, dict):
                continue  # definitions are inlined where used
            out[k] = walk(v, doc_name, doc, (*path, k), stack)
        return out

    return walk(schema, "", schema if root is None else root, (), ())
