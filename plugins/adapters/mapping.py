"""Declarative field mapping: an external system's JSON object -> one of our records.

A mapping is a table `our field -> rule` (dotted names build nested objects):

    code = "facilityCode"                          # a path in their object
    "address.district" = "location.district"
    "geoLocation.lat" = "geometry.coordinates.1"   # list items by position
    nationalId = "identifier[system=urn:nid].value" # the list item whose `system` is urn:nid
    category = { path = "ownership", map = { public = "GOVT", private = "PRIVATE" } }
    type = { value = "Fixed location" }            # a constant
    status = { path = "closed", map = { "true" = "Inactive" }, default = "Active" }
    rate = { path = "capacity", type = "integer" }

Pure: no I/O. Errors name our field and the reason; a record that cannot be mapped is reported
for its row, never half-written.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_SEGMENT = re.compile(r"^(?P<name>[^\[\]]*)(?:\[(?P<key>[^=\]]+)=(?P<value>[^\]]*)\])?$")
_MISSING = object()
TYPES = ("string", "integer", "number", "boolean")


class MappingError(ValueError):
    """A mapping rule that cannot be used (bad configuration): the message names the field."""


def _split(path: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in path:
        if ch == "." and depth == 0:
            parts.append(current)
            current = ""
            continue
        depth += ch == "["
        depth -= ch == "]"
        current += ch
    parts.append(current)
    return parts


def get_path(data: Any, path: str) -> Any:
    """The value at a dotted path (`a.b.0`, `identifier[system=x].value`), or `_MISSING`."""
    node = data
    for part in _split(path):
        m = _SEGMENT.match(part)
        if m is None:
            return _MISSING
        name = m.group("name")
        if name:
            if isinstance(node, Mapping):
                if name not in node:
                    return _MISSING
                node = node[name]
            elif isinstance(node, list) and name.lstrip("-").isdigit():
                i = int(name)
                if not -len(node) <= i < len(node):
                    return _MISSING
                node = node[i]
            else:
                return _MISSING
        if m.group("key") is not None:
            if not isinstance(node, list):
                return _MISSING
            key, want = m.group("key"), m.group("value")
            node = next(
                (i for i in node if isinstance(i, Mapping) and str(i.get(key)) == want), _MISSING
            )
            if node is _MISSING:
                return _MISSING
    return node


def value_of(data: Any, path: str, default: Any = None) -> Any:
    """`get_path` with a default for a missing value."""
    found = get_path(data, path)
    return default if found is _MISSING else found


def _convert(field: str, kind: str, value: Any) -> Any:
    if value is None:
        return None
    try:
        if kind == "string":
            return value if isinstance(value, str) else str(value)
        if kind == "integer":
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
            if not number.is_integer():
                raise ValueError
            return int(number)
        if kind == "number":
            if isinstance(value, bool):
                raise ValueError
            return float(value) if not isinstance(value, int) else value
        if kind == "boolean":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("true", "1", "yes"):
                return True
            if text in ("false", "0", "no"):
                return False
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"{field}: {value!r} is not a {kind}") from None
    raise MappingError(f"{field}: unknown type {kind!r}; types: {', '.join(TYPES)}")


class FieldMapping:
    """A checked mapping; `apply(obj)` -> (record, errors)."""

    def __init__(self, rules: Mapping[str, Any]):
        if not isinstance(rules, Mapping) or not rules:
            raise MappingError("a field mapping must be a table of `our field = rule`")
        self.rules: list[tuple[str, dict[str, Any]]] = []
        for field, rule in rules.items():
            if isinstance(rule, str):
                rule = {"path": rule}
            if not isinstance(rule, Mapping):
                raise MappingError(f"{field}: a rule is a path or a table, got {rule!r}")
            unknown = set(rule) - {"path", "value", "map", "default", "type"}
            if unknown:
                raise MappingError(f"{field}: unknown key(s) {', '.join(sorted(unknown))}")
            if ("path" in rule) == ("value" in rule):
                raise MappingError(f"{field}: give exactly one of `path` or `value`")
            if "map" in rule and not isinstance(rule["map"], Mapping):
                raise MappingError(f"{field}: `map` must be a table of their value = ours")
            if rule.get("type") not in (None, *TYPES):
                raise MappingError(f"{field}: type must be one of {', '.join(TYPES)}")
            self.rules.append((str(field), dict(rule)))

    def apply(self, data: Any) -> tuple[dict[str, Any], list[dict[str, str]]]:
        """Our record from their object, and errors as `{pointer, message, keyword}`."""
        record: dict[str, Any] = {}
        errors: list[dict[str, str]] = []
        for field, rule in self.rules:
            if "value" in rule:
                value = rule["value"]
            else:
                value = get_path(data, rule["path"])
                if value is _MISSING or value is None:
                    value = rule.get("default", _MISSING)
                elif "map" in rule:
                    table = rule["map"]
                    key = str(value).lower() if isinstance(value, bool) else str(value)
                    if key in table:
                        value = table[key]
                    elif "default" in rule:
                        value = rule["default"]
                    else:
                        errors.append(
                            {
                                "pointer": "/" + field.replace(".", "/"),
                                "message": f"{value!r} has no mapping (known: "
                                f"{', '.join(map(str, table))})",
                                "keyword": "mapping",
                            }
                        )
                        continue
            if value is _MISSING:
                continue
            if rule.get("type"):
                try:
                    value = _convert(field, rule["type"], value)
                except ValueError as exc:
                    pointer = "/" + field.replace(".", "/")
                    errors.append({"pointer": pointer, "message": str(exc), "keyword": "type"})
                    continue
            _put(record, field, value)
        return record, errors


def _put(record: dict[str, Any], field: str, value: Any) -> None:
    parts = field.split(".")
    node = record
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
