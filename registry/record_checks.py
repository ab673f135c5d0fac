"""What a record is completed and checked with that needs no database: its schema's defaults,
validation errors about private fields told without their values, and the values a reference
points at. Writes use these (`registry.records`), and so does the import's worker process,
which starts without SQLAlchemy (`registry.imports.prepare`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from open_registry.core.paths import path_values
from open_registry.generators.errors import pointer
from open_registry.generators.validators import FieldError

_INVALID = "is not valid (the value is private, so it is not repeated here)"
_PRIVATE_MESSAGES = {
    "type": "has the wrong type",
    "minLength": "is too short",
    "maxLength": "is too long",
    "pattern": "does not match the required pattern",
    "format": "is not in the required format",
    "enum": "is not one of the allowed values",
    "const": "is not the allowed value",
    "minimum": "is too small",
    "maximum": "is too large",
    "exclusiveMinimum": "is too small",
    "exclusiveMaximum": "is too large",
}


def redact_errors(private: Iterable[str], errors: list[FieldError]) -> list[FieldError]:
    """`errors` with the messages about private fields replaced by ones that quote no value."""
    private = frozenset(private)
    out = []
    for e in errors:
        top = e.pointer.split("/")[1] if e.pointer.count("/") else ""
        if top in private:
            e = FieldError(e.pointer, _PRIVATE_MESSAGES.get(e.keyword, _INVALID), e.keyword)
        out.append(e)
    return out


def pointed_values(record: Mapping[str, Any], path: str) -> list[tuple[str, Any]]:
    """(JSON pointer, value) for every value at a dotted path, through arrays (what reference
    checks report errors at)."""
    return [(pointer(*where), v) for where, v in path_values(record, path)]


class Defaults:
    """The `default`s of a schema, applied to a new record: an absent property that declares a
    `default` gets a copy of it, at the top level and inside the objects the record holds (also
    the objects of its lists). A value that is present, even `null`, is never replaced, and an
    absent object is not made up to hold its properties' defaults (give the object itself a
    `default` for that). Compiled once per schema; `apply` costs nothing without defaults."""

    __slots__ = ("_tree", "top")

    def __init__(self, schema: Mapping[str, Any]):
        self._tree = _default_tree(schema)
        #: the top-level fields with a default (the import's fast path checks these)
        self.top: tuple[str, ...] = tuple(self._tree[0]) if self._tree else ()

    def __bool__(self) -> bool:
        return self._tree is not None

    @property
    def nested(self) -> bool:
        """Whether some default sits below the top level."""
        return self._tree is not None and bool(self._tree[1] or self._tree[2])

    def apply(self, record: Any) -> Any:
        """`record` with the defaults of its absent properties (a copy where something was
        added; `record` itself is left as it is). Not a JSON object: returned unchanged."""
        if self._tree is None:
            return record
        return _fill(self._tree, record)


#: (defaults here, subtrees of properties, subtree of list items) for one object schema
_Tree = tuple[dict[str, Any], dict[str, "_Tree"], "_Tree | None"]


def _default_tree(node: Any) -> _Tree | None:
    """What `Defaults.apply` walks: only the branches that hold a default somewhere."""
    if not isinstance(node, Mapping):
        return None
    here: dict[str, Any] = {}
    below: dict[str, _Tree] = {}
    props = node.get("properties")
    if isinstance(props, Mapping):
        for name, sub in props.items():
            if isinstance(sub, Mapping) and "default" in sub:
                here[name] = sub["default"]
            tree = _default_tree(sub)
            if tree is not None:
                below[name] = tree
    items = _default_tree(node.get("items"))
    if not here and not below and items is None:
        return None
    return here, below, items


def _fill(tree: _Tree, value: Any) -> Any:
    here, below, items = tree
    if isinstance(value, list):
        if items is None:
            return value
        filled = [_fill(items, v) for v in value]
        return filled if any(a is not b for a, b in zip(filled, value, strict=True)) else value
    if not isinstance(value, dict):
        return value
    out = value
    for name, default in here.items():
        if name not in value:
            if out is value:
                out = dict(value)
            out[name] = copy.deepcopy(default)
    for name, sub in below.items():
        if name in out:
            inner = _fill(sub, out[name])
            if inner is not out[name]:
                if out is value:
                    out = dict(value)
                out[name] = inner
    return out
