"""A compiled fast path for flat CSV rows: cells -> checked database values, no record dict.

For a header layout whose fields use only simple keywords (one scalar type, length, pattern,
format, enum, const, numeric bounds, `required`; objects one level deep; lists of scalars in one
cell), `compile_row_function` generates one Python function that converts the cells, checks
them with the meaning JSON Schema 2020-12 gives those keywords, and returns the row's column
values in table order. It answers None when the row is not valid, or is of a shape it leaves to
the general path (a list written as JSON, a row of the wrong length); the caller then builds the
record and runs `RecordValidator` for the verdict and the error detail. So a row is accepted by
the import exactly when `RecordValidator` accepts its record (tests/registry/test_imports.py
checks this with Hypothesis), and the speed-up is for the rows that are valid.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from open_registry.core.imports.rows import (
    _MISSING,
    SCALAR_CONVERTERS,
    CellError,
    ColumnPlan,
    RowLayout,
    _single_type,
    chain,
)
from open_registry.generators.formats import FORMATS
from open_registry.generators.validators import ecma_pattern

_ANNOTATIONS = frozenset(
    {
        "title",
        "description",
        "examples",
        "default",
        "$comment",
        "readOnly",
        "writeOnly",
        "deprecated",
    }
)
_SCALAR_KEYS = _ANNOTATIONS | {
    "type",
    "enum",
    "const",
    "minLength",
    "maxLength",
    "pattern",
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
}
_ARRAY_KEYS = _ANNOTATIONS | {"type", "items", "minItems", "maxItems", "uniqueItems"}
_OBJECT_KEYS = _ANNOTATIONS | {"type", "properties", "required", "additionalProperties"}
_ROOT_KEYS = _OBJECT_KEYS | {"$schema", "$id", "$defs", "definitions"}
_PY_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}


class Unsupported(Exception):
    """The layout or schema is outside what the fast path handles; use the general path."""


def _of_type(value: Any, t: str) -> bool:
    if t != "boolean" and isinstance(value, bool):
        return False
    return isinstance(value, _PY_TYPES[t])


def _keys_ok(schema: Mapping[str, Any], allowed: frozenset[str] | set[str]) -> bool:
    return all(k in allowed or k.startswith("x-") for k in schema)


class _Gen:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.ns: dict[str, Any] = {"_M": _MISSING, "CellError": CellError}
        self.n = 0

    def name(self, prefix: str, value: Any) -> str:
        self.n += 1
        key = f"{prefix}{self.n}"
        self.ns[key] = value
        return key

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)

    def checks(self, schema: Mapping[str, Any], t: str, var: str) -> list[str]:  # noqa: C901
        """Boolean expressions (all must hold) for a value of JSON type `t` in `var`."""
        if not _keys_ok(schema, _SCALAR_KEYS):
            raise Unsupported("keywords")
        out: list[str] = []
        if "const" in schema:
            if not _of_type(schema["const"], t):
                raise Unsupported("const type")
            out.append(f"{var} == {self.name('CONST', schema['const'])}")
        if "enum" in schema:
            members = schema["enum"]
            if not isinstance(members, list) or not all(_of_type(m, t) for m in members):
                raise Unsupported("enum members")
            out.append(f"{var} in {self.name('ENUM', frozenset(members))}")
        if t == "string":
            if "minLength" in schema:
                out.append(f"len({var}) >= {int(schema['minLength'])}")
            if "maxLength" in schema:
                out.append(f"len({var}) <= {int(schema['maxLength'])}")
            if "pattern" in schema:
                rx = re.compile(ecma_pattern(schema["pattern"]))
                out.append(f"{self.name('PAT', rx.search)}({var}) is not None")
            if "format" in schema:
                fmt = schema["format"]
                if fmt not in FORMATS:
                    raise Unsupported("format")  # an unknown format only annotates
                out.append(f"{self.name('FMT', FORMATS[fmt])}({var})")
        else:
            if any(k in schema for k in ("minLength", "maxLength", "pattern", "format")):
                raise Unsupported("string keywords on a non-string")
        if t in ("integer", "number"):
            for key, op in (
                ("minimum", ">="),
                ("maximum", "<="),
                ("exclusiveMinimum", ">"),
                ("exclusiveMaximum", "<"),
            ):
                if key in schema:
                    bound = schema[key]
                    if not _of_type(bound, "number"):
                        raise Unsupported("bound")
                    out.append(f"{var} {op} {self.name('B', bound)}")
        elif any(
            k in schema for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
        ):
            raise Unsupported("numeric keywords on a non-number")
        return out

    def fixed(self, value: Any, t: str) -> None:
        """A constant, default or mapped value must already be of the field's type."""
        if not _of_type(value, t):
            raise Unsupported("value type")


