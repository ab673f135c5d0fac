"""Values at dotted paths in records (`address.state`, `programs.programId`): what searches,
access scopes, references, token claims, exports and the import's mappings read. No database
here: the import's worker process uses these without SQLAlchemy (`registry.imports.prepare`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def path_values(
    node: Any,
    path: str | Sequence[str | int],
    *,
    each: bool = True,
    index_lists: bool = True,
) -> list[tuple[tuple[str | int, ...], Any]]:
    """`(where, value)` for the values at a path in a JSON-like document; `None` is no value.

    `path` is dotted (`address.state`: field names only, `"0"` included) or a sequence of field
    names and integer list positions (`("programs", 0, "programId")`). A part is the key of a
    mapping (an int key too) or, when an int and `index_lists`, the position in a list. `where`
    is the path as walked, positions included (`("programs", 1, "programId")`):
    `pointer(*where)` is its JSON pointer.

    each=True (search, access scopes, references): a list met on the way that no int part
    indexes is fanned out, the rest of the path followed in each item, and a list at the end
    gives its items: one value per array element (nested arrays flattened), in document order.
    each=False (token claims, export cells, import mappings): no fan-out; at most one value, and
    a list at the end is that one value, whole.
    index_lists=False: an int part is only a mapping's key (the importer's records hold list
    items in int-keyed dicts while it builds them, and must not walk into a real list).
    """
    parts = tuple(path.split(".")) if isinstance(path, str) else tuple(path)
    if not each:
        value = value_at(node, parts, index_lists=index_lists)
        return [] if value is None else [(parts, value)]
    found: list[tuple[tuple[str | int, ...], Any]] = []
    _fan_out(node, parts, 0, (), index_lists, found)
    return found


def _fan_out(
    node: Any,
    parts: tuple[str | int, ...],
    at: int,
    where: tuple[str | int, ...],
    index_lists: bool,
    found: list[tuple[tuple[str | int, ...], Any]],
) -> None:
    if at < len(parts):
        part = parts[at]
        if type(node) is dict or isinstance(node, Mapping):
            if part in node:
                _fan_out(node[part], parts, at + 1, (*where, part), index_lists, found)
            return
        if not isinstance(node, list):
            return
        if index_lists and isinstance(part, int):
            if 0 <= part < len(node):
                _fan_out(node[part], parts, at + 1, (*where, part), index_lists, found)
            return
    elif not isinstance(node, list):
        if node is not None:
            found.append((where, node))
        return
    for i, item in enumerate(node):  # a list no int part indexes: each item, same part
        _fan_out(item, parts, at, (*where, i), index_lists, found)


def values_at(record: Mapping[str, Any], path: str) -> list[Any]:
    """Every value at a dotted path (`id` included), iterating through lists (`path_values`)."""
    if path == "id":
        return [record.get("id")]
    return [value for _, value in path_values(record, path)]


def value_at(node: Any, path: str | Sequence[str | int], *, index_lists: bool = True) -> Any:
    """The one value at a path, not fanning out through lists, or None: `path_values` with
    each=False, without the `where` (a token's claim, an export's cell: this one is hot)."""
    for part in path.split(".") if isinstance(path, str) else path:
        if type(node) is dict or isinstance(node, Mapping):  # the first check is the fast one
            if part not in node:
                return None
            node = node[part]
        elif index_lists and isinstance(node, list) and isinstance(part, int):
            if not 0 <= part < len(node):
                return None
            node = node[part]
        else:
            return None
    return node
