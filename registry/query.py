"""Search: filters, sort and cursor paging over one entity table, on SQLite and PostgreSQL.

The same search can be written as query parameters (`?status=Active&name[startsWith]=Ci&sort=-name`)
or as a `POST .../search` body (`{"filters": {"status": {"eq": "Active"}}, "sort": ["-name"]}`);
both become a `Search`. Filters apply to any top-level field, and to nested values by a dotted path
(`address.state`); a path through an array matches when any element matches. Paging is keyset
(opaque cursor of the last row's sort values), so page 10,000 costs what page 1 does.

A private field is searched by exact value only (`eq`, `in`), and only when it has a blind index
(declared `indexed` or `unique`): the filter compares keyed hashes, never the value. Any other
operator on it is refused, and no error message repeats the value searched for.
"""

from __future__ import annotations

import base64
import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from open_registry.core.codec import (
    INT64_RANGE,
    Codec,
    RowLike,
    fits_int64,
    format_datetime,
    parse_datetime,
)
from open_registry.core.errors import BadRequest
from open_registry.core.paths import values_at
from open_registry.core.settings import Settings
from open_registry.generators.errors import pointer as json_pointer
from open_registry.generators.query_ops import OPERATORS
from open_registry.generators.schema import EntitySchema, field_kind, walk_path

RESERVED_PARAMS = frozenset({"limit", "cursor", "sort", "count"})
SORTABLE_SYSTEM = {
    "id": "id",
    "_createdAt": "_created_at",
    "_updatedAt": "_updated_at",
    "_version": "_version",
}


@dataclass(frozen=True)
class Filter:
    path: str
    op: str
    value: Any


@dataclass(frozen=True)
class Scope:
    """The rows a caller may touch: those whose value at one of the paths equals the key given
    with it (`(path, key)` pairs, OR-ed; none: no row at all). A path through a list matches
    when any element does; `id` is the record's own id. `None` in place of a Scope: every row.
    """

    alternatives: tuple[tuple[str, Any], ...] = ()

    def matches(self, record: Mapping[str, Any]) -> bool:
        """Whether a record (as the API shows it, private values included) is in scope."""
        return any(key in values_at(record, path) for path, key in self.alternatives)

    def filters(self) -> list[Filter]:
        return [Filter(path, "eq", key) for path, key in self.alternatives]


@dataclass(frozen=True)
class SearchLimits:
    """How much one search may ask for (settings `max_filters`, `max_sort_keys`,
    `max_filter_values`): beyond them the search is a 400 naming the setting."""

    max_filters: int = Settings.max_filters
    max_sort_keys: int = Settings.max_sort_keys
    max_filter_values: int = Settings.max_filter_values

    @classmethod
    def from_settings(cls, settings: Settings | None) -> SearchLimits:
        if settings is None:
            return cls()
        return cls(settings.max_filters, settings.max_sort_keys, settings.max_filter_values)


@dataclass
class Search:
    filters: list[Filter] = field(default_factory=list)
    sort: list[tuple[str, bool]] = field(default_factory=list)  # (field, descending)
    limit: int = 50
    cursor: str | None = None
    count: bool = False


def _problem(pointer: str, message: str, keyword: str) -> BadRequest:
    return BadRequest(
        message, errors=[{"pointer": pointer, "message": message, "keyword": keyword}]
    )


def filter_pointer(path: str, op: str) -> str:
    """Where a filter is in a search body: `/filters/<path>/<op>` (RFC 6901 escapes)."""
    return json_pointer("filters", path, op)


NUL_MESSAGE = "text may not contain the NUL character (U+0000)"


