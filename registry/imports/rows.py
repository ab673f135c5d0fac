"""Rows of an import file to records: readers, the mapping file, header conventions, cell types.

Pure functions and small classes with no database and no app state, so the import engine can run
them in a worker process. CSV headers name fields by dotted path (`address.district`), list items
by index (`programs.0.programId`); a list of scalars sits in one cell split on `|`; an empty cell
is an absent field. Cells are converted by the JSON Schema type of the field they land in.
See docs/import-export.md.
"""

from __future__ import annotations

import csv
import enum
import gzip
import io
import itertools
import json
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import orjson

from open_registry.core.paths import value_at
from open_registry.generators.errors import pointer as json_pointer
from open_registry.generators.schema import SYSTEM_FIELDS, schema_types

#: Separator of list items in one CSV cell, unless the mapping says otherwise.
LIST_SEPARATOR = "|"
FORMATS = ("csv", "jsonl")
#: The longest row (a CSV record, which may span lines, or a JSON line) read, in bytes (the
#: setting `import_max_line_bytes`): a longer one is an error of that row, read past without
#: being held in memory.
MAX_LINE_BYTES = 1_048_576
#: A cell starting with `=`, `+`, `-`, `@`, tab or CR is a formula to a spreadsheet (OWASP
#: "CSV injection"); with quotes before it, it is one that `neutralise_cell` quoted.
_FORMULA = re.compile(r"'*[=+\-@\t\r]")
_QUOTED_FORMULA = re.compile(r"'+[=+\-@\t\r]")


def neutralise_cell(text: str) -> str:
    """A CSV cell a spreadsheet shows as text: a quote `'` before a cell that starts with a
    formula trigger (`=`, `+`, `-`, `@`, tab, CR), also when quotes already come first (`'=x`
    becomes `''=x`), so that `restore_cell` gives back exactly `text`."""
    return "'" + text if _FORMULA.match(text) else text


def restore_cell(text: str) -> str:
    """The inverse of `neutralise_cell`, which the CSV import applies to every data cell: one
    quote less on a cell of quotes followed by a formula trigger."""
    return text[1:] if _QUOTED_FORMULA.match(text) else text


class _Missing(enum.Enum):
    """No default / no constant (an enum member, so it survives pickling to the worker)."""

    MISSING = 0


_MISSING = _Missing.MISSING


class ImportUsageError(ValueError):
    """The file, its header or the mapping cannot be used at all (nothing is imported)."""


class CellError(ValueError):
    """A cell that cannot be converted to its field's type."""


# -- the mapping file ------------------------------------------------------------------------
MAPPING_KEYS = (
    "entity",
    "format",
    "delimiter",
    "columns",
    "ignore",
    "constants",
    "defaults",
    "split",
    "enums",
    "transforms",
)


@dataclass(frozen=True)
class ImportMapping:
    """How a source file's columns become fields (all keys optional; see docs/import-export.md).

    `columns` renames source headers to field paths; the other maps are keyed by field path.
    """

    entity: str | None = None
    format: str | None = None
    delimiter: str = ","
    columns: Mapping[str, str] = field(default_factory=dict)
    ignore: frozenset[str] = frozenset()
    constants: Mapping[str, Any] = field(default_factory=dict)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    split: Mapping[str, str] = field(default_factory=dict)
    enums: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    transforms: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any, source: str = "mapping") -> ImportMapping:  # noqa: C901
        if not isinstance(data, dict):
            raise ImportUsageError(f"{source}: a mapping must be an object/table")
        unknown = sorted(set(data) - set(MAPPING_KEYS))
        if unknown:
            raise ImportUsageError(
                f"{source}: unknown key(s) {', '.join(unknown)}; known: {', '.join(MAPPING_KEYS)}"
            )

        def table(key: str, value_type: type | tuple[type, ...] | None = None) -> dict[str, Any]:
            value = data.get(key, {})
            if not isinstance(value, dict):
                raise ImportUsageError(f"{source}: {key} must be an object/table")
            if value_type is not None:
                for k, v in value.items():
                    if not isinstance(v, value_type):
                        raise ImportUsageError(f"{source}: {key}.{k} has the wrong type")
            return value

        fmt = data.get("format")
        if fmt is not None and fmt not in FORMATS:
            raise ImportUsageError(f"{source}: format must be one of {', '.join(FORMATS)}")
        delimiter = data.get("delimiter", ",")
        if not isinstance(delimiter, str) or len(delimiter) != 1:
            raise ImportUsageError(f"{source}: delimiter must be one character")
        ignore = data.get("ignore", [])
        if not isinstance(ignore, list) or not all(isinstance(i, str) for i in ignore):
            raise ImportUsageError(f"{source}: ignore must be a list of column names")
        transforms: dict[str, tuple[str, ...]] = {}
        for path, steps in table("transforms").items():
            steps = [steps] if isinstance(steps, str) else steps
            if not isinstance(steps, list) or not all(isinstance(s, str) for s in steps):
                raise ImportUsageError(f"{source}: transforms.{path} must be a list of names")
            for step in steps:
                if transform_step(step) is None:
                    raise ImportUsageError(
                        f"{source}: transforms.{path}: unknown transform {step!r}; known: "
                        + ", ".join(TRANSFORM_NAMES)
                    )
            transforms[path] = tuple(steps)
        for path, sep in table("split", str).items():
            if not sep:
                raise ImportUsageError(f"{source}: split.{path} must not be empty")
        entity = data.get("entity")
        if entity is not None and not isinstance(entity, str):
            raise ImportUsageError(f"{source}: entity must be a string")
        return cls(
            entity=entity,
            format=fmt,
            delimiter=delimiter,
            columns=table("columns", str),
            ignore=frozenset(ignore),
            constants=table("constants"),
            defaults=table("defaults"),
            split=table("split", str),
            enums=table("enums", dict),
            transforms=transforms,
        )


