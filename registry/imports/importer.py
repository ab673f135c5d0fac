"""Bulk import of CSV / JSON Lines files (gzip too) into one entity, validated like API writes.

A reader turns rows into checked records (`registry.imports.rows`; flat CSV layouts take the
compiled fast path of `registry.imports.fast`); this module checks what needs the database
(references, one query per reference per chunk; unique keys, against the file itself and the
stored records) and writes in chunks, each chunk one transaction holding its rows, audit rows and
outbox rows. A crash or Ctrl-C loses nothing already committed; a re-run with `upsert_on`
finishes the rest without duplicates.

For large files the reading, converting and validating run in a worker process while this
process writes (two cores: one parses, one writes); the worker is forked when this process runs
one thread (the CLI), spawned otherwise. A reader thread here receives its chunks and computes
what their writes leave besides the rows (audit entries, outbox events) while the chunk before
is written, so the database is not left waiting on that. Rows are written with the database
driver directly (`executemany` on SQLite, `COPY` on PostgreSQL), in the column format SQLAlchemy
uses.

Private fields are sealed where the rows are made (the worker, which is given the data keys over
its pipe), with their blind index; audit entries join the hash chain (`registry.audit.chain`) in the
writing transaction.
"""

from __future__ import annotations

import csv
import logging
import multiprocessing
import pickle
import queue
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from open_registry.core import storage
from open_registry.core.audit import chain as audit
from open_registry.core.codec import (
    Codec,
    RowLike,
    new_id,
    to_column,
)
from open_registry.core.errors import RegistryError
from open_registry.core.events import Change
from open_registry.core.imports.prepare import (
    STORED_MESSAGES,
    SYSTEM_COLUMNS,
    Chunk,
    Plan,
    RowError,
    _worker,
    prepare_chunks,
)
from open_registry.core.imports.rows import (
    MAX_LINE_BYTES,
    ImportMapping,
    ImportUsageError,
    LongRow,
    RecordBuilder,
    Source,
    load_mapping,
    neutralise_cell,
    plan_columns,
)
from open_registry.core.records import (
    EntityService,
)
from open_registry.core.writes import BulkBatch
from open_registry.generators.columns import stored_datetime
from open_registry.generators.validators import FieldError

__all__ = [
    "ImportInterrupted",
    "ImportMapping",
    "ImportOptions",
    "ImportResult",
    "ImportUsageError",
    "Progress",
    "RowError",
    "import_file",
    "load_mapping",
]

#: Files larger than this are parsed in a worker process (when `workers` is not set).
PARALLEL_FROM_BYTES = 4 * 1024 * 1024
#: Page cache of the import's SQLite connection (64 MiB instead of 2).
SQLITE_CACHE = "PRAGMA cache_size=-65536"
#: Errors kept in memory and reported; the rest are only counted.
MAX_ERRORS = 100_000


@dataclass
class ImportOptions:
    """What `import_file` does (see docs/import-export.md)."""

    format: str | None = None  # csv | jsonl (default: by suffix, else by content)
    mapping: ImportMapping | None = None
    dry_run: bool = False  # validate everything, write nothing
    upsert_on: str | None = None  # a unique field: update the record holding the row's value
    on_error: str = "skip"  # skip: write the good rows; abort: write nothing if any row is bad
    errors_path: Path | None = None  # CSV report: row, field, message, data
    keep_ids: bool = False  # take `id` from the file (round-trips of an export)
    chunk_size: int = 5000
    workers: int | None = None  # 0: parse here; 1: a worker process; None: by file size
    actor: str | None = None
    progress: Callable[[Progress], None] | None = None
    #: leave private fields out of the rows quoted in errors
    redact_private: bool = False
    #: quote each bad row with its errors (`RowError.data`, the `data` column of `errors_path`);
    #: the API's jobs do not: what they keep is `RowError.stored()`, which quotes no value
    quote_rows: bool = True
    #: the longest row (CSV record or JSON line) read, in bytes; a longer one is an error of
    #: its row (keyword `limit`), read past without being held in memory
    max_line_bytes: int = MAX_LINE_BYTES
    #: the rows the caller may write (a `registry.query.Scope`; None: every row): a row outside
    #: it, or an upsert onto a stored record outside it, is refused on its own
    scope: Any = None


@dataclass
class Progress:
    rows: int = 0  # data rows read and checked
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: int = 0  # rows with at least one error
    bytes_read: int = 0
    bytes_total: int = 0
    elapsed: float = 0.0

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.elapsed if self.elapsed > 0 else 0.0