class SearchParser:
    """Turns query parameters or a search body into a checked `Search` for one entity."""

    def __init__(
        self,
        entity: EntitySchema,
        *,
        page_size: int,
        max_page_size: int,
        limits: SearchLimits | None = None,
    ):
        self.entity = entity
        self.page_size = page_size
        self.max_page_size = max_page_size
        self.limits = limits or SearchLimits()
        self.props = entity.json_schema.get("properties", {})

    # -- field kinds -----------------------------------------------------------------------
    def leaf(self, path: str, pointer: str) -> tuple[str, bool]:
        """Kind of the value at `path`, and whether the path crosses an array."""
        if path in SORTABLE_SYSTEM:
            return (
                "string" if path == "id" else "integer" if path == "_version" else "datetime",
                False,
            )
        top = path.split(".")[0]
        if top in self.entity.internal:
            raise _problem(pointer, f"field {top!r} cannot be searched", "field")
        if "\x00" in path:
            raise _problem(pointer, f"a field name: {NUL_MESSAGE}", "field")
        node = walk_path(self.props, path)
        if node is None:
            known = ", ".join(self.entity.fields)
            raise _problem(pointer, f"unknown field {path!r}; fields: {known}", "field")
        crosses = _crosses_array(self.props, path)
        kind, _ = field_kind(node)
        return kind, crosses

    def coerce(self, kind: str, value: Any, pointer: str) -> Any:
        """A filter value (from JSON or a query string) to the Python value the column compares:
        a whole number within 64 bits, a finite number, text without NUL (what the columns can
        hold; PostgreSQL refuses NUL in text and numbers beyond its BIGINT)."""
        try:
            if kind == "integer":
                return _whole_number(value, pointer)
            if kind == "number":
                return _finite_number(value, pointer)
            if kind == "boolean":
                if isinstance(value, bool):
                    return value
                s = str(value).lower()
                if s in ("true", "false"):
                    return s == "true"
                raise ValueError
            if kind == "date":
                return date.fromisoformat(str(value))
            if kind == "datetime":
                return parse_datetime(str(value))
        except (ValueError, TypeError, OverflowError):
            raise _problem(pointer, f"{_shown(value)} is not a valid {kind}", "type") from None
        if isinstance(value, dict | list):
            raise _problem(pointer, "expected a single value", "type")
        if value is None:
            raise _problem(pointer, f"expected a {kind}, got null", "type")
        text = value if isinstance(value, str) else str(value) if kind == "string" else value
        if isinstance(text, str) and "\x00" in text:
            raise _problem(pointer, NUL_MESSAGE, "type")
        return text

    # -- parsing -------------------------------------------------------------------------
    def from_params(self, params: list[tuple[str, str]]) -> Search:
        """From query parameters: `field=v`, `field[op]=v`, `in`/`between` comma-separated."""
        search = Search(limit=self.page_size)
        counter = _Budget(self.limits)
        for key, raw in params:
            if key in RESERVED_PARAMS:
                continue
            path, op = key, "eq"
            if key.endswith("]") and "[" in key:
                path, _, op = key[:-1].partition("[")
            pointer = filter_pointer(path, op)
            counter.add_filter()
            self._check_names(path, op, pointer)
            value: Any = raw
            if op == "in":
                value = [v for v in raw.split(",")] if raw else []
            elif op == "between":
                value = raw.split(",")
            search.filters.append(self._filter(path, op, value, pointer, counter))
        qp = dict(params)
        search.sort = self._sort(qp["sort"].split(",") if qp.get("sort") else [], "/sort")
        search.limit = self._limit(qp.get("limit"), "/limit")
        search.cursor = qp.get("cursor") or None
        search.count = str(qp.get("count", "")).lower() in ("1", "true", "yes")
        return search

    def from_body(self, body: Any) -> Search:
        """From a `POST .../search` body."""
        if not isinstance(body, dict):
            raise _problem("", "the search body must be a JSON object", "type")
        unknown = set(body) - {"filters", "sort", "limit", "cursor", "count"}
        if unknown:
            raise _problem(
                f"/{sorted(unknown)[0]}",
                f"unknown key(s) {sorted(unknown)}; known: filters, sort, limit, cursor, count",
                "additionalProperties",
            )
        search = Search(limit=self.page_size)
        filters = body.get("filters") or {}
        if not isinstance(filters, dict):
            raise _problem(
                "/filters", "filters must be an object of field -> {operator: value}", "type"
            )
        counter = _Budget(self.limits)
        for path, spec in filters.items():
            if not isinstance(spec, dict):
                spec = {"eq": spec}
            for op, value in spec.items():
                pointer = filter_pointer(path, op)
                counter.add_filter()
                self._check_names(path, op, pointer)
                search.filters.append(self._filter(path, op, value, pointer, counter))
        sort = body.get("sort") or []
        if isinstance(sort, str):
            sort = sort.split(",")
        if not isinstance(sort, list) or not all(isinstance(s, str) for s in sort):
            raise _problem(
                "/sort", "sort must be a list of field names, '-' first for descending", "type"
            )
        if len(sort) > self.limits.max_sort_keys:  # before any work on a huge list
            raise self._too_many_sort_keys()
        search.sort = self._sort(sort, "/sort")
        search.limit = self._limit(body.get("limit"), "/limit")
        cursor = body.get("cursor")
        if cursor is not None and not isinstance(cursor, str):
            raise _problem("/cursor", "cursor must be a string", "type")
        search.cursor = cursor
        search.count = bool(body.get("count"))
        return search

    def _check_names(self, path: str, op: str, pointer: str) -> None:
        """A filter names a field and a known operator."""
        if not path:
            raise _problem(
                pointer,
                "a filter needs a field name: write field=value or field[operator]=value",
                "field",
            )
        if op not in OPERATORS:
            raise _problem(
                pointer,
                f"unknown operator {_shown(op)}; operators: {', '.join(OPERATORS)}",
                "operator",
            )

    def _filter(
        self, path: str, op: str, value: Any, pointer: str, counter: _Budget | None = None
    ) -> Filter:
        counter = counter or _Budget(self.limits)
        top = path.split(".")[0]
        if top in self.entity.private:
            return self._private_filter(path, op, value, pointer, counter)
        kind, crosses = self.leaf(path, pointer)
        top_field = self.entity.fields.get(path)
        is_array = top_field is not None and top_field.schema.get("type") == "array"
        if kind == "json":
            raise _problem(pointer, self._not_filterable(path, is_array), "operator")
        if is_array and op not in ("eq", "in", "contains", "notContains"):
            raise _problem(
                pointer,
                f"{op} does not apply to {path!r}, a list: use eq, in, contains or notContains",
                "operator",
            )
        if op in ("in", "between"):
            if not isinstance(value, list):
                raise _problem(pointer, f"{op} takes a list of values", "type")
            if op == "between" and len(value) != 2:
                raise _problem(pointer, "between takes exactly two values: low,high", "type")
            counter.add_values(len(value), pointer)
            return Filter(path, op, [self.coerce(kind, v, pointer) for v in value])
        if op in ("contains", "icontains", "notContains", "startsWith", "endsWith"):
            if kind != "string" and not is_array:
                raise _problem(
                    pointer, f"{op} works on text fields; {path!r} is {kind}", "operator"
                )
            if is_array and op in ("icontains", "startsWith", "endsWith"):
                raise _problem(
                    pointer, f"{op} works on text fields; {path!r} is a list", "operator"
                )
        if crosses and op not in ("eq", "in", "contains"):
            raise _problem(
                pointer, f"{path!r} goes through a list: use eq, in or contains", "operator"
            )
        if op in ("gt", "gte", "lt", "lte") and kind in ("boolean", "json"):
            raise _problem(pointer, f"{op} does not apply to {kind} values", "operator")
        return Filter(path, op, self.coerce(kind, value, pointer))

    def _not_filterable(self, path: str, is_list: bool) -> str:
        """Why a path whose values are objects (or of no single type) takes no filter."""
        node = walk_path(self.props, path) or {}
        subs = [n for n in (node.get("properties") or {}) if isinstance(n, str)][:3]
        if subs:
            what = "a list of objects" if is_list else "objects"
            hint = ", ".join(f"{path}.{n}" for n in subs)
            return f"{path!r} holds {what}: filter on one of its fields ({hint}, ...)"
        return (
            f"{path!r} holds values of no single text, number or boolean type: "
            "it cannot be filtered"
        )

    def _too_many_sort_keys(self) -> BadRequest:
        n = self.limits.max_sort_keys
        return _problem("/sort", f"sort by at most {n} fields (setting max_sort_keys)", "maxItems")

    def _private_filter(
        self, path: str, op: str, value: Any, pointer: str, counter: _Budget
    ) -> Filter:
        """Exact match on a blind-indexed private field; anything else is refused."""
        top = path.split(".")[0]
        if path != top:
            raise _problem(pointer, f"field {top!r} is private: search it as a whole", "private")
        if op not in ("eq", "in"):
            raise _problem(
                pointer,
                f"field {top!r} is private: it can only be searched by exact value (eq, in)",
                "private",
            )
        keyed = {f for g in (*self.entity.indexes, *self.entity.uniques) for f in g}
        if top not in keyed:
            raise _problem(
                pointer,
                f"field {top!r} is private and has no blind index, so it cannot be searched "
                "(declare it in x-registry.indexed to search it by exact value)",
                "private",
            )
        kind = self.entity.fields[top].kind
        items = value if op == "in" else [value]
        if op == "in" and not isinstance(value, list):
            raise _problem(pointer, "in takes a list of values", "type")
        if op == "in":
            counter.add_values(len(value), pointer)
        out = []
        for v in items:
            try:
                out.append(self.coerce(kind, v, pointer))
            except BadRequest as exc:  # the message may quote the value: never repeat it
                reason = NUL_MESSAGE if exc.detail == NUL_MESSAGE else f"not a valid {kind}"
                raise _problem(pointer, f"{reason} for {top!r}", "type") from None
        return Filter(path, op, out if op == "in" else out[0])

    def _sort(self, items: list[str], pointer: str) -> list[tuple[str, bool]]:
        out: list[tuple[str, bool]] = []
        seen: set[str] = set()
        for item in items:
            item = item.strip()
            if not item:
                continue
            if len(out) >= self.limits.max_sort_keys:
                raise self._too_many_sort_keys()
            desc = item.startswith("-")
            name = item.lstrip("+-")
            f = self.entity.fields.get(name)
            if name not in SORTABLE_SYSTEM and (f is None or not f.is_scalar):
                raise _problem(
                    pointer,
                    f"cannot sort by {_shown(name)}: sort by a top-level text, number, "
                    "date or boolean field, or id, _createdAt, _updatedAt",
                    "sort",
                )
            if name in self.entity.private or name in self.entity.internal:
                raise _problem(pointer, f"cannot sort by {name!r}", "sort")
            if name in seen:
                raise _problem(pointer, f"sort names {name!r} more than once", "sort")
            seen.add(name)
            out.append((name, desc))
        return out

    def _limit(self, raw: Any, pointer: str) -> int:
        if raw is None or raw == "":
            return self.page_size
        try:
            limit = int(raw)
            if isinstance(raw, bool) or limit != float(raw):
                raise ValueError
        except (TypeError, ValueError, OverflowError):
            raise _problem(
                pointer, f"limit must be a whole number, got {_shown(raw)}", "type"
            ) from None
        if not 1 <= limit <= self.max_page_size:
            raise _problem(pointer, f"limit must be between 1 and {self.max_page_size}", "maximum")
        return limit