def load_mapping(path: str | Path) -> ImportMapping:
    """A mapping file, JSON (`.json`) or TOML (anything else, e.g. `.toml`)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ImportUsageError(f"cannot read the mapping {p}: {exc.strerror}") from None
    try:
        data = json.loads(raw) if p.suffix.lower() == ".json" else tomllib.loads(raw.decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ImportUsageError(f"{p}: not valid {p.suffix.lstrip('.') or 'TOML'}: {exc}") from None
    return ImportMapping.from_dict(data, str(p))


# -- transforms of cell text -----------------------------------------------------------------
_CONTROL = dict.fromkeys([*range(0, 32), *range(127, 160)])
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_HOUR = re.compile(r"^(\d{1,2})(?:[:.](\d{2}))?$")


def _hour(text: str) -> str:
    m = _HOUR.match(text)
    if not m:
        return text
    return f"{int(m.group(1)):02d}:{m.group(2) or '00'}"


def _url(text: str) -> str:
    return text if not text or _SCHEME.match(text) else "https://" + text


def _date(fmt: str) -> Callable[[str], str]:
    def convert(text: str) -> str:
        try:
            return datetime.strptime(text, fmt).date().isoformat()
        except ValueError:
            return text  # left as it is: validation then names the field

    return convert


TRANSFORM_NAMES = (
    "strip",
    "lower",
    "upper",
    "clean",
    "hour",
    "url",
    "date:FORMAT",
    "prefix:TEXT",
    "suffix:TEXT",
)
_SIMPLE_TRANSFORMS: dict[str, Callable[[str], str]] = {
    "strip": str.strip,
    "lower": str.lower,
    "upper": str.upper,
    "clean": lambda t: t.translate(_CONTROL).strip(),
    "hour": _hour,
    "url": _url,
}


def transform_step(step: str) -> Callable[[str], str] | None:
    """The function of one transform name (`strip`, `date:%d/%m/%Y`, ...), or None."""
    if step in _SIMPLE_TRANSFORMS:
        return _SIMPLE_TRANSFORMS[step]
    name, sep, arg = step.partition(":")
    if not sep:
        return None
    if name == "date" and arg:
        return _date(arg)
    if name == "prefix":
        return lambda t: arg + t if t else t
    if name == "suffix":
        return lambda t: t + arg if t else t
    return None


def chain(steps: tuple[str, ...]) -> Callable[[str], str] | None:
    funcs = [transform_step(s) for s in steps]
    if not funcs:
        return None
    if len(funcs) == 1:
        return funcs[0]

    def run(text: str) -> str:
        for f in funcs:
            text = f(text)  # type: ignore[misc]
        return text

    return run


# -- paths and schema walking ----------------------------------------------------------------
Part = str | int


def parse_path(path: str) -> tuple[Part, ...]:
    """`programs.0.programId` -> ("programs", 0, "programId"); field names never start with a
    digit, so a number is a list index."""
    parts: list[Part] = []
    for p in path.split("."):
        if not p:
            raise ImportUsageError(f"{path!r} is not a field path")
        parts.append(int(p) if p.isdigit() else p)
    return tuple(parts)


def path_pointer(parts: tuple[Part, ...]) -> str:
    return json_pointer(*parts)


def _single_type(schema: Mapping[str, Any]) -> str | None:
    """The one JSON type a value of `schema` has, or None (several, unions, unknown)."""
    if any(k in schema for k in ("anyOf", "oneOf", "allOf")):
        return None
    types, _ = schema_types(schema)
    return next(iter(types)) if len(types) == 1 else None


SCALAR_TYPES = ("string", "integer", "number", "boolean")


def value_kind(schema: Mapping[str, Any]) -> tuple[str, str | None]:
    """How a cell for this schema is read: (kind, item kind for `split`).

    kind: string | integer | number | boolean (one typed value), split (a list of scalars in one
    cell), json (an object or list written as JSON), any (JSON if it parses, else the text).
    """
    t = _single_type(schema)
    if t in SCALAR_TYPES:
        return t, None
    if t == "array":
        items = schema.get("items")
        if isinstance(items, dict):
            it = _single_type(items)
            if it in SCALAR_TYPES:
                return "split", it
        return "json", None
    if t == "object":
        return "json", None
    return "any", None


def walk_schema(root: Mapping[str, Any], parts: tuple[Part, ...]) -> Mapping[str, Any] | None:
    """The subschema at a path of names and list indexes, or None when the path is not declared."""
    node: Any = root
    for part in parts:
        if not isinstance(node, Mapping):
            return None
        if isinstance(part, int):
            items = node.get("items")
            if _single_type(node) != "array" or not isinstance(items, Mapping):
                return None
            node = items
        else:
            props = node.get("properties")
            if not isinstance(props, Mapping) or part not in props:
                return None
            node = props[part]
    return node if isinstance(node, Mapping) else None


# -- cell conversion -------------------------------------------------------------------------
_INT = re.compile(r"^-?(?:0|[1-9][0-9]*)$")
_NUMBER = re.compile(r"^-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?$")
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


def to_integer(text: str) -> int:
    if _INT.match(text) and text[-1:] != "\n":
        return int(text)
    raise CellError(f"{text!r} is not an integer")


def to_number(text: str) -> int | float:
    if _NUMBER.match(text) and text[-1:] != "\n":
        if _INT.match(text):
            return int(text)
        value = float(text)
        if value in (float("inf"), float("-inf")):
            raise CellError(f"{text!r} is out of range")
        return value
    raise CellError(f"{text!r} is not a number")


def to_boolean(text: str) -> bool:
    low = text.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise CellError(f"{text!r} is not a boolean (true or false)")


def to_json(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        raise CellError(f"{text[:40]!r} is not valid JSON") from None


def to_any(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


SCALAR_CONVERTERS: dict[str, Callable[[str], Any]] = {
    "string": str,
    "integer": to_integer,
    "number": to_number,
    "boolean": to_boolean,
    "json": to_json,
    "any": to_any,
}


@dataclass(frozen=True)
class ColumnPlan:
    """Where one source column (or a constant) goes and how its cell becomes a value."""

    header: str  # the source header ("" for a constant)
    index: int  # position in the source row (-1 for a constant)
    path: tuple[Part, ...]
    kind: str  # string | integer | number | boolean | split | json | any | const
    item_kind: str | None = None
    sep: str = LIST_SEPARATOR
    steps: tuple[str, ...] = ()
    enum_map: Mapping[str, Any] | None = None
    default: Any = _MISSING
    constant: Any = _MISSING

    @property
    def pointer(self) -> str:
        return path_pointer(self.path)

    def converter(self) -> Callable[[str], Any]:
        """cell text (not empty) -> value; raises CellError."""
        pre = chain(self.steps)
        emap = self.enum_map
        if self.kind == "split":
            item = SCALAR_CONVERTERS[self.item_kind or "string"]
            sep = self.sep

            def convert_item(text: str) -> Any:
                if pre is not None:
                    text = pre(text)
                if emap is not None and text in emap:
                    return emap[text]
                return item(text)

            def split(text: str) -> Any:
                if text[:1] == "[":
                    try:
                        value = orjson.loads(text)
                    except orjson.JSONDecodeError:
                        value = None
                    if isinstance(value, list):
                        return value
                return [convert_item(t) for t in text.split(sep)]

            return split
        scalar = SCALAR_CONVERTERS[self.kind]
        if pre is None and emap is None:
            return scalar

        def convert(text: str) -> Any:
            if pre is not None:
                text = pre(text)
            if emap is not None and text in emap:
                return emap[text]
            return scalar(text)

        return convert


@dataclass(frozen=True)
class RowLayout:
    """Every column of a source file resolved against an entity's schema (picklable)."""

    headers: tuple[str, ...]
    columns: tuple[ColumnPlan, ...]  # data columns and constants, in source order
    id_index: int = -1  # the `id` column, used with keep_ids
    ignored: tuple[str, ...] = ()
    nested_lists: bool = False  # some path has a list index