@dataclass
class ImportResult(Progress):
    entity: str = ""
    errors: list[RowError] = field(default_factory=list)
    errors_dropped: int = 0  # errors beyond MAX_ERRORS, counted only
    dry_run: bool = False
    aborted: bool = False  # on_error=abort and some row was bad: nothing written

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def summary(self) -> str:
        verb = "would be " if self.dry_run else ""
        if self.aborted:
            head = f"aborted: {self.failed} bad row(s) of {self.rows}, nothing written"
        else:
            head = (
                f"{self.rows} rows: {self.inserted} {verb}inserted, {self.updated} {verb}updated, "
                f"{self.unchanged} unchanged, {self.failed} failed"
            )
        return f"{head} in {self.elapsed:.1f} s ({self.rows_per_s:,.0f} rows/s)"


class ImportInterrupted(KeyboardInterrupt):
    """Ctrl-C (or a progress callback) stopped the import; `result` says what was committed."""

    def __init__(self, result: ImportResult):
        super().__init__("import interrupted")
        self.result = result


@contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Start a spawned worker without it re-running the caller's script.

    `spawn` imports the parent's `__main__` in the child, which re-runs any script that calls
    the import without an `if __name__ == "__main__"` guard. The worker needs nothing from it.
    """
    main = sys.modules.get("__main__")
    saved: dict[str, Any] = {
        k: main.__dict__[k] for k in ("__file__", "__spec__") if main and k in main.__dict__
    }
    try:
        if main is not None:
            main.__dict__.pop("__file__", None)
            main.__dict__["__spec__"] = None
        yield
    finally:
        if main is not None:
            main.__dict__.pop("__spec__", None)
            main.__dict__.update(saved)


#: Chunks received from the worker and made ready, waiting to be written
_AHEAD = 2


def _start_method() -> str:
    """`fork` when this process runs one thread (a CLI import: the worker starts in
    milliseconds rather than the quarter second a new interpreter takes to import the package);
    `spawn` otherwise (a fork copies the locks other threads hold, as they stand)."""
    if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
        return "fork"
    return "spawn"


def _chunks_from_worker(plan: Plan, ready: Callable[[Chunk], Chunk]) -> Iterator[Chunk]:
    """The worker's chunks, each passed through `ready` by a reader thread: the pipe is read,
    the chunk unpickled and made ready while this thread writes the chunk before (mostly
    waiting on the database, with the GIL released)."""
    ctx: Any = multiprocessing.get_context(_start_method())  # typeshed: BaseContext has no Process
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_worker, args=(send, plan), daemon=True, name="registry-import")
    with _main_module_hidden():
        proc.start()
    send.close()
    inbox: queue.Queue[tuple[str, Any]] = queue.Queue(_AHEAD)
    stop = threading.Event()

    def put(item: tuple[str, Any]) -> None:
        while not stop.is_set():
            try:
                inbox.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def read() -> None:
        kind = "chunk"
        while kind == "chunk" and not stop.is_set():
            try:
                kind, payload = pickle.loads(receive.recv_bytes())
                if kind == "chunk":
                    payload = ready(payload)
            except (EOFError, OSError):
                kind, payload = "stopped", None
            except BaseException as exc:  # ready() failed: raised in the writing thread
                kind, payload = "raised", exc
            put((kind, payload))

    reader = threading.Thread(target=read, name="registry-import-reader", daemon=True)
    reader.start()
    try:
        while True:
            kind, payload = inbox.get()
            if kind == "chunk":
                yield payload
            elif kind == "end":
                return
            else:
                raise _failure(kind, payload)
    finally:
        stop.set()
        if proc.is_alive():
            proc.terminate()  # a reader waiting on the pipe wakes to its end
        proc.join(5)
        reader.join(5)
        receive.close()


def _failure(kind: str, payload: Any) -> BaseException:
    """The exception for a message of the worker's other than a chunk or its end."""
    if kind == "usage":
        return ImportUsageError(payload)
    if kind == "stopped":
        return RuntimeError("the import worker process stopped unexpectedly")
    if kind == "raised":
        return payload
    return RuntimeError(f"the import worker failed:\n{payload}")


def _chunks_here(plan: Plan, ready: Callable[[Chunk], Chunk]) -> Iterator[Chunk]:
    """The chunks prepared in this process (small files), each passed through `ready`."""
    chunks = prepare_chunks(plan)
    try:
        for chunk in chunks:
            yield ready(chunk)
    finally:
        chunks.close()