def _whole_number(value: Any, pointer: str) -> int:
    """An integer filter value: a whole number (text or JSON) that fits 64 bits."""
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError
    digits = value.strip().lstrip("+-") if isinstance(value, str) else ""
    # more digits than 64 bits have (and int() refuses text beyond 4300 of them)
    out = 2**64 if len(digits) > 19 and digits.isdigit() else int(value)
    if not fits_int64(out):
        raise _problem(
            pointer, f"{_shown(value)} is outside the 64-bit range {INT64_RANGE}", "type"
        )
    return out


def _finite_number(value: Any, pointer: str) -> float:
    """A number filter value: finite (`nan`, `inf` and `1e400` match nothing stored)."""
    if isinstance(value, bool):
        raise ValueError
    number = float(value)
    if not math.isfinite(number):
        raise _problem(pointer, f"{_shown(value)} is not a finite number", "type")
    return number


class _Budget:
    """What one search has used of its `SearchLimits`: filters and `in`/`between` values."""

    def __init__(self, limits: SearchLimits):
        self.limits = limits
        self.filters = 0
        self.values = 0

    def add_filter(self) -> None:
        self.filters += 1
        if self.filters > self.limits.max_filters:
            n = self.limits.max_filters
            raise _problem(
                "/filters", f"at most {n} filters in one search (setting max_filters)", "maxItems"
            )

    def add_values(self, count: int, pointer: str) -> None:
        self.values += count
        if self.values > self.limits.max_filter_values:
            n = self.limits.max_filter_values
            raise _problem(
                pointer,
                f"at most {n} values in the in-lists of one search (setting max_filter_values)",
                "maxItems",
            )