def plan_columns(  # noqa: C901
    headers: list[str],
    schema: Mapping[str, Any],
    mapping: ImportMapping,
    *,
    keep_ids: bool,
    entity: str,
) -> RowLayout:
    """Resolve the source headers (CSV) against the schema; every problem raises at once."""
    problems: list[str] = []
    columns: list[ColumnPlan] = []
    ignored: list[str] = []
    targets: dict[tuple[Part, ...], str] = {}
    id_index = -1
    unused_renames = set(mapping.columns) - set(headers)
    if unused_renames:
        problems.append(
            "the mapping renames column(s) the file does not have: "
            + ", ".join(sorted(unused_renames))
        )
    for i, header in enumerate(headers):
        name = header.strip()
        if header in mapping.ignore or name in mapping.ignore:
            ignored.append(header)
            continue
        target = mapping.columns.get(header, mapping.columns.get(name, name))
        if target == "id":
            if keep_ids:
                id_index = i
            else:
                ignored.append(header)
            continue
        if target in SYSTEM_FIELDS:
            ignored.append(header)  # system fields other than id are set by the registry
            continue
        try:
            parts = parse_path(target)
        except ImportUsageError as exc:
            problems.append(f"column {header!r}: {exc}")
            continue
        plan = _plan(header, i, parts, target, schema, mapping, entity, problems)
        if plan is None:
            continue
        if parts in targets:
            problems.append(f"columns {targets[parts]!r} and {header!r} both fill {target!r}")
            continue
        targets[parts] = header
        columns.append(plan)
    for target, value in mapping.constants.items():
        parts = parse_path(target)
        if walk_schema(schema, parts) is None:
            problems.append(f"constant {target!r}: {entity} has no field {target!r}")
            continue
        if parts in targets:
            problems.append(f"constant {target!r} is also filled by column {targets[parts]!r}")
            continue
        targets[parts] = "(constant)"
        columns.append(ColumnPlan("", -1, parts, "const", constant=value))
    for path_map, what in ((mapping.defaults, "default"), (mapping.split, "split")):
        for target in path_map:
            if parse_path(target) not in targets:
                problems.append(f"{what} {target!r}: no column fills {target!r}")
    for target in mapping.enums:
        if parse_path(target) not in targets:
            problems.append(f"enums {target!r}: no column fills {target!r}")
    for target in mapping.transforms:
        if parse_path(target) not in targets:
            problems.append(f"transforms {target!r}: no column fills {target!r}")
    paths = sorted(targets)
    for a, b in itertools.pairwise(paths):
        if b[: len(a)] == a:
            problems.append(
                f"{'.'.join(map(str, a))!r} and {'.'.join(map(str, b))!r} fill the same value"
            )
    if problems:
        raise ImportUsageError("; ".join(problems))
    return RowLayout(
        headers=tuple(headers),
        columns=tuple(columns),
        id_index=id_index,
        ignored=tuple(ignored),
        nested_lists=any(isinstance(p, int) for c in columns for p in c.path),
    )