# -- the writing side -----------------------------------------------------------------------
class _Rollback(Exception):
    pass


#: What stands for a value of the row in a write rule's message kept with a job.
ROW_VALUE = "(value)"


def _row_values(node: Any, out: set[str]) -> set[str]:
    """The texts of every string and number in a record."""
    if isinstance(node, dict):
        for v in node.values():
            _row_values(v, out)
    elif isinstance(node, list):
        for v in node:
            _row_values(v, out)
    elif isinstance(node, str):
        if node.strip():
            out.add(node)
    elif isinstance(node, int | float) and not isinstance(node, bool):
        out.add(str(node))
    return out


def _rule_message(row: Any, message: str, keyword: str) -> str | None:
    """The message of a write rule's refusal (a plugin's `before_write`: keywords of its own,
    e.g. `rate`, `stock`) with every value of the row in it replaced by `ROW_VALUE`: what a job
    keeps of it. None for the import's own keywords (`RowError.stored` has a fixed reason for
    them) and for table rows (their private values are sealed: nothing to compare with)."""
    if keyword in STORED_MESSAGES or not isinstance(row, dict):
        return None
    values = sorted(_row_values(row, set()), key=len, reverse=True)
    if not values:
        return message
    alternatives = "|".join(re.escape(v) for v in values)
    return re.sub(f"(?<![A-Za-z0-9])(?:{alternatives})(?![A-Za-z0-9])", ROW_VALUE, message)


def _tuples(errors: Mapping[int, list[FieldError]]) -> dict[int, list[tuple[str, str, str]]]:
    """Field errors by position as the (pointer, message, keyword) an import reports."""
    return {pos: [(e.pointer, e.message, e.keyword) for e in errs] for pos, errs in errors.items()}