def _shown(value: Any, limit: int = 40) -> str:
    """`repr(value)`, cut short: error messages quote what was sent, never all of it."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-1]}"


def _crosses_array(props: Mapping[str, Any], path: str) -> bool:
    parts = path.split(".")
    node: Any = {"properties": props}
    for i, part in enumerate(parts):
        node = (node.get("properties") or {}).get(part, {})
        if node.get("type") == "array" and i < len(parts) - 1:
            return True
        while isinstance(node.get("items"), dict) and i < len(parts) - 1:
            node = node["items"]
    return False


def escape_like(value: str) -> str:
    """`value` for a LIKE pattern with `escape="\\"`: its `%`, `_` and `\\` match themselves."""
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _like(pattern: str) -> Callable[[Any, Any], sa.ColumnElement[bool]]:
    """A LIKE test of `pattern` with the value (escaped) in place of `{}`."""
    return lambda col, v: col.like(pattern.format(escape_like(v)), escape="\\")


#: the SQLite function `registry.storage` gives every SQLite connection (Python's `str.lower`):
#: SQLite's own lower() folds ASCII letters only
FOLD_SQLITE = "registry_lower"


class Fold(FunctionElement[str]):
    """Lower-case text for a case-insensitive match: lower() on PostgreSQL (every letter, by
    the database's locale), `FOLD_SQLITE` on SQLite (every letter, as Python does)."""

    type = sa.String()
    name = "fold"
    inherit_cache = True


@compiles(Fold)
def _fold(element: Fold, compiler: Any, **kw: Any) -> str:
    return f"lower({compiler.process(element.clauses, **kw)})"


@compiles(Fold, "sqlite")
def _fold_sqlite(element: Fold, compiler: Any, **kw: Any) -> str:
    return f"{FOLD_SQLITE}({compiler.process(element.clauses, **kw)})"


def _ilike(pattern: str) -> Callable[[Any, Any], sa.ColumnElement[bool]]:
    """A case-insensitive LIKE test: both sides folded (`Fold`), the value escaped."""
    return lambda col, v: Fold(col).like(Fold(pattern.format(escape_like(v))), escape="\\")


#: the SQL of each filter operator on a scalar column (or JSON path): (column, value) -> test
SQL_OF: dict[str, Callable[[Any, Any], sa.ColumnElement[bool]]] = {
    "eq": lambda col, v: col == v,
    "neq": lambda col, v: sa.or_(col != v, col.is_(None)),
    "gt": lambda col, v: col > v,
    "gte": lambda col, v: col >= v,
    "lt": lambda col, v: col < v,
    "lte": lambda col, v: col <= v,
    "between": lambda col, v: col.between(v[0], v[1]),
    "in": lambda col, v: col.in_(v),
    "contains": _like("%{}%"),
    "icontains": _ilike("%{}%"),
    "notContains": lambda col, v: sa.or_(sa.not_(_like("%{}%")(col, v)), col.is_(None)),
    "startsWith": _like("{}%"),
    "endsWith": _like("%{}"),
}


class SqlBuilder:
    """Builds the SELECT for a `Search` against one table, for one dialect."""

    def __init__(
        self, entity: EntitySchema, table: sa.Table, dialect: str, codec: Codec | None = None
    ):
        self.entity = entity
        self.table = table
        self.dialect = dialect
        self.codec = codec

    def column(self, name: str) -> sa.ColumnElement[Any]:
        return self.table.c[SORTABLE_SYSTEM.get(name, name)]

    def _json_path(self, path: str, kind: str) -> sa.ColumnElement[Any]:
        top, *rest = path.split(".")
        expr = self.table.c[top][tuple(rest)]
        if kind == "integer":
            if self.dialect == "postgresql":
                # a JSON "integer" may be stored as 1.0 or 1e+20 (JSON Schema takes both) and
                # beyond INTEGER: NUMERIC reads every JSON number
                return sa.cast(expr.as_string(), sa.Numeric)
            return expr.as_integer()
        if kind == "number":
            return expr.as_float()
        if kind == "boolean":
            return expr.as_boolean()
        return expr.as_string()

    def _array_elements(self, col: sa.ColumnElement[Any], key_path: list[str], kind: str):
        """A correlated subquery over the elements of a JSON array column (or a path in it)."""
        if self.dialect == "postgresql":
            if key_path:
                fn = sa.func.jsonb_array_elements(col).table_valued("value").alias("el")
                path = sa.cast(sa.literal("{" + ",".join(key_path) + "}"), ARRAY(sa.Text))
                value: Any = fn.c.value.op("#>>")(path)
            else:
                fn = sa.func.jsonb_array_elements_text(col).table_valued("value").alias("el")
                value = fn.c.value
            if kind == "integer":  # NUMERIC: "1.0" and "1e+20" are JSON integers too
                value = sa.cast(value, sa.Numeric)
            elif kind == "number":
                value = sa.cast(value, sa.Float)
            elif kind == "boolean":
                value = sa.cast(value, sa.Boolean)
            return fn, value
        fn = sa.func.json_each(col).table_valued("value", "type").alias("el")
        value = fn.c.value
        if key_path:
            value = sa.func.json_extract(fn.c.value, "$." + ".".join(f'"{k}"' for k in key_path))
        return fn, value

    def _any_element(self, path: str, kind: str, predicate: Any) -> sa.ColumnElement[bool]:
        parts = path.split(".")
        # the first array on the path
        props = self.entity.json_schema.get("properties", {})
        node: Any = {"properties": props}
        for i, part in enumerate(parts):
            node = (node.get("properties") or {}).get(part, {})
            if node.get("type") == "array":
                array_path, key_path = parts[: i + 1], parts[i + 1 :]
                break
        else:  # pragma: no cover - callers only come here for array paths
            raise AssertionError(path)
        col: Any = self.table.c[array_path[0]]
        if len(array_path) > 1:
            col = col[tuple(array_path[1:])]
        fn, value = self._array_elements(col, key_path, kind)
        return sa.select(sa.literal(1)).select_from(fn).where(predicate(value)).exists()

    def condition(self, flt: Filter) -> sa.ColumnElement[bool]:
        path = flt.path
        if path in self.entity.private:
            return self._blind_condition(flt)
        top = path.split(".")[0]
        f = self.entity.fields.get(top)
        nested = "." in path
        node = walk_path(self.entity.json_schema.get("properties", {}), path) if f else None
        kind = (
            field_kind(node)[0]
            if node is not None
            else ("string" if path == "id" else "integer" if path == "_version" else "datetime")
        )
        is_array = f is not None and (
            (not nested and f.schema.get("type") == "array")
            or (nested and _crosses_array(self.entity.json_schema.get("properties", {}), path))
        )
        op, v = flt.op, flt.value
        if is_array:
            if op == "notContains":
                return sa.not_(self._any_element(path, kind, lambda x: x == v))
            if op == "in":
                return self._any_element(path, kind, lambda x: x.in_(v))
            return self._any_element(path, kind, lambda x: x == v)
        col = self._json_path(path, kind) if nested else self.column(path)
        return SQL_OF[op](col, v)

    def _blind_condition(self, flt: Filter) -> sa.ColumnElement[bool]:
        codec = self.codec
        if codec is None or flt.path not in codec.blind:  # the parser lets none of these through
            raise _problem(
                f"/filters/{flt.path}", f"field {flt.path!r} cannot be searched", "field"
            )
        col = self.table.c[codec.blind[flt.path]]
        if flt.op == "in":
            return col.in_([codec.blind_value(flt.path, v) for v in flt.value])
        return col == codec.blind_value(flt.path, flt.value)

    def where(self, search: Search, scope: Scope | None = None) -> list[sa.ColumnElement[bool]]:
        conds: list[sa.ColumnElement[bool]] = [self.table.c["_deleted_at"].is_(None)]
        conds.extend(self.condition(f) for f in search.filters)
        if scope is not None:
            conds.append(self.scope_condition(scope))
        return conds

    def scope_condition(self, scope: Scope) -> sa.ColumnElement[bool]:
        """The predicate of a caller's scope (so paging and counts see only their rows)."""
        conds = [self.condition(f) for f in scope.filters()]
        if not conds:
            return sa.false()
        return conds[0] if len(conds) == 1 else sa.or_(*conds)

    def order(self, search: Search) -> list[tuple[str, bool]]:
        """The sort keys, `id` last: as given, or in the direction of the last key, so that a
        one-key sort is one index's order read forwards or backwards (`(_created_at, id)`)."""
        keys = [k for k in search.sort if k[0] != "id"]
        tie = next((k for k in search.sort if k[0] == "id"), ("id", keys[-1][1] if keys else False))
        return [*keys, tie]

    def select(self, search: Search, scope: Scope | None = None) -> sa.Select[Any]:
        keys = self.order(search)
        stmt = sa.select(self.table).where(*self.where(search, scope))
        if search.cursor:
            values = decode_cursor(search.cursor, keys, self)
            stmt = stmt.where(self._after(keys, values))
        order_by = []
        for name, desc in keys:
            col = self.column(name)
            term = col.desc() if desc else col.asc()
            # NULLS LAST only where there can be NULLs: on a NOT NULL column (id and the other
            # system columns) it would keep PostgreSQL from reading a descending order off an
            # index (its backward scans put NULLs first)
            order_by.append(term.nulls_last() if _nullable(col) else term)
        return stmt.order_by(*order_by).limit(search.limit + 1)

    def count(self, search: Search, scope: Scope | None = None) -> sa.Select[Any]:
        return (
            sa.select(sa.func.count()).select_from(self.table).where(*self.where(search, scope))
        )

    def _after(self, keys: list[tuple[str, bool]], values: list[Any]) -> sa.ColumnElement[bool]:
        """Rows strictly after `values` in the order `keys` (NULLs last in either direction).

        Keys on NOT NULL columns all in one direction (the default order, `_createdAt`, ...)
        compare as one row value, `(a, id) > (:a, :id)`: an index range, so that a deep page
        costs what the first does."""
        cols = [self.column(name) for name, _ in keys]
        if (
            len({desc for _, desc in keys}) == 1
            and None not in values
            and not any(_nullable(c) for c in cols)
        ):
            typed = [sa.literal(v, type_=c.type) for c, v in zip(cols, values, strict=True)]
            row: Any = cols[0] if len(cols) == 1 else sa.tuple_(*cols)
            after: Any = typed[0] if len(cols) == 1 else sa.tuple_(*typed)
            return row < after if keys[0][1] else row > after
        ors = []
        for i, (name, desc) in enumerate(keys):
            col = self.column(name)
            eqs = [
                self.column(n).is_(None) if values[j] is None else self.column(n) == values[j]
                for j, (n, _) in enumerate(keys[:i])
            ]
            v = values[i]
            if v is None:
                continue  # nothing sorts after NULL but other NULLs (handled by later keys)
            strict = (col < v) if desc else (col > v)
            ors.append(sa.and_(*eqs, sa.or_(strict, col.is_(None)) if _nullable(col) else strict))
        return sa.or_(*ors) if ors else sa.false()


def _nullable(col: sa.ColumnElement[Any]) -> bool:
    """Whether a column may hold NULL (not the primary key, not declared NOT NULL)."""
    return bool(getattr(col, "nullable", True)) and not getattr(col, "primary_key", False)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_datetime(value)
    if isinstance(value, date):
        return value.isoformat()
    return value


def _sort_signature(keys: list[tuple[str, bool]]) -> str:
    return hashlib.sha1(repr(keys).encode()).hexdigest()[:8]


def _cursor_value_ok(kind: str, value: Any) -> bool:
    """Whether a cursor's value can be the sort value of a column of `kind`."""
    if kind == "string":
        return isinstance(value, str) and "\x00" not in value
    if kind == "boolean":
        return isinstance(value, bool)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if kind == "integer":
        return isinstance(value, int) and fits_int64(value)
    return kind == "number" and math.isfinite(value)


def encode_cursor(keys: list[tuple[str, bool]], row: RowLike, builder: SqlBuilder) -> str:
    values = [_plain(row[builder.column(name).key]) for name, _ in keys]
    raw = orjson.dumps({"s": _sort_signature(keys), "v": values})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, keys: list[tuple[str, bool]], builder: SqlBuilder) -> list[Any]:
    bad = _problem(
        "/cursor", "this cursor is not valid for this search (start again without it)", "cursor"
    )
    try:
        data = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if data["s"] != _sort_signature(keys) or len(data["v"]) != len(keys):
            raise bad
        out: list[Any] = []
        for (name, _), value in zip(keys, data["v"], strict=True):
            if value is None:
                out.append(None)
                continue
            kind = (
                "string"
                if name == "id"
                else "integer"
                if name == "_version"
                else "datetime"
                if name in SORTABLE_SYSTEM
                else builder.entity.fields[name].kind
            )
            if kind == "date":
                value = date.fromisoformat(value)
            elif kind == "datetime":
                value = parse_datetime(value)
            elif not _cursor_value_ok(kind, value):  # a cursor is client input: check it
                raise bad
            elif kind == "number":
                value = float(value)  # the column's type (an int beyond 64 bits binds nowhere)
            out.append(value)
        return out
    except BadRequest:
        raise
    except Exception:
        raise bad from None
