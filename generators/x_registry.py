"""The structure of an entity schema's `x-registry` block, checked by a shipped JSON Schema.

`x-registry.schema.json` (package data beside this module) says which settings exist and the
shape of each value; jsonschema checks a block against it and every error becomes one message at
a path inside the block (`("access", "read")`: "must be a list of role names"). The messages
live in the schema: a subschema's `x-error` is reported at the instance location it applies to,
for any error at or below it that no deeper `x-error` claims. What the values mean (fields that
must exist, references to other entities, ...) is checked afterwards by `generators.schema`,
only on the parts found sound here (`Structure.sound`).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from jsonschema.exceptions import ValidationError
from jsonschema.validators import Draft202012Validator

from open_registry.generators.memo import ContentCache, canonical_key

#: the shipped schema, a resource of this package
SCHEMA_RESOURCE = "x-registry.schema.json"

#: a place inside the block: keys and list indexes
KeyPath = tuple[str | int, ...]
#: a structural error: where, and the message
Error = tuple[KeyPath, str]

#: a schema keyword on an error's schema path -> (followed by a name or index, instance levels
#: it descends); a keyword not listed ends the walk (see `_claim`)
_STEPS: dict[str, tuple[bool, int]] = {
    "properties": (True, 1),
    "patternProperties": (True, 1),
    "additionalProperties": (False, 1),
    "items": (False, 1),
    "prefixItems": (True, 1),
    "allOf": (True, 0),
    "anyOf": (True, 0),
    "oneOf": (True, 0),
    "not": (False, 0),
}


@dataclass(frozen=True)
class Compiled:
    """The shipped schema and its validator."""

    schema: Mapping[str, Any]
    validator: Draft202012Validator


#: the compiled schema (one entry: the shipped file), and errors by the block's content
_COMPILED: ContentCache[Compiled] = ContentCache(4)
_RESULTS: ContentCache[tuple[Error, ...]] = ContentCache(512)


def load_schema() -> dict[str, Any]:
    """The shipped `x-registry` JSON Schema, read afresh."""
    text = (
        resources.files("open_registry.generators")
        .joinpath(SCHEMA_RESOURCE)
        .read_text(encoding="utf-8")
    )
    schema: dict[str, Any] = json.loads(text)
    return schema


def _compile() -> Compiled:
    schema = load_schema()
    Draft202012Validator.check_schema(schema)
    return Compiled(schema, Draft202012Validator(schema))


def compiled() -> Compiled:
    """The shipped schema with its validator, compiled once per process."""
    return _COMPILED.get(SCHEMA_RESOURCE, _compile)


def settings() -> tuple[str, ...]:
    """The known `x-registry` keys, in the schema's order."""
    return tuple(compiled().schema["properties"])


def _deref(root: Mapping[str, Any], node: Mapping[str, Any]) -> Mapping[str, Any]:
    """Follow local `$ref`s (`#/$defs/name`), the only kind the shipped schema uses."""
    while "$ref" in node:
        target: Mapping[str, Any] = root
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def _claim(root: Mapping[str, Any], error: ValidationError) -> tuple[int, str, Mapping[str, Any]]:
    """The deepest `x-error` on the error's schema path: how many levels of the instance path
    it sits at, its message, and the schema enclosing it (for `{known}`)."""
    node, parent, depth = _deref(root, root), root, 0
    claim = (len(error.absolute_path), error.message, root)  # when no `x-error` claims it
    if root.get("x-error"):
        claim = (0, root["x-error"], root)
    tokens = deque(error.absolute_schema_path)
    tokens.pop()  # the failing keyword itself
    while tokens and tokens[0] in _STEPS:
        keyword = str(tokens.popleft())
        named, levels = _STEPS[keyword]
        child = node[keyword][tokens.popleft()] if named else node[keyword]
        parent, depth = node, depth + levels
        message = child.get("x-error")
        node = _deref(root, child)
        message = message or node.get("x-error")
        if message:
            claim = (depth, message, parent)
    return claim


def _error(root: Mapping[str, Any], error: ValidationError) -> Error:
    depth, message, parent = _claim(root, error)
    path: KeyPath = tuple(error.absolute_path)[:depth]
    if path:
        message = message.replace("{key}", repr(path[-1]))
    known = ", ".join(parent.get("properties") or ())
    return path, message.replace("{known}", known)


def _order(error: Error) -> tuple[list[tuple[int, int, str]], str]:
    """Sort key: by path (list indexes numerically), then message."""
    return [(0, p, "") if isinstance(p, int) else (1, 0, p) for p in error[0]], error[1]


def structural_errors(block: Any) -> tuple[Error, ...]:
    """Every structural error of an `x-registry` block, sorted by path, one per path and
    message (cached by the block's content)."""

    def check() -> tuple[Error, ...]:
        c = compiled()
        found = {_error(c.schema, e) for e in c.validator.iter_errors(block)}
        return tuple(sorted(found, key=_order))

    return _RESULTS.get(canonical_key(block), check)


@dataclass(frozen=True)
class Structure:
    """An `x-registry` block and its structural errors. Read settings through `get`: a setting
    whose value has the wrong type reads as absent (its error is already reported)."""

    block: Mapping[str, Any]
    errors: tuple[Error, ...] = ()

    def intact(self, *path: str | int) -> bool:
        """No error at `path` or above it: the value there has the right type."""
        return not any(path[: len(p)] == p for p, _ in self.errors)

    def sound(self, *path: str | int) -> bool:
        """No error at, above or below `path`: the whole value there is well formed."""
        return self.intact(*path) and not any(p[: len(path)] == path for p, _ in self.errors)

    def get(self, key: str, default: Any = None) -> Any:
        return self.block.get(key, default) if self.intact(key) else default


def check(block: Any) -> Structure:
    """Check an `x-registry` block's structure (a non-object block reads as empty)."""
    errors = structural_errors(block)
    return Structure(block if isinstance(block, dict) else {}, errors)