def _plan(
    header: str,
    index: int,
    parts: tuple[Part, ...],
    target: str,
    schema: Mapping[str, Any],
    mapping: ImportMapping,
    entity: str,
    problems: list[str],
) -> ColumnPlan | None:
    node = walk_schema(schema, parts)
    if node is None:
        known = ", ".join((schema.get("properties") or {}).keys())
        via = f" (mapped from {header!r})" if target != header.strip() else ""
        problems.append(
            f"column {target!r}{via}: {entity} has no field {target!r}; fields: {known}. "
            "Rename it with a mapping (columns) or drop it (ignore)"
        )
        return None
    kind, item_kind = value_kind(node)
    if target in mapping.split and kind != "split":
        problems.append(f"split {target!r}: the field is not a list of values")
        return None
    enum_map = mapping.enums.get(target)
    default = mapping.defaults.get(target, _MISSING)
    return ColumnPlan(
        header=header,
        index=index,
        path=parts,
        kind=kind,
        item_kind=item_kind,
        sep=mapping.split.get(target, LIST_SEPARATOR),
        steps=mapping.transforms.get(target, ()),
        enum_map=dict(enum_map) if enum_map is not None else None,
        default=default,
    )


# -- building records ------------------------------------------------------------------------
@dataclass(frozen=True)
class RowProblem:
    pointer: str
    message: str
    keyword: str