class Importer:
    """Checks chunks against the database and writes them (see `import_file`)."""

    def __init__(self, service: EntityService, options: ImportOptions):
        self.service = service
        self.options = options
        self.entity = service.entity
        self.table = service.table
        self.db = service.db
        self.dialect = self.db.dialect
        self.codec: Codec = service.codec
        self.kinds = {name: f.kind for name, f in self.entity.fields.items()}
        self.fields = tuple(self.kinds.items())
        self.field_pos = {name: i for i, name in enumerate(self.kinds)}
        self.columns = [c.name for c in self.table.columns]
        self.data_start = len(SYSTEM_COLUMNS) + 1  # + _deleted_at
        self.result = ImportResult(entity=self.entity.name, dry_run=options.dry_run)
        #: the plugins' `before_write` runs on every row (`register_write_checks`): rows then
        #: go the records way, each check in a savepoint, a refused row reported like others
        self.checks = service.before_write if service.checks_imports else None
        #: ready table rows, written with the bulk strategy (else records: `_records`)
        self.bulk = not options.upsert_on and self.checks is None
        self._update_stmt: Any = None  # built on the first upsert that changes a record
        self.needs_raw: set[int] = set()
        self.dbapi_error = self.db.engine.dialect.loaded_dbapi.IntegrityError
        uq = list(self.entity.uniques)
        self.uniques = tuple(uq)
        if options.upsert_on:
            groups = [g for g in uq if g == (options.upsert_on,)]
            if not groups:
                singles = [g[0] for g in uq if len(g) == 1]
                raise ImportUsageError(
                    f"upsert_on must be a unique field of {self.entity.name}; "
                    f"unique fields: {', '.join(singles) or 'none'}"
                )
        access = self.entity.access or {}
        if "create" in access and not access["create"]:
            # e.g. certificates: written by their plugin only, never from a file
            raise ImportUsageError(
                f"no one may create {self.entity.name} records (x-registry.access.create is "
                "empty): they cannot be imported"
            )
        if options.on_error not in ("skip", "abort"):
            raise ImportUsageError("on_error must be skip or abort")
        if options.chunk_size < 1:
            raise ImportUsageError("chunk_size must be at least 1")
        self.writer = service.bulk_writer()
        self.now_proc = stored_datetime(self.dialect)

    # ---- planning ----------------------------------------------------------------------------
    def plan(self, path: Path) -> tuple[Plan, Source]:
        opts = self.options
        mapping = opts.mapping or ImportMapping()
        if mapping.entity and mapping.entity != self.entity.name:
            raise ImportUsageError(
                f"the mapping is for {mapping.entity!r}, not {self.entity.name!r}"
            )
        source = Source(path, opts.format or mapping.format, mapping.delimiter, opts.max_line_bytes)
        layout = None
        if source.format == "csv":
            try:
                header, _ = source.csv_rows()
            finally:
                source.close()
            layout = plan_columns(
                header,
                self.entity.json_schema,
                mapping,
                keep_ids=opts.keep_ids,
                entity=self.entity.name,
            )
        uniques = list(self.uniques)
        blind = self.codec.blind
        private = tuple(
            (i, name, kind, name in blind)
            for i, (name, kind) in enumerate(self.fields)
            if name in self.codec.private
        )
        plan = Plan(
            entity=self.entity.name,
            schema=self.entity.json_schema,
            fields=self.fields,
            uniques=tuple(uniques),
            references=tuple(self.entity.references),
            path=str(path),
            format=source.format,
            delimiter=mapping.delimiter,
            layout=layout,
            mapping=mapping,
            keep_ids=opts.keep_ids,
            records=not self.bulk,
            dialect=self.dialect,
            actor=opts.actor,
            chunk_size=opts.chunk_size,
            private=private,
            keys=self.db.keyring().keys if private and not opts.upsert_on else None,
            quote_rows=opts.quote_rows,
            max_line_bytes=opts.max_line_bytes,
        )
        return plan, source

    # ---- running -----------------------------------------------------------------------------
    def run(self, path: str | Path) -> ImportResult:  # noqa: C901
        path = Path(path)
        plan, source = self.plan(path)
        opts = self.options
        res = self.result
        res.bytes_total = source.total
        workers = opts.workers
        if workers is None:
            workers = 1 if source.total >= PARALLEL_FROM_BYTES else 0
        if multiprocessing.current_process().daemon:
            workers = 0  # a daemon process may not start children
        chunks = (_chunks_from_worker if workers else _chunks_here)(plan, self._ready)
        start = time.perf_counter()
        try:
            if opts.dry_run and self.checks is not None:
                # the plugins' checks write (counters, claims): one transaction, undone
                try:
                    with storage.write(self.db.engine) as conn:
                        for chunk in chunks:
                            self._chunk(conn, chunk, write=False)
                            self._progress(chunk, start)
                        raise _Rollback
                except _Rollback:
                    pass
            elif opts.dry_run:
                for chunk in chunks:
                    with storage.read(self.db.engine) as conn:
                        self._chunk(conn, chunk, write=False)
                    self._progress(chunk, start)
            elif opts.on_error == "abort":
                try:
                    with storage.write(self.db.engine) as conn:
                        for chunk in chunks:
                            self._chunk(conn, chunk, write=not res.failed)
                            self._progress(chunk, start)
                        if res.failed:
                            raise _Rollback
                except _Rollback:
                    res.aborted = True
                    res.inserted = res.updated = res.unchanged = 0
            else:
                for chunk in chunks:
                    with storage.write(self.db.engine) as conn:
                        self._chunk(conn, chunk, write=True)
                    self._progress(chunk, start)
        except KeyboardInterrupt:
            res.elapsed = time.perf_counter() - start
            if opts.on_error == "abort" and not opts.dry_run:
                res.inserted = res.updated = res.unchanged = 0
            raise ImportInterrupted(res) from None
        finally:
            if hasattr(chunks, "close"):
                chunks.close()
        if not opts.dry_run and (res.inserted or res.updated):
            self._analyse()
        res.elapsed = time.perf_counter() - start
        self._finish(plan)
        return res

    def _analyse(self) -> None:
        """Fresh planner statistics for the tables the import wrote (its entity's, the audit
        log, the outbox), so that lists keep their plans as tables grow (docs/scaling.md). A
        failure is logged: the rows are in."""
        tables = self.db.metadata.tables
        names = [self.service.table.name]
        names += [n for n in ("registry_audit", "registry_outbox") if n in tables]
        columns = {n: storage.planner_columns(tables[n]) for n in names}
        columns[names[0]] = storage.planner_columns(self.service.table, self.entity.private)
        try:
            storage.analyse(self.db.engine, names, columns)
        except sa.exc.DBAPIError as exc:
            logging.getLogger("registry").warning("ANALYZE after the import failed: %s", exc.orig)

    def _progress(self, chunk: Chunk, start: float) -> None:
        res = self.result
        res.rows = chunk.rows_read
        res.bytes_read = chunk.bytes_read
        res.elapsed = time.perf_counter() - start
        if self.options.progress is not None:
            self.options.progress(
                Progress(
                    rows=res.rows,
                    inserted=res.inserted,
                    updated=res.updated,
                    unchanged=res.unchanged,
                    failed=res.failed,
                    bytes_read=res.bytes_read,
                    bytes_total=res.bytes_total,
                    elapsed=res.elapsed,
                )
            )

    def _error(self, err: RowError) -> None:
        res = self.result
        if len(res.errors) < MAX_ERRORS:
            res.errors.append(err)
        else:
            res.errors_dropped += 1

    def _fail_rows(self, errors: Iterable[RowError]) -> None:
        rows = set()
        quote = self.options.quote_rows
        for e in errors:
            rows.add(e.row)
            if e.data is None and quote:
                self.needs_raw.add(e.row)
            self._error(e)
        self.result.failed += len(rows)

    # ---- one chunk ---------------------------------------------------------------------------
    def _chunk(self, conn: Connection, chunk: Chunk, *, write: bool) -> None:
        self._fail_rows(chunk.errors)
        if not chunk.rows:
            return
        keep = self._check_references(conn, chunk)
        if self.options.scope is not None:
            keep = self._check_scope(chunk, keep)
        if self.bulk:
            self._bulk(conn, chunk, keep, write=write)
        else:
            self._records(conn, chunk, keep, write=write)

    def _drop(self, chunk: Chunk, keep: list[int], bad: Mapping[int, list[tuple[str, str, str]]]):
        if not bad:
            return keep
        self._fail_rows(
            RowError(chunk.numbers[i], p, m, k, safe_message=_rule_message(chunk.rows[i], m, k))
            for i in sorted(bad)
            for p, m, k in bad[i]
        )
        return [i for i in keep if i not in bad]

    def _scope_view(self, chunk: Chunk, i: int) -> dict[str, Any]:
        """What the scope looks at in row `i`: its owner fields and its id."""
        row = chunk.rows[i]
        if isinstance(row, dict):
            return {**row, "id": chunk.ids[i]}
        view: dict[str, Any] = {"id": row[0]}
        for path, _ in self.options.scope.alternatives:
            top = path.split(".")[0]
            if top in self.field_pos:
                value = row[self.data_start + self.field_pos[top]]
                if self.kinds[top] == "json" and isinstance(value, str):
                    value = orjson.loads(value)
                view[top] = value
        return view

    def _check_scope(self, chunk: Chunk, keep: list[int]) -> list[int]:
        """Refuse, row by row, rows that would belong to another facility or recipient."""
        scope = self.options.scope
        paths = sorted({p for p, _ in scope.alternatives}) or sorted(
            self.entity.owner_paths.values()
        )
        bad = {
            i: [
                (
                    "/" + p.replace(".", "/"),
                    "outside your scope: name your own facility or recipient record",
                    "scope",
                )
                for p in paths
            ]
            for i in keep
            if not scope.matches(self._scope_view(chunk, i))
        }
        return self._drop(chunk, keep, bad)

    def _check_references(self, conn: Connection, chunk: Chunk) -> list[int]:
        keep = list(range(len(chunk.rows)))
        return self._drop(chunk, keep, _tuples(self.service.reference_errors(conn, chunk.refs)))

    def _key(self, name: str, value: Any) -> Any:
        """What the unique key column of field `name` holds for a record value."""
        if value is None:
            return None
        if name in self.codec.blind:
            return self.codec.blind_value(name, value)
        return to_column(self.kinds[name], value)

    def _typed(self, kind: str, value: Any) -> Any:
        """A stored value as the driver wrote it -> the Python value SQLAlchemy compares."""
        if value is None:
            return None
        if kind == "date" and isinstance(value, str):
            return date.fromisoformat(value)
        if kind == "datetime" and isinstance(value, str):
            return datetime.fromisoformat(value).replace(tzinfo=UTC)
        return value

    def _taken(
        self,
        conn: Connection,
        group: tuple[str, ...],
        keys: Mapping[int, tuple[Any, ...]],
        own: Mapping[int, str] | None = None,
    ) -> dict[int, list[tuple[str, str, str]]]:
        return _tuples(self.service.taken(conn, group, keys, own))

    def _taken_ids(self, conn: Connection, ids: Mapping[int, str]) -> dict[int, list]:
        return _tuples(self.service.taken_ids(conn, ids))

    # ---- plain inserts (ready rows) ------------------------------------------------------------
    def _bulk_conflicts(self, conn: Connection, chunk: Chunk, keep: list[int]) -> list[int]:
        index = {name: self.data_start + i for i, (name, _) in enumerate(self.fields)}
        index.update({f: self.columns.index(c) for f, c in self.codec.blind.items()})
        bad: dict[int, list[tuple[str, str, str]]] = {}
        for group in self.uniques:
            keys = {
                i: tuple(
                    chunk.rows[i][index[f]]
                    if f in self.codec.blind
                    else self._typed(self.kinds[f], chunk.rows[i][index[f]])
                    for f in group
                )
                for i in keep
            }
            for pos, errs in self._taken(conn, group, keys).items():
                bad.setdefault(pos, []).extend(errs)
        if self.options.keep_ids:
            ids = {i: chunk.rows[i][0] for i in keep if chunk.ids and chunk.ids[i]}
            for pos, errs in self._taken_ids(conn, ids).items():
                bad.setdefault(pos, []).extend(errs)
        return self._drop(chunk, keep, bad)

    def _bulk(self, conn: Connection, chunk: Chunk, keep: list[int], *, write: bool) -> None:
        if not write:
            keep = self._bulk_conflicts(conn, chunk, keep)
            self.result.inserted += len(keep)
            return
        raw = conn.connection.driver_connection
        cur = raw.cursor()  # type: ignore[union-attr]
        if self.dialect == "sqlite":
            cur.execute(SQLITE_CACHE)  # the table's indexes stay in memory across chunks
        head = audit.lock_head(conn)  # held to the end of the transaction: the chain is ours
        try:
            for attempt in (1, 2):
                batch: BulkBatch = chunk.ready
                if len(keep) == len(chunk.rows):
                    rows = chunk.rows
                else:
                    rows = [chunk.rows[i] for i in keep]
                    batch = batch.subset(keep)
                cur.execute("SAVEPOINT registry_import")
                try:
                    last = self.writer.write(cur, rows, batch, head.hash)
                except self.dbapi_error:
                    cur.execute("ROLLBACK TO SAVEPOINT registry_import")
                    if attempt == 2:
                        raise
                    keep = self._bulk_conflicts(conn, chunk, keep)
                    continue
                cur.execute("RELEASE SAVEPOINT registry_import")
                audit.advance_head(conn, head, len(rows), last)
                self.result.inserted += len(rows)
                return
        finally:
            cur.close()

    def _ready(self, chunk: Chunk) -> Chunk:
        """The writing side's work on a chunk of table rows that needs no database, done ahead
        of its write (by the reader thread, while the chunk before is written): the audit
        entries and outbox events of its rows (`BulkWriter.prepare`)."""
        if not self.bulk or not chunk.rows or self.options.dry_run:
            return chunk
        actor, name = self.options.actor, self.entity.name
        changes = [
            Change(name, "create", r[0], 1, (), actor, chunk.now, fields_text=f)
            for r, f in zip(chunk.rows, chunk.fields, strict=True)
        ]
        chunk.ready = self.writer.prepare(changes, self.now_proc(chunk.now))
        return chunk

    # ---- records: upserts, and rows the plugins check -------------------------------------------
    def _records(self, conn: Connection, chunk: Chunk, keep: list[int], *, write: bool) -> None:
        """Upserts (`upsert_on`) and rows the plugins check: sorted into inserts and updates,
        checked for unique keys held elsewhere, then written through the record service."""
        field_name = self.options.upsert_on or ""  # "": inserts only (rows the plugins check)
        existing = self._existing(conn, chunk, keep, field_name, write=write)
        inserts, updates, outside = self._sort_rows(chunk, keep, existing, field_name)
        bad = self._unique_errors(conn, chunk, inserts, updates, field_name)
        for pos, errs in outside.items():
            bad.setdefault(pos, []).extend(errs)
        if bad:
            self._drop(chunk, keep, bad)
            inserts = [i for i in inserts if i not in bad]
            updates = [u for u in updates if u[0] not in bad]
        keep_ids = self.options.keep_ids
        ids = {i: (chunk.ids[i] if keep_ids else None) or new_id() for i in inserts}
        if self.checks is not None:
            # each row checked then written, in file order, so a rule sees the rows before it
            # (a dry run or an aborting import writes too: its transaction is rolled back)
            refused = self._checked_writes(conn, chunk, ids, updates)
            if refused:
                self._drop(chunk, keep, refused)
                inserts = [i for i in inserts if i not in refused]
                updates = [u for u in updates if u[0] not in refused]
        elif write:
            self._write_records(conn, chunk, inserts, updates, ids)
        self.result.inserted += len(inserts)
        self.result.updated += len(updates)

    def _existing(
        self, conn: Connection, chunk: Chunk, keep: list[int], field_name: str, *, write: bool
    ) -> dict[int, RowLike]:
        """The stored live record each kept row names by its `upsert_on` value (locked on
        PostgreSQL when writing)."""
        if not field_name:
            return {}
        key_column = self.codec.blind.get(field_name, field_name)
        keys = {i: self._key(field_name, chunk.rows[i].get(field_name)) for i in keep}
        values = [v for v in set(keys.values()) if v is not None]
        col = self.table.c[key_column]
        by_key: dict[Any, RowLike] = {}
        for i in range(0, len(values), 500):
            stmt = sa.select(self.table).where(
                col.in_(values[i : i + 500]), self.table.c._deleted_at.is_(None)
            )
            if write and self.dialect == "postgresql":
                stmt = stmt.with_for_update()
            for row in conn.execute(stmt).mappings():
                by_key[row[key_column]] = row
        return {i: by_key[k] for i, k in keys.items() if k in by_key}

    def _sort_rows(
        self, chunk: Chunk, keep: list[int], existing: Mapping[int, RowLike], field_name: str
    ) -> tuple[
        list[int],
        list[tuple[int, Mapping[str, Any], list[str]]],
        dict[int, list[tuple[str, str, str]]],
    ]:
        """Kept rows as inserts, updates (row, stored record, changed fields) and rows naming a
        record outside the importer's scope; unchanged rows are counted and left out."""
        inserts: list[int] = []
        updates: list[tuple[int, Mapping[str, Any], list[str]]] = []
        outside: dict[int, list[tuple[str, str, str]]] = {}
        scope = self.options.scope
        for i in keep:
            current = existing.get(i)
            if current is None:
                inserts.append(i)
                continue
            old = self.codec.data(current)
            if scope is not None and not scope.matches({**old, "id": current["id"]}):
                message = f"already used by a {self.entity.name} outside your scope"
                outside[i] = [(f"/{field_name}", message, "scope")]
                continue
            new = self.codec.normalised(chunk.rows[i])
            changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            if changed:
                updates.append((i, current, changed))
            else:
                self.result.unchanged += 1
        return inserts, updates, outside

    def _unique_errors(
        self,
        conn: Connection,
        chunk: Chunk,
        inserts: list[int],
        updates: list[tuple[int, Mapping[str, Any], list[str]]],
        field_name: str,
    ) -> dict[int, list[tuple[str, str, str]]]:
        """Rows whose other unique keys (or kept ids) another stored record holds."""
        own = {i: current["id"] for i, current, _ in updates}
        candidates = inserts + [u[0] for u in updates]
        records = chunk.rows
        bad: dict[int, list[tuple[str, str, str]]] = {}
        for group in self.uniques:
            if group == (field_name,):
                continue
            gkeys = {i: tuple(self._key(f, records[i].get(f)) for f in group) for i in candidates}
            for pos, errs in self._taken(conn, group, gkeys, own).items():
                bad.setdefault(pos, []).extend(errs)
        if self.options.keep_ids:
            ids = {i: file_id for i in inserts if (file_id := chunk.ids[i])}
            for pos, errs in self._taken_ids(conn, ids).items():
                bad.setdefault(pos, []).extend(errs)
        return bad

    def _checked_writes(
        self,
        conn: Connection,
        chunk: Chunk,
        ids: Mapping[int, str],
        updates: list[tuple[int, Mapping[str, Any], list[str]]],
    ) -> dict[int, list[tuple[str, str, str]]]:
        """Write each row with the plugins' `before_write` (the record service's `write_batch`
        of one), in file order, each row in a savepoint (a refused row leaves nothing behind).
        Returns the refused rows' errors."""
        svc, records = self.service, chunk.rows
        actor, now = self.options.actor, chunk.now
        todo: list[tuple[int, Mapping[str, Any] | None, list[str]]] = [(i, None, []) for i in ids]
        todo += updates
        refused: dict[int, list[tuple[str, str, str]]] = {}
        for i, current, fields in sorted(todo, key=lambda item: item[0]):
            savepoint = conn.begin_nested()
            try:
                if current is None:
                    svc.write_batch(conn, creates=[(ids[i], records[i])], actor=actor, at=now)
                else:
                    update = (current, records[i], fields)
                    svc.write_batch(conn, updates=[update], actor=actor, at=now)
            except RegistryError as exc:
                savepoint.rollback()
                refused[i] = [
                    (e.get("pointer", ""), e.get("message", exc.detail), e.get("keyword", exc.slug))
                    for e in exc.errors or ()
                ] or [("", exc.detail, exc.slug)]
                continue
            savepoint.commit()
        return refused

    def _write_records(
        self,
        conn: Connection,
        chunk: Chunk,
        inserts: list[int],
        updates: list[tuple[int, Mapping[str, Any], list[str]]],
        ids: Mapping[int, str],
    ) -> None:
        records = chunk.rows
        with conn.begin_nested():
            self.service.write_batch(
                conn,
                creates=[(ids[i], records[i]) for i in inserts],
                updates=[(current, records[i], changed) for i, current, changed in updates],
                actor=self.options.actor,
                at=chunk.now,
                checks=False,  # the plugins' checks run on imports they name (`_checked_writes`)
            )

    # ---- the end ---------------------------------------------------------------------------------
    def _private_keys(self, plan: Plan) -> set[str]:
        """The keys of a quoted row (CSV headers, JSON keys) that hold private values."""
        private = self.codec.private
        if plan.layout is not None:
            return {c.header for c in plan.layout.columns if c.header and str(c.path[0]) in private}
        renamed = {k: v.split(".")[0].split("[")[0] for k, v in plan.mapping.columns.items()}
        return {k for k, top in renamed.items() if top in private} | (private - set(renamed))

    def _finish(self, plan: Plan) -> None:
        res = self.result
        if self.needs_raw:
            raws = original_rows(plan, self.needs_raw)
            for e in res.errors:
                if e.data is None:
                    e.data = raws.get(e.row)
        if self.options.redact_private and self.codec.private:
            hidden = self._private_keys(plan)
            for e in res.errors:
                if isinstance(e.data, dict):
                    e.data = {k: REDACTED if k in hidden else v for k, v in e.data.items()}
        res.errors.sort(key=lambda e: (e.row, e.pointer))
        if self.options.errors_path is not None:
            write_error_report(self.options.errors_path, res.errors)


