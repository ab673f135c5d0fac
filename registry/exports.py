"""Export an entity's live records as CSV or JSON Lines, streamed from one snapshot.

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
import io
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TextIO

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from open_registry.core import storage
from open_registry.core.audit import chain as audit
from open_registry.core.imports.rows import LIST_SEPARATOR, Part, neutralise_cell, value_kind
from open_registry.core.paths import value_at
from open_registry.core.query import Scope
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


#: characters of CSV or JSON Lines gathered before a chunk is handed on (to the HTTP response
#: or the file): large enough to keep the per-chunk overhead small, small enough that memory
#: stays flat (one chunk and one fetched batch of rows per export, whatever the table's size)
CHUNK_CHARS = 64 * 1024


@contextmanager
def snapshot(engine: Engine) -> Iterator[Connection]:
    """One read-only transaction whose statements all see the same committed state: REPEATABLE
    READ, READ ONLY on PostgreSQL (MVCC: writers go on, and nothing they commit meanwhile is
    seen); on SQLite `storage.read`'s transaction, which in WAL mode keeps the snapshot of its
    first read until it ends and never blocks the writer (it only keeps the log from being
    checkpointed past it, so a long export lets `registry.db-wal` grow until it ends)."""
    if engine.dialect.name != "postgresql":
        with storage.read(engine) as conn:
            yield conn
        return
    with storage.read_connection(engine, replica=True) as conn:  # the read replica, if any
        conn = conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        with conn.begin():
            yield conn


class Exporter:
    """Streams one entity's live records matching a filter.

    One export is one snapshot (`snapshot`): the CSV's columns and every row come from the same
    committed state, however many writes commit while it runs. The rows are fetched `batch_size`
    at a time from one query (`yield_per`: a server-side cursor on PostgreSQL, SQLite's own
    stepping cursor), and the text is handed on `CHUNK_CHARS` at a time (`chunks`), so memory
    does not grow with the table."""

    def __init__(
        self,
        service: EntityService,
        where: Sequence[str] = (),
        batch_size: int = 500,
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
        #: records handed on so far by `chunks`
        self.count = 0

    def records(self, conn: Connection) -> Iterator[dict[str, Any]]:
        """The matching records in `id` order, read through `conn` (one query, streamed)."""
        table = self.service.table
        to_record = self.service.codec.to_record
        stmt = sa.select(table).where(*self.conditions).order_by(table.c.id)
        streamed = conn.execution_options(stream_results=True, yield_per=self.batch_size)
        result = streamed.execute(stmt).mappings()
        try:
            for row in result:
                yield self.view(to_record(row)) if self.view else to_record(row)
        finally:
            result.close()

    def list_lengths(self, conn: Connection) -> dict[str, int]:
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
            longest, shortest = conn.execute(stmt).one()
            # an empty list has no indexed cell to show it: then the whole list is one JSON cell
            out[name] = -1 if shortest == 0 else longest or 0
        return out

    def chunks(self, fmt: str = "csv") -> Iterator[str]:
        """The export's text, `CHUNK_CHARS` or so at a time, read in one snapshot (held open
        until the last chunk is taken or the iterator is closed). Counts into `count`."""
        if fmt not in EXPORT_FORMATS:
            raise ValueError(f"unknown format {fmt!r}; formats: {', '.join(EXPORT_FORMATS)}")
        self.count = 0
        buf = io.StringIO()
        with snapshot(self.service.db.engine) as conn:
            rows = self._csv_rows(conn, buf) if fmt == "csv" else self._jsonl_rows(conn, buf)
            for _ in rows:
                self.count += 1
                if buf.tell() >= CHUNK_CHARS:
                    yield buf.getvalue()
                    buf.seek(0)
                    buf.truncate()
        if buf.tell():
            yield buf.getvalue()

    def _csv_rows(self, conn: Connection, out: TextIO) -> Iterator[None]:
        columns = csv_columns(self.service.entity.json_schema, self.list_lengths(conn))
        hidden = set(self.service.entity.internal) | self.hide
        columns = [c for c in columns if str(c[1][0]) not in hidden]
        writer = csv.writer(out, lineterminator="\n")
        # csv quotes a cell holding the line terminator (LF), not one holding a lone CR, which
        # a reader takes for a line end: a row with a CR anywhere has every cell quoted
        quoted = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL)
        writer.writerow(["id", *(h for h, _, _ in columns), *TRAILING_SYSTEM])
        for record in self.records(conn):
            cells = [
                neutralise_cell(record["id"]),
                *(cell(value_at(record, path), kind) for _, path, kind in columns),
                *(neutralise_cell(_scalar(record[k])) for k in TRAILING_SYSTEM),
            ]
            (quoted if "\r" in "".join(cells) else writer).writerow(cells)
            yield None

    def _jsonl_rows(self, conn: Connection, out: TextIO) -> Iterator[None]:
        for record in self.records(conn):
            out.write(orjson.dumps(record).decode())
            out.write("\n")
            yield None

    def stream(
        self, fmt: str = "csv", *, where: Sequence[str] = (), actor: str | None = None
    ) -> Generator[str, None, None]:
        """`chunks`, then the export's audit entry (`export`: the format, the filters' fields,
        the count). An export stopped part way (the client went away, an error) is audited
        too, with the records handed on so far and `"complete": false`. Close the iterator in
        a thread that may do I/O: closing it ends the snapshot and writes the audit entry."""
        complete = False
        started = False
        try:
            for chunk in self.chunks(fmt):
                started = True
                yield chunk
            complete = True
        finally:
            if complete or started:
                details: dict[str, Any] = {
                    "format": fmt,
                    "filters": sorted({k for k, _ in parse_where(where)}),
                    "count": self.count,
                }
                if not complete:
                    details["complete"] = False
                audit.record_event(
                    self.service.db.engine,
                    "export",
                    actor=actor,
                    entity=self.service.entity.name,
                    details=details,
                )


def export(
    service: EntityService,
    out: TextIO,
    fmt: str = "csv",
    where: Sequence[str] = (),
    *,
    batch_size: int = 500,
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
    chunks = exporter.stream(fmt, where=where, actor=actor)
    try:
        for chunk in chunks:
            out.write(chunk)
    finally:
        chunks.close()
    return exporter.count