def set_path(record: dict[Any, Any], parts: tuple[Part, ...], value: Any) -> None:
    node = record
    for part in parts[:-1]:
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            nxt = node[part] = {}
        node = nxt
    node[parts[-1]] = value


def _lists(node: Any) -> Any:
    """Dicts keyed by list indexes (built from `a.0.b` headers) become lists, in index order."""
    if isinstance(node, dict):
        if node and all(isinstance(k, int) for k in node):
            return [_lists(node[k]) for k in sorted(node)]
        return {k: _lists(v) for k, v in node.items()}
    return node


class RecordBuilder:
    """One CSV row (a list of cells) to a record, with conversion problems per field."""

    def __init__(self, layout: RowLayout):
        self.layout = layout
        self.ncols = len(layout.headers)
        self.steps = [
            (c.index, c.path, c.pointer, c.converter() if c.kind != "const" else None, c)
            for c in layout.columns
        ]

    def build(self, cells: list[str]) -> tuple[dict[str, Any], list[RowProblem]]:
        record: dict[Any, Any] = {}
        problems: list[RowProblem] = []
        n = len(cells)
        if n > self.ncols:
            problems.append(
                RowProblem("", f"the row has {n} cells, the header {self.ncols}", "columns")
            )
        for index, parts, ptr, convert, col in self.steps:
            if convert is None:
                set_path(record, parts, col.constant)
                continue
            text = cells[index] if index < n else ""
            if text == "":
                if col.default is not _MISSING:
                    set_path(record, parts, col.default)
                continue
            try:
                value = convert(text)
            except CellError as exc:
                problems.append(RowProblem(ptr, str(exc), "type"))
                continue
            set_path(record, parts, value)
        if self.layout.nested_lists:
            record = _lists(record)
        return record, problems

    def raw(self, cells: list[str]) -> dict[str, str]:
        """The original row as {header: cell}, for the error report."""
        headers = self.layout.headers
        out = {headers[i]: c for i, c in enumerate(cells) if i < len(headers)}
        for i, c in enumerate(cells[len(headers) :], len(headers)):
            out[f"#{i + 1}"] = c
        return out