def _scalar_type(schema: Mapping[str, Any]) -> str:
    t = _single_type(schema)
    if t not in _PY_TYPES:
        raise Unsupported("not a scalar")
    return t


def _value_code(
    g: _Gen, col: ColumnPlan, schema: Mapping[str, Any], var: str, indent: int, required: bool
) -> None:
    """Code that leaves the checked JSON value of `col` in `var` (None when absent)."""
    if col.kind == "const":
        t = _single_type(schema)
        if t == "array":
            raise Unsupported("list constant")
        t = _scalar_type(schema)
        g.fixed(col.constant, t)
        g.emit(indent, f"{var} = {g.name('K', col.constant)}")
        conds = g.checks(schema, t, var)
        if conds:
            g.emit(indent, f"if not ({' and '.join(conds)}): return None")
        return
    cell = f"row[{col.index}]"
    if col.kind == "split":
        _split_code(g, col, schema, var, indent, required)
        return
    t = _scalar_type(schema)
    if col.kind != t:
        raise Unsupported("kind")
    pre = chain(col.steps)
    g.emit(indent, f"t = {cell}")
    g.emit(indent, "if t:")
    body = indent + 1
    if pre is not None:
        g.emit(body, f"t = {g.name('PRE', pre)}(t)")
    conv = None if t == "string" else g.name("CONV", SCALAR_CONVERTERS[t])
    if col.enum_map is not None:
        for v in col.enum_map.values():
            g.fixed(v, t)
        emap = g.name("EMAP", dict(col.enum_map))
        if conv is None:
            g.emit(body, f"{var} = {emap}.get(t, t)")
        else:
            g.emit(body, f"{var} = {emap}.get(t, _M)")
            g.emit(body, f"if {var} is _M: {var} = {conv}(t)")
    else:
        g.emit(body, f"{var} = {conv}(t)" if conv else f"{var} = t")
    conds = g.checks(schema, t, var)
    if conds:
        g.emit(body, f"if not ({' and '.join(conds)}): return None")
    g.emit(indent, "else:")
    if col.default is not _MISSING:
        g.fixed(col.default, t)
        g.emit(body, f"{var} = {g.name('D', col.default)}")
        if conds:
            g.emit(body, f"if not ({' and '.join(conds)}): return None")
    elif required:
        g.emit(body, "return None")
    else:
        g.emit(body, f"{var} = None")


def _split_code(
    g: _Gen, col: ColumnPlan, schema: Mapping[str, Any], var: str, indent: int, required: bool
) -> None:
    if _single_type(schema) != "array" or not _keys_ok(schema, _ARRAY_KEYS):
        raise Unsupported("array keywords")
    items = schema.get("items")
    if not isinstance(items, Mapping):
        raise Unsupported("items")
    it = _scalar_type(items)
    if col.item_kind != it or col.default is not _MISSING:
        raise Unsupported("split kind")
    body = indent + 1
    g.emit(indent, f"t = row[{col.index}]")
    g.emit(indent, "if t:")
    g.emit(body, "if t[0] == '[': return None")  # a list written as JSON: general path
    g.emit(body, f"{var} = t.split({g.name('SEP', col.sep)})")
    pre = chain(col.steps)
    if pre is not None:
        g.emit(body, f"{var} = list(map({g.name('PRE', pre)}, {var}))")
    conv = None if it == "string" else g.name("CONV", SCALAR_CONVERTERS[it])
    if col.enum_map is not None:
        for v in col.enum_map.values():
            g.fixed(v, it)
        emap = g.name("EMAP", dict(col.enum_map))
        if conv is None:
            g.emit(body, f"{var} = [{emap}.get(x, x) for x in {var}]")
        else:
            g.emit(body, f"{var} = [{emap}[x] if x in {emap} else {conv}(x) for x in {var}]")
    elif conv is not None:
        g.emit(body, f"{var} = list(map({conv}, {var}))")
    conds = []
    if "minItems" in schema:
        conds.append(f"len({var}) >= {int(schema['minItems'])}")
    if "maxItems" in schema:
        conds.append(f"len({var}) <= {int(schema['maxItems'])}")
    if schema.get("uniqueItems") is True:
        conds.append(f"len(set({var})) == len({var})")
    elif schema.get("uniqueItems") not in (None, False):
        raise Unsupported("uniqueItems")
    item_conds = g.checks(items, it, "x")
    if item_conds:
        fn = g.name("ITEM", None)
        g.ns[fn] = eval(f"lambda x: {' and '.join(item_conds)}", dict(g.ns))
        conds.append(f"all(map({fn}, {var}))")
    if conds:
        g.emit(body, f"if not ({' and '.join(conds)}): return None")
    g.emit(indent, "else:")
    g.emit(body, "return None" if required else f"{var} = None")