REDACTED = "(private)"


def original_rows(plan: Plan, numbers: set[int]) -> dict[int, Any]:
    """The original rows with these numbers (a second pass over the file, for the report)."""
    out: dict[int, Any] = {}
    last = max(numbers)
    source = Source(plan.path, plan.format, plan.delimiter, plan.max_line_bytes)
    try:
        if plan.format == "csv":
            builder = RecordBuilder(plan.layout)  # type: ignore[arg-type]
            _, rows = source.csv_rows()
            for n, cells in rows:
                if n in numbers and not isinstance(cells, LongRow):
                    out[n] = builder.raw(cells)
                if n >= last:
                    break
        else:
            for n, line in source.json_lines():
                if n in numbers and not isinstance(line, LongRow):
                    try:
                        out[n] = orjson.loads(line)
                    except orjson.JSONDecodeError:
                        out[n] = line.decode("utf-8", "replace").rstrip("\n")
                if n >= last:
                    break
    finally:
        source.close()
    return out


def write_error_report(path: Path, errors: Sequence[RowError]) -> None:
    """CSV: row (1-based data row), field (JSON pointer), message, data (the row as JSON).

    The operator's own report of their own file (`registry import --errors`): it quotes the
    bad rows as they are; a cell that a spreadsheet would take for a formula is quoted."""
    with Path(path).open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["row", "field", "message", "data"])
        for e in errors:
            data = orjson.dumps(e.data).decode()
            w.writerow([e.row, *map(neutralise_cell, (e.pointer, e.message, data))])


def import_file(
    service: EntityService, path: str | Path, options: ImportOptions | None = None, **kw: Any
) -> ImportResult:
    """Import a CSV or JSON Lines file (gzip too) into `service`'s entity.

    Options come as an `ImportOptions` or as keywords (`dry_run=True`, `upsert_on="code"`...).
    Raises `ImportUsageError` when the file, its header, the mapping or the options cannot be
    used (nothing is written then), and `ImportInterrupted` (a KeyboardInterrupt) when stopped.
    """
    opts = options or ImportOptions(**kw)
    if options is not None and kw:
        opts = ImportOptions(**{**opts.__dict__, **kw})
    return Importer(service, opts).run(path)