class JsonRecordMapper:
    """Applies a mapping to a JSON Lines record (renames top-level keys, then the field maps)."""

    def __init__(self, mapping: ImportMapping, *, keep_ids: bool):
        self.mapping = mapping
        self.keep_ids = keep_ids
        self.renames = {k: parse_path(v) for k, v in mapping.columns.items()}
        self.converters = {
            parse_path(p): ColumnPlan("", 0, parse_path(p), "any", steps=s).converter()
            for p, s in mapping.transforms.items()
        }
        self.trivial = not (
            mapping.columns
            or mapping.ignore
            or mapping.constants
            or mapping.defaults
            or mapping.split
            or mapping.enums
            or mapping.transforms
        )

    def apply(self, obj: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        """(record without system fields, the `id` if kept)."""
        rid = obj.get("id") if self.keep_ids else None
        if self.trivial:
            if any(k in SYSTEM_FIELDS for k in obj):
                obj = {k: v for k, v in obj.items() if k not in SYSTEM_FIELDS}
            return obj, rid
        m = self.mapping
        record: dict[Any, Any] = {}
        for key, value in obj.items():
            if key in m.ignore or key in SYSTEM_FIELDS:
                continue
            set_path(record, self.renames.get(key, (key,)), value)
        for path, sep in m.split.items():
            parts = parse_path(path)
            value = _get(record, parts)
            if isinstance(value, str):
                set_path(record, parts, value.split(sep) if value else [])
        for parts, conv in self.converters.items():
            value = _get(record, parts)
            if isinstance(value, str):
                set_path(record, parts, conv(value))
        for path, emap in m.enums.items():
            parts = parse_path(path)
            value = _get(record, parts)
            if isinstance(value, str) and value in emap:
                set_path(record, parts, emap[value])
            elif isinstance(value, list):
                set_path(
                    record, parts, [emap.get(v, v) if isinstance(v, str) else v for v in value]
                )
        for path, value in m.defaults.items():
            parts = parse_path(path)
            if _get(record, parts) in (None, ""):
                set_path(record, parts, value)
        for path, value in m.constants.items():
            set_path(record, parse_path(path), value)
        return _lists(record), rid


def _get(record: Any, parts: tuple[Part, ...]) -> Any:
    """The value at `parts` in a record being mapped: list items are still int-keyed dicts
    (`set_path`), and a real list (from the JSON line) is not walked into by index."""
    return value_at(record, parts, index_lists=False)


# -- reading files ---------------------------------------------------------------------------
class LongRow:
    """In place of a row's cells (or a JSON line): the row is longer than the limit, and was
    read past without being kept."""

    def __init__(self, limit: int):
        self.limit = limit

    @property
    def message(self) -> str:
        return f"the row is longer than {self.limit} bytes, the limit (import_max_line_bytes)"


class _TooLong(Exception):
    """Raised through `csv.reader` by `_lines` when the record it reads passes the limit."""


#: `_lines`' shared state: the bytes of the record being read, whether it holds a `'`, whether
#: the line dropped last ended in a CR (the LF after it is not a line of its own)
_SIZE, _QUOTE, _CUT = 0, 1, 2


def _lines(text: IO[str], limit: int, state: list[Any]) -> Iterator[str]:
    """The lines of a text stream as `csv.reader` takes them, counting in `state` the bytes of
    the record being read (the caller sets it to 0 after each record). Once the record passes
    `limit`, the rest of its line is read and dropped (never held whole) and `_TooLong` ends
    the generator; a new one goes on with the next line. Also notes whether the record holds a
    `'` (which `restore_cell` may have to take off). A generator with locals: it runs per line.
    """
    readline = text.readline
    size = limit + 1
    line = readline(size)
    if state[_CUT] and line == "\n":
        line = readline(size)
    state[_CUT] = False
    while line:
        total = state[_SIZE] + (
            len(line) if line.isascii() else len(line.encode("utf-8", "surrogatepass"))
        )
        if total > limit:
            while line and line[-1] not in "\r\n":  # the rest of the line, piece by piece
                line = readline(1 << 16)
            state[_SIZE], state[_CUT] = 0, line[-1:] == "\r"
            raise _TooLong
        state[_SIZE] = total
        if "'" in line:
            state[_QUOTE] = True
        yield line
        line = readline(size)


class Source:
    """An import file: plain or gzip (by `.gz` suffix or magic bytes), read as a stream.

    `bytes_read` is the position in the file on disk (compressed bytes for gzip), for progress.
    A row (CSV record or JSON line) longer than `max_line_bytes` comes as a `LongRow`.
    """

    def __init__(
        self,
        path: str | Path,
        fmt: str | None = None,
        delimiter: str = ",",
        max_line_bytes: int = MAX_LINE_BYTES,
    ):
        self.path = Path(path)
        if max_line_bytes < 1:
            raise ImportUsageError("the longest row allowed (import_max_line_bytes) must be > 0")
        self.max_line_bytes = max_line_bytes
        try:
            self.total = self.path.stat().st_size
            with self.path.open("rb") as fh:
                head = fh.read(4096)
        except OSError as exc:
            raise ImportUsageError(f"cannot read {self.path}: {exc.strerror}") from None
        self.gzip = self.path.suffix.lower() == ".gz" or head[:2] == b"\x1f\x8b"
        if self.gzip:
            try:
                head = gzip.decompress(head) if len(head) < 4096 else _gunzip_head(self.path)
            except (OSError, EOFError):
                head = _gunzip_head(self.path)
        self.format = fmt or detect_format(self.path, head)
        if self.format not in FORMATS:
            raise ImportUsageError(f"unknown format {self.format!r}; formats: csv, jsonl")
        self.delimiter = delimiter
        self._raw: IO[bytes] | None = None
        self._layers: list[Any] = []

    @property
    def bytes_read(self) -> int:
        raw = self._raw
        if raw is None or raw.closed:
            return self.total
        return raw.tell()

    def _open(self) -> IO[bytes]:
        self.close()
        self._raw = self.path.open("rb")
        self._layers = [self._raw]
        if self.gzip:
            self._layers.append(gzip.GzipFile(fileobj=self._raw, mode="rb"))
        return self._layers[-1]

    def close(self) -> None:
        """Close every layer (text, gzip, file), outermost first."""
        for layer in reversed(self._layers):
            layer.close()
        self._layers = []

    def text(self) -> io.TextIOWrapper:
        wrapper = io.TextIOWrapper(self._open(), encoding="utf-8-sig", newline="")
        self._layers.append(wrapper)
        return wrapper

    def csv_rows(self) -> tuple[list[str], Iterator[tuple[int, list[str] | LongRow]]]:
        """The header and an iterator of (data row number from 1, cells or `LongRow`).

        Data cells come back from `neutralise_cell` (`restore_cell`), so a CSV export imports
        back exactly."""
        limit = self.max_line_bytes
        # a field is never longer than its row: csv's own limit (128 KiB by default) must not
        # stop a row the row limit allows (the setting is the process's; it is only raised)
        if csv.field_size_limit() < limit:
            csv.field_size_limit(limit)
        text = self.text()
        state: list[Any] = [0, False, False]
        reader = csv.reader(_lines(text, limit, state), delimiter=self.delimiter, strict=False)
        try:
            header = next(reader)
        except StopIteration:
            raise ImportUsageError(f"{self.path} is empty: a CSV file needs a header row") from None
        except _TooLong:
            raise ImportUsageError(
                f"{self.path}: the header row is longer than {limit} bytes, the limit "
                "(import_max_line_bytes)"
            ) from None
        except (UnicodeDecodeError, csv.Error) as exc:
            raise ImportUsageError(f"{self.path}: cannot read the header: {exc}") from None
        state[_SIZE], state[_QUOTE] = 0, False
        return header, _numbered(reader, text, state, limit, self.delimiter, self.path)

    def json_lines(self) -> Iterator[tuple[int, bytes | LongRow]]:
        """(line number from 1, line or `LongRow`) for every non-blank line."""
        fh = self._open()
        limit = self.max_line_bytes
        n = 0
        while True:
            line = fh.readline(limit + 1)
            if not line:
                return
            n += 1
            if len(line) > limit:
                while line and line[-1:] != b"\n":  # the rest of the line, piece by piece
                    line = fh.readline(1 << 16)
                yield n, LongRow(limit)
            elif line.strip():
                yield n, line


def _numbered(
    reader: Any, text: IO[str], state: list[Any], limit: int, delimiter: str, path: Path
) -> Iterator[tuple[int, list[str] | LongRow]]:
    n = 0
    while True:
        try:
            for row in reader:
                n += 1
                state[_SIZE] = 0
                if state[_QUOTE]:
                    state[_QUOTE] = False
                    row = [restore_cell(c) for c in row]
                yield n, row
            return
        except _TooLong:
            # the rest of the file is read by a new reader, from the line after the long one
            n += 1
            state[_QUOTE] = False
            yield n, LongRow(limit)
            reader = csv.reader(_lines(text, limit, state), delimiter=delimiter, strict=False)
        except UnicodeDecodeError as exc:
            raise ImportUsageError(
                f"{path}: row {n + 1} is not UTF-8 text ({exc.reason})"
            ) from None
        except csv.Error as exc:
            raise ImportUsageError(f"{path}: row {n + 1}: {exc}") from None


def _gunzip_head(path: Path) -> bytes:
    try:
        with gzip.open(path, "rb") as fh:
            return fh.read(4096)
    except (OSError, EOFError) as exc:
        raise ImportUsageError(f"{path}: not a readable gzip file ({exc})") from None


def detect_format(path: Path, head: bytes) -> str:
    """By suffix (`.csv`, `.jsonl`, `.ndjson`, also under `.gz`), else by the first byte."""
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    if name.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    if name.endswith(".csv"):
        return "csv"
    return "jsonl" if head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"{" else "csv"
