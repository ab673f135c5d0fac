"""Export an entity's live records as CSV or JSON Lines, streamed in keyset batches.

CSV uses the import's header conventions (docs/import-export.md), so an export imports back
(`keep_ids=True` keeps the ids): nested fields as dotted headers (`address.district`), lists of
objects as indexed headers (`programs.0.programId`, as many as the longest list needs), lists of
values in one cell split on `|` (written as JSON when an item holds a `|`, or the list is empty),
anything else shapeless as JSON. JSON Lines holds each record as the API returns it.

CSV cells are safe to open in a spreadsheet (OWASP "CSV injection"): a text cell starting with
`=`, `+`, `-`, `@`, tab or CR gets a `'` in front (so does one that starts with quotes before
such a character, `'=x` -> `''=x`), and the import takes exactly one off again
(`rows.neutralise_cell` / `rows.restore_cell`), so an export still imports back unchanged.
Numbers are typed, not text: a number cell (`-5` in an integer or number column) is written as
it is.

Every export is an `export` entry of the audit log: the entity, the format, the filters' fields
and operators (not their values, which may be private) and the number of records.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TextIO

import orjson
import sqlalchemy as sa

from open_registry.core import storage
from open_registry.core.audit import chain as audit
from open_registry.core.imports.rows import LIST_SEPARATOR, Part, neutralise_cell, value_kind
from open_registry.core.query import Scope, value_at
from open_registry.core.records import EntityService

EXPORT_FORMATS = ("csv", "jsonl")
#: System fields written after the data fields (import ignores all but `id`).
TRAILING_SYSTEM = ("_version", "_createdAt", "_updatedAt")


def parse_where(where: Sequence[str]) -> list[tuple[str, str]]:
    """`["status=Active", "dob[gte]=1980-01-01"]` -> query parameters for `SearchParser`."""
    params = []
    for expr in where:
        key, sep, value = expr.partition("=")
        if not sep or not key:
            raise ValueError(f"{expr!r} is not a filter: write field=value or field[op]=value")
        params.append((key.strip(), value))
    return params


def csv_columns(
    entity_schema: Mapping[str, Any], list_lengths: Mapping[str, int]
) -> list[tuple[str, tuple[Part, ...], str]]:
    """(header, path, kind) for every CSV column, in schema order.

    kind: scalar | split | json | any. `list_lengths[field]` is the longest list of objects
    stored in a top-level field (0: no column for it; -1: one JSON cell for the whole list).
    """
    out: list[tuple[str, tuple[Part, ...], str]] = []

    def visit(schema: Mapping[str, Any], path: tuple[Part, ...], top: bool) -> None:
        kind, _ = value_kind(schema)
        t = schema.get("type")
        props = schema.get("properties")
        if kind == "json" and t == "object" and isinstance(props, Mapping) and props:
            for name, sub in props.items():
                if isinstance(sub, Mapping):
                    visit(sub, (*path, name), top=False)
            return
        items = schema.get("items")
        if (
            kind == "json"
            and t == "array"
            and top
            and isinstance(items, Mapping)
            and items.get("type") == "object"
            and isinstance(items.get("properties"), Mapping)
        ):
            longest = list_lengths.get(str(path[0]), 0)
            if longest >= 0:
                for i in range(longest):
                    visit(items, (*path, i), top=False)
                return
        header = ".".join(str(p) for p in path)
        out.append(
            (header, path, "scalar" if kind in ("string", "integer", "number", "boolean") else kind)
        )

    for name, sub in (entity_schema.get("properties") or {}).items():
        if isinstance(sub, Mapping):
            visit(sub, (name,), top=True)
    return out


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return orjson.dumps(value).decode()
    return orjson.dumps(value).decode()


def _split(value: Any) -> str:
    if not isinstance(value, list):
        return orjson.dumps(value).decode()
    texts = [_scalar(v) for v in value]
    if (
        not texts
        or any(
            not isinstance(v, str | int | float) or LIST_SEPARATOR in t or t == ""
            for v, t in zip(value, texts, strict=True)
        )
        or texts[0].startswith("[")
    ):
        return orjson.dumps(value).decode()
    return LIST_SEPARATOR.join(texts)


def cell(value: Any, kind: str) -> str:
    """One value as import reads it back; text that a spreadsheet would run as a formula gets a
    `'` in front (`neutralise_cell`, which the import undoes); a number is written as it is."""
    if value is None:
        return ""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return orjson.dumps(value).decode()  # typed: `-5` is a number, not a formula
    if kind == "scalar":
        text = (
            _scalar(value) if not isinstance(value, dict | list) else orjson.dumps(value).decode()
        )
    elif kind == "split":
        text = _split(value)
    else:
        text = orjson.dumps(value).decode()  # json / any: always JSON, so text stays text
    return neutralise_cell(text)


class Exporter:
    """Streams one entity's live records matching a filter."""

    def __init__(
        self,
        service: EntityService,
        where: Sequence[str] = (),
        batch_size: int = 2000,
        *,
        scope: Scope | None = None,
        view: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        hide: Iterable[str] = (),
    ):
        """`scope`: only the rows a caller may read; `view`: each record as the caller may see
        it; `hide`: fields left out of the CSV columns (private fields the caller never sees)."""
        self.service = service
        search = service.parser.from_params(parse_where(where))
        self.search = search
        self.conditions = service.sql.where(search, scope)
        self.batch_size = batch_size
        self.view = view
        self.hide = set(hide)

    def records(self) -> Iterator[dict[str, Any]]:
        table = self.service.table
        to_record = self.service.codec.to_record
        last: str | None = None
        while True:
            stmt = sa.select(table).where(*self.conditions)
            if last is not None:
                stmt = stmt.where(table.c.id > last)
            stmt = stmt.order_by(table.c.id).limit(self.batch_size)
            with storage.read(self.service.db.engine) as conn:
                rows = conn.execute(stmt).mappings().all()
            for row in rows:
                yield self.view(to_record(row)) if self.view else to_record(row)
            if len(rows) < self.batch_size:
                return
            last = rows[-1]["id"]

    def list_lengths(self) -> dict[str, int]:
        """The longest stored list of objects per top-level field (for indexed headers)."""
        entity = self.service.entity
        table = self.service.table
        pg = self.service.db.dialect == "postgresql"
        out: dict[str, int] = {}
        for name, f in entity.fields.items():
            items = f.schema.get("items")
            if f.schema.get("type") != "array" or not isinstance(items, Mapping):
                continue
            if items.get("type") != "object":
                continue
            col = table.c[name]
            if pg:
                length = sa.case(
                    (sa.func.jsonb_typeof(col) == "array", sa.func.jsonb_array_length(col)),
                    else_=0,
                )
            else:
                length = sa.case(
                    (sa.func.json_type(col) == "array", sa.func.json_array_length(col)), else_=0
                )
            is_array = (
                sa.func.jsonb_typeof(col) == "array" if pg else sa.func.json_type(col) == "array"
            )
            stmt = sa.select(
                sa.func.max(length), sa.func.min(sa.case((is_array, length), else_=None))
            ).where(*self.conditions)
            with storage.read(self.service.db.engine) as conn:
                longest, shortest = conn.execute(stmt).one()
            # an empty list has no indexed cell to show it: then the whole list is one JSON cell
            out[name] = -1 if shortest == 0 else longest or 0
        return out

    def write_csv(self, out: TextIO) -> int:
        columns = csv_columns(self.service.entity.json_schema, self.list_lengths())
        hidden = set(self.service.entity.internal) | self.hide
        columns = [c for c in columns if str(c[1][0]) not in hidden]
        writer = csv.writer(out, lineterminator="\n")
        # csv quotes a cell holding the line terminator (LF), not one holding a lone CR, which
        # a reader takes for a line end: a row with a CR anywhere has every cell quoted
        quoted = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL)
        writer.writerow(["id", *(h for h, _, _ in columns), *TRAILING_SYSTEM])
        n = 0
        for record in self.records():
            cells = [
                neutralise_cell(record["id"]),
                *(cell(value_at(record, path), kind) for _, path, kind in columns),
                *(neutralise_cell(_scalar(record[k])) for k in TRAILING_SYSTEM),
            ]
            (quoted if "\r" in "".join(cells) else writer).writerow(cells)
            n += 1
        return n

    def write_jsonl(self, out: TextIO) -> int:
        n = 0
        for record in self.records():
            out.write(orjson.dumps(record).decode())
            out.write("\n")
            n += 1
        return n


def export(
    service: EntityService,
    out: TextIO,
    fmt: str = "csv",
    where: Sequence[str] = (),
    *,
    batch_size: int = 2000,
    actor: str | None = None,
    exporter: Exporter | None = None,
) -> int:
    """Write the live records of `service`'s entity matching `where` to `out`; returns the count.

    `where` uses the API's search syntax: `field=value`, `field[op]=value` (op: gt, gte, lt,
    lte, between, in, contains, startsWith, ...); a bad filter raises `registry.errors.BadRequest`.
    """
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown format {fmt!r}; formats: {', '.join(EXPORT_FORMATS)}")
    exporter = exporter or Exporter(service, where, batch_size)
    n = exporter.write_csv(out) if fmt == "csv" else exporter.write_jsonl(out)
    details = {"format": fmt, "filters": sorted({k for k, _ in parse_where(where)}), "count": n}
    audit.record_event(
        service.db.engine, "export", actor=actor, entity=service.entity.name, details=details
    )
    return n