def compile_row_function(
    layout: RowLayout,
    schema: Mapping[str, Any],
    fields: Sequence[tuple[str, str]],
    column_value: Mapping[str, Callable[[Any], Any]],
) -> Callable[[list[str]], tuple[Any, ...] | None]:
    """The fast row function for `layout`, or raise `Unsupported`.

    `fields` are (name, column kind) in table order; `column_value[kind]` turns a JSON value of
    that kind into what the column stores (as the general path does).
    """
    if _single_type(schema) != "object" or not _keys_ok(schema, _ROOT_KEYS):
        raise Unsupported("root keywords")
    if layout.nested_lists or layout.id_index >= 0:
        raise Unsupported("list items or ids")
    props: Mapping[str, Any] = schema.get("properties") or {}
    required = set(schema.get("required") or ())
    if not required <= set(props):
        raise Unsupported("required field not declared")
    by_field: dict[str, list[ColumnPlan]] = {}
    for col in layout.columns:
        by_field.setdefault(str(col.path[0]), []).append(col)
    g = _Gen()
    g.emit(0, "def fast(row):")
    g.emit(1, f"if len(row) != {len(layout.headers)}: return None")
    g.emit(1, "try:")
    out: list[str] = []
    for name, kind in fields:
        cols = by_field.get(name)
        var = f"v_{len(out)}"
        if not cols:
            if name in required:
                raise Unsupported("a required field has no column")
            out.append("None")
            continue
        fschema = props[name]
        if len(cols) == 1 and len(cols[0].path) == 1:
            _value_code(g, cols[0], fschema, var, 2, name in required)
        else:
            _object_code(g, cols, fschema, var, 2, name in required)
        conv = column_value.get(kind)
        if conv is None:
            out.append(var)
        else:
            out.append(f"(None if {var} is None else {g.name('COL', conv)}({var}))")
    g.emit(2, f"return ({', '.join(out)},)")
    g.emit(1, "except CellError:")
    g.emit(2, "return None")
    code = "\n".join(g.lines)
    exec(compile(code, "<import fast path>", "exec"), g.ns)
    fast = g.ns["fast"]
    fast.source = code  # for debugging and tests
    return fast


def _object_code(
    g: _Gen,
    cols: list[ColumnPlan],
    schema: Mapping[str, Any],
    var: str,
    indent: int,
    required: bool,
) -> None:
    if _single_type(schema) != "object" or not _keys_ok(schema, _OBJECT_KEYS):
        raise Unsupported("object keywords")
    props = schema.get("properties") or {}
    child_required = set(schema.get("required") or ())
    if not child_required <= set(props):
        raise Unsupported("required child not declared")
    obj = f"o_{var}"
    g.emit(indent, f"{obj} = {{}}")
    filled: set[str] = set()
    for col in cols:
        if len(col.path) != 2 or isinstance(col.path[1], int):
            raise Unsupported("deeper nesting")
        child = str(col.path[1])
        filled.add(child)
        cvar = f"{var}_{len(filled)}"
        _value_code(g, col, props[child], cvar, indent, False)
        g.emit(indent, f"if {cvar} is not None: {obj}[{child!r}] = {cvar}")
    g.emit(indent, f"if {obj}:")
    missing = child_required - filled
    if missing:
        g.emit(indent + 1, "return None")  # a required child no column fills
    else:
        for child in sorted(child_required):
            g.emit(indent + 1, f"if {child!r} not in {obj}: return None")
    g.emit(indent + 1, f"{var} = {obj}")
    g.emit(indent, "else:")
    g.emit(indent + 1, "return None" if required else f"{var} = None")


def json_text(value: Any) -> str:
    """JSON text for a JSON column (compact, key order kept)."""
    return orjson.dumps(value).decode()
