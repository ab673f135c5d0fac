"""The import's preparing side: read a file, convert and check its rows, and make them into
chunks of table rows (or records, for upserts) with their errors (`prepare_chunks`). It runs
in the worker process of a large import (`_worker`), or in the importing process itself.

Nothing here imports SQLAlchemy or the web app: the worker process (started with `spawn`)
imports only this module and what it needs, which halves its start-up, the part of a small
import's time that has nothing to do with its rows (`benchmarks/import.py`). The writing side
is `registry.imports.importer`.
"""

from __future__ import annotations

import gc
import os
import pickle
import signal
import time
import traceback
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from open_registry.core.codec import (
    blind_input,
    json_value,
    parse_datetime,
    to_column,
    utcnow,
)
from open_registry.core.crypto import DataKeys, FieldCipher, Keyring
from open_registry.core.imports.fast import Unsupported, compile_row_function, json_text
from open_registry.core.imports.rows import (
    MAX_LINE_BYTES,
    ImportMapping,
    ImportUsageError,
    JsonRecordMapper,
    LongRow,
    RecordBuilder,
    RowLayout,
    RowProblem,
    Source,
)
from open_registry.core.record_checks import Defaults, pointed_values, redact_errors
from open_registry.generators.columns import stored_datetime
from open_registry.generators.formats import is_uuid
from open_registry.generators.schema import Reference
from open_registry.generators.validators import RecordValidator

_NORMALISED = frozenset({"date", "datetime", "number"})
SYSTEM_COLUMNS = ("id", "_version", "_created_at", "_updated_at", "_created_by", "_updated_by")

#: What an error kept beyond the import (an API job's) says, by keyword: a reason that quotes
#: no value. The validator's and the cell conversions' own messages repeat the value, and a
#: value in the wrong column (a shifted row) may be a private one.
STORED_MESSAGES = {
    "type": "has the wrong type",
    "enum": "is not one of the allowed values",
    "const": "is not the allowed value",
    "format": "is not in the required format",
    "pattern": "does not match the required pattern",
    "minLength": "is too short",
    "maxLength": "is too long",
    "minimum": "is too small",
    "exclusiveMinimum": "is too small",
    "maximum": "is too large",
    "exclusiveMaximum": "is too large",
    "multipleOf": "is not a multiple of the allowed step",
    "required": "is required",
    "dependentRequired": "needs a field that is missing",
    "additionalProperties": "is not a field allowed here",
    "unevaluatedProperties": "is not a field allowed here",
    "propertyNames": "has a field name that is not allowed",
    "minProperties": "has too few fields",
    "maxProperties": "has too many fields",
    "minItems": "has too few items",
    "maxItems": "has too many items",
    "uniqueItems": "has repeated items",
    "contains": "does not hold a required item",
    "minContains": "does not hold enough of a required item",
    "maxContains": "holds too many of an item",
    "anyOf": "matches none of the allowed forms",
    "oneOf": "does not match exactly one of the allowed forms",
    "not": "is a value that is not allowed",
    "false": "is not allowed",
    "json": "is not valid JSON",
    "columns": "has more cells than the header",
    "unique": "is already used (by a stored record or an earlier row of this file)",
    "reference": "names a record that does not exist",
    "scope": "is outside your scope: name your own facility or recipient record",
}


@dataclass
class RowError:
    """One problem of one row: the row number (1-based data row), a JSON pointer, a message."""

    row: int
    pointer: str
    message: str
    keyword: str
    data: Any = None  # the original row ({header: cell} for CSV, the object for JSON Lines)
    #: the message when it is known to quote no value (else `stored` says it by keyword)
    safe_message: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "row": self.row,
            "pointer": self.pointer,
            "message": self.message,
            "keyword": self.keyword,
            "data": self.data,
        }

    def stored(self) -> dict[str, Any]:
        """What may be kept beyond the import (an API job): the row number, the pointer, the
        keyword and a reason that quotes no value; never the row or a cell of it."""
        message = self.safe_message or STORED_MESSAGES.get(
            self.keyword, f"was refused ({self.keyword})"
        )
        return {
            "row": self.row,
            "pointer": self.pointer,
            "message": message,
            "keyword": self.keyword,
        }


# -- what the worker needs (picklable) -----------------------------------------------------
@dataclass(frozen=True)
class Plan:
    entity: str
    schema: Mapping[str, Any]
    fields: tuple[tuple[str, str], ...]  # (name, column kind), table order
    uniques: tuple[tuple[str, ...], ...]  # checked within the file
    references: tuple[Reference, ...]
    path: str
    format: str
    delimiter: str
    layout: RowLayout | None  # CSV
    mapping: ImportMapping
    keep_ids: bool
    records: bool  # True: chunks carry records (upsert); False: ready table rows
    dialect: str
    actor: str | None
    chunk_size: int
    #: private fields: (position in `fields`, name, kind, has a blind index)
    private: tuple[tuple[int, str, str, bool], ...] = ()
    keys: DataKeys | None = field(default=None, repr=False)  # to seal them (table rows only)
    quote_rows: bool = True  # bad rows carry their original row (`RowError.data`)
    max_line_bytes: int = MAX_LINE_BYTES


#: Rows in the first chunk at most (the writing side waits for it; later chunks: `chunk_size`)
FIRST_CHUNK_ROWS = 1000


@dataclass
class Chunk:
    rows: list[Any]  # table rows (tuples, system columns first) or records (dicts)
    fields: list[str]  # table rows: the audit entry's field list (JSON) of each
    numbers: list[int]  # the row number of each
    ids: list[str | None]  # records mode: the id from the file (keep_ids)
    refs: list[list[tuple[int, str, Any]]]  # per reference: (index in rows, pointer, value)
    errors: list[RowError]
    rows_read: int
    bytes_read: int
    now: datetime
    #: the writing side's work on the chunk done ahead of its write (the importer's `_ready`)
    ready: Any = None


def column_values(dialect: str) -> dict[str, Callable[[Any], Any]]:
    """JSON value -> stored value, per column kind, as SQLAlchemy would bind it (JSON compact)."""
    proc = stored_datetime(dialect)
    return {
        "number": float,
        "datetime": lambda v: proc(parse_datetime(v)),
        "json": json_text,
    }


def fingerprint(value: Any) -> int:
    """A 64-bit fingerprint of a unique key's value (a column value, or a tuple of them): the
    salted string hash of text, of anything else its `repr`. Not `hash` of an int, which is the
    int itself but for -1 (`hash(-1) == hash(-2)`), and which a tuple's hash mixes in: keys -1
    and -2 of one file would be taken for one."""
    return hash(value if type(value) is str else repr(value))


class Fingerprints:
    """A set of 64-bit fingerprints (`fingerprint` of a unique key) in one flat array: open
    addressing, linear probing, at most half full. 8-16 bytes a key where a Python set of ints
    takes 80-120, which at two unique keys a row was most of the worker's memory at a million
    rows."""

    __slots__ = ("_limit", "_mask", "_slots", "_used")

    def __init__(self, size: int = 1 << 14):
        self._table(size)

    def _table(self, size: int) -> None:
        self._slots = memoryview(bytearray(8 * size)).cast("q")  # 0: an empty slot
        self._mask = size - 1
        self._used = 0
        self._limit = size // 2

    def __len__(self) -> int:
        return self._used

    def __contains__(self, key: int) -> bool:
        key = key or 1  # 0 marks an empty slot: the fingerprint 0 is kept as 1
        slots, mask = self._slots, self._mask
        i = key & mask
        while True:
            v = slots[i]
            if v == key:
                return True
            if not v:
                return False
            i = (i + 1) & mask

    def add(self, key: int) -> None:
        key = key or 1
        slots, mask = self._slots, self._mask
        i = key & mask
        while True:
            v = slots[i]
            if v == key:
                return
            if not v:
                break
            i = (i + 1) & mask
        slots[i] = key
        self._used += 1
        if self._used > self._limit:
            self._grow()

    def _grow(self) -> None:
        old = self._slots
        used = self._used
        self._table(2 * len(old))
        slots, mask = self._slots, self._mask
        for v in old:
            if v:
                i = v & mask
                while slots[i]:
                    i = (i + 1) & mask
                slots[i] = v
        self._used = used


class IdMaker:
    """UUID version 7 ids, monotonic within a batch (RFC 9562 method 3), cheap to make."""

    def batch(self, n: int) -> list[str]:
        ms = time.time_ns() // 1_000_000
        rnd = int.from_bytes(os.urandom(10), "big")
        head = (ms & ((1 << 48) - 1)) << 16 | 0x7 << 12 | (rnd >> 68)
        mid = 0b10 << 14 | ((rnd >> 48) & 0x3FFF)
        start = rnd & ((1 << 47) - 1)  # room for the counter below 2**48
        h = f"{head:016x}"
        prefix = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{mid:04x}-"
        return [f"{prefix}{start + i:012x}" for i in range(n)]


# -- the worker side: rows in, checked rows out ---------------------------------------------
def prepare_chunks(plan: Plan) -> Generator[Chunk, None, None]:
    """Read, convert and validate the file; yield chunks of good rows plus the bad rows' errors."""
    source = Source(plan.path, plan.format, plan.delimiter, plan.max_line_bytes)
    try:
        yield from _Preparer(plan, source).chunks()
    finally:
        source.close()


class _Preparer:
    def __init__(self, plan: Plan, source: Source):
        self.plan = plan
        self.source = source
        self.validator = RecordValidator(plan.schema)
        convs = column_values(plan.dialect)
        self.now_proc = stored_datetime(plan.dialect)
        private = {name for _, name, _, _ in plan.private}
        # private values stay JSON here: they are sealed once the row has its id
        conv_fields = [(n, "private" if n in private else k) for n, k in plan.fields]
        self.value_convs = [(name, convs.get(kind)) for name, kind in conv_fields]
        self.sealer = (
            _RowSealer(plan.entity, plan.private, plan.keys) if plan.private and plan.keys else None
        )
        self.private = frozenset(private)
        self.field_index = {name: i for i, (name, _) in enumerate(plan.fields)}
        self.ids = IdMaker()
        self.fast: Callable[[list[str]], tuple[Any, ...] | None] | None = None
        # the schema's defaults, for new records (an upsert's row may update: none there);
        # a fast row that leaves a defaulted field empty takes the slow path, which fills it
        self.defaults = Defaults({} if plan.records else plan.schema)
        self.default_slots = [
            self.field_index[n] for n in self.defaults.top if n in self.field_index
        ]
        if plan.layout is not None and not plan.records and not plan.references:
            try:
                self.fast = compile_row_function(plan.layout, plan.schema, conv_fields, convs)
            except Unsupported:
                self.fast = None
            if self.defaults.nested:
                self.fast = None
        self.seen = [Fingerprints() for _ in plan.uniques]
        self.ids_seen = Fingerprints()
        self.audit_fields: dict[tuple[bool, ...], str] = {}
        kinds = dict(plan.fields)
        self.key_kinds = [tuple(kinds.get(f, "string") for f in g) for g in plan.uniques]
        self.key_pos = [
            tuple(self.field_index[f] for f in g if f in self.field_index) for g in plan.uniques
        ]
        #: (seen keys, column, field) per unique key, when every one is a single column
        self.single_keys: list[tuple[Fingerprints, int, str]] | None = None
        if all(
            len(g) == 1 and len(p) == 1 for g, p in zip(plan.uniques, self.key_pos, strict=True)
        ):
            self.single_keys = [
                (seen, p[0], g[0])
                for seen, p, g in zip(self.seen, self.key_pos, plan.uniques, strict=True)
            ]

    # ---- one row -----------------------------------------------------------------------------
    def _values(self, record: Mapping[str, Any]) -> tuple[Any, ...]:
        out = []
        for name, conv in self.value_convs:
            v = record.get(name)
            out.append(None if v is None else conv(v) if conv is not None else v)
        return tuple(out)

    def _duplicate(self, key_source: Any, is_record: bool) -> list[tuple[str, str]]:
        """Unique keys already seen in this file (the first valid row keeps them)."""
        if not is_record and self.single_keys is not None:
            return self._duplicate_value(key_source)
        keys: list[Any] = []
        problems: list[tuple[str, str]] = []
        for gi, group in enumerate(self.plan.uniques):
            if is_record:
                parts = [
                    to_column(k, key_source.get(f)) if k in _NORMALISED else key_source.get(f)
                    for f, k in zip(group, self.key_kinds[gi], strict=True)
                ]
            else:
                parts = [key_source[i] for i in self.key_pos[gi]]
            # a 64-bit fingerprint, not the value: a million keys would take ~100 bytes each
            key: int | None = None
            if all(v is not None for v in parts):
                key = fingerprint(parts[0] if len(parts) == 1 else tuple(parts))
                if key in self.seen[gi]:
                    problems.append(_same_in_file(group))
            keys.append(key)
        return problems or self._keep(keys)

    def _duplicate_value(self, values: tuple[Any, ...]) -> list[tuple[str, str]]:
        """`_duplicate` of a table row when every unique key is one column (the common case:
        the general loop cost a fifth of the worker's time)."""
        keys: list[int | None] = []
        problems: list[tuple[str, str]] = []
        for seen, pos, name in self.single_keys or ():
            v = values[pos]
            if v is None:
                keys.append(None)
                continue
            key = fingerprint(v)
            if key in seen:
                problems.append(_same_in_file((name,)))
            keys.append(key)
        return problems or self._keep(keys)

    def _keep(self, keys: list[Any]) -> list[tuple[str, str]]:
        """Remember a good row's unique keys (None: a key it does not have); no problems."""
        for seen, key in zip(self.seen, keys, strict=True):
            if key is not None:
                seen.add(key)
        return []

    # ---- the stream --------------------------------------------------------------------------
    def _rows(self) -> Iterator[tuple[int, bool, Any, Any]]:
        """(row number, fast?, table values or (record, problems), raw row) per data row."""
        plan = self.plan
        if plan.format == "csv":
            _, rows = self.source.csv_rows()
            builder = RecordBuilder(plan.layout)  # type: ignore[arg-type]
            id_index = plan.layout.id_index if plan.layout else -1
            fast = self.fast
            slots = self.default_slots  # a row leaving one empty takes the slow path
            for n, cells in rows:
                if isinstance(cells, LongRow):
                    yield n, False, ({}, [_long_row(cells)]), None
                    continue
                if not cells:
                    continue  # a blank line
                if fast is not None:
                    values = fast(cells)
                    if values is not None and not (slots and any(values[i] is None for i in slots)):
                        yield n, True, values, cells
                        continue
                record, problems = builder.build(cells)
                if id_index >= 0:
                    rid = cells[id_index] if id_index < len(cells) else ""
                    if rid:
                        record = {"id": rid, **record}
                yield n, False, (record, problems), cells
        else:
            mapper = JsonRecordMapper(plan.mapping, keep_ids=plan.keep_ids)
            for n, line in self.source.json_lines():
                if isinstance(line, LongRow):
                    yield n, False, ({}, [_long_row(line)]), None
                    continue
                try:
                    obj = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    text = line.decode("utf-8", "replace").rstrip("\r\n")
                    yield n, False, ({}, [RowProblem("", f"not valid JSON: {exc}", "json")]), text
                    continue
                if not isinstance(obj, dict):
                    problem = RowProblem("", "a line must hold a JSON object", "type")
                    yield n, False, ({}, [problem]), obj
                    continue
                record, kept_id = mapper.apply(obj)
                if kept_id is not None:
                    record = {"id": kept_id, **record}
                yield n, False, (record, []), obj

    def _check(self, n: int, record: dict[str, Any], problems: list[RowProblem]):
        """(errors, table values or None, the kept id) of a row off the fast path."""
        plan = self.plan
        rid = record.pop("id", None)
        record.update(self.defaults.apply(record))  # in place: the caller reads references
        errs = [
            RowError(
                n,
                p.pointer,
                p.message,
                p.keyword,
                safe_message=p.message if p.keyword in _SAFE_PROBLEMS else None,
            )
            for p in problems
        ]
        if not errs:
            found = self.validator.errors(record)
            if self.private:
                found = redact_errors(self.private, found)
            errs = [RowError(n, e.pointer, e.message, e.keyword) for e in found]
        if rid is not None and not errs and not (isinstance(rid, str) and is_uuid(rid)):
            errs = [RowError(n, "/id", f"{rid!r} is not a UUID", "format")]
        values = None
        if not errs:
            values = self._values(record) if not plan.records else None
            dup = self._duplicate(record if plan.records else values, plan.records)
            if rid is not None:
                dup += self._duplicate_id(rid)
            errs = [RowError(n, p, m, "unique") for p, m in dup]
        return errs, values, rid

    def chunks(self) -> Iterator[Chunk]:
        plan = self.plan
        size = plan.chunk_size
        # the first chunk is small, so the writing side starts while the rest is read
        cut = min(size, FIRST_CHUNK_ROWS)
        rows: list[Any] = []
        numbers: list[int] = []
        ids: list[str | None] = []
        refs: list[list[tuple[int, str, Any]]] = [[] for _ in plan.references]
        errors: list[RowError] = []
        read = 0
        raw_of = self._raw_of()
        for n, fast, item, raw in self._rows():
            read += 1
            if fast:
                dup = self._duplicate(item, False)
                if dup:
                    errors.extend(RowError(n, p, m, "unique", raw_of(raw)) for p, m in dup)
                else:
                    rows.append(item)
                    numbers.append(n)
                    ids.append(None)
            else:
                record, problems = item
                errs, values, rid = self._check(n, record, problems)
                if errs:
                    data = raw_of(raw)
                    for e in errs:
                        e.data = data
                    errors.extend(errs)
                else:
                    pos = len(rows)
                    for ri, ref in enumerate(plan.references):
                        for ptr, value in pointed_values(record, ref.path):
                            refs[ri].append((pos, ptr, value))
                    rows.append(record if plan.records else values)
                    numbers.append(n)
                    ids.append(rid)
            if read == cut:
                cut += size
                yield self._chunk(rows, numbers, ids, refs, errors, read)
                rows, numbers, ids, errors = [], [], [], []
                refs = [[] for _ in plan.references]
        yield self._chunk(rows, numbers, ids, refs, errors, read)

    def _audit_names(self, values: tuple[Any, ...]) -> str:
        """The sorted names of the fields a row has, as JSON (cached per set of fields)."""
        present = tuple([v is None for v in values])
        text = self.audit_fields.get(present)
        if text is None:
            fields = zip(self.plan.fields, present, strict=True)
            names = sorted(n for (n, _), absent in fields if not absent)
            text = self.audit_fields[present] = orjson.dumps(names).decode()
        return text

    def _duplicate_id(self, rid: str) -> list[tuple[str, str]]:
        key = fingerprint(rid)
        if key in self.ids_seen:
            return [("/id", "another row of this file has the same id")]
        self.ids_seen.add(key)
        return []

    def _raw_of(self) -> Callable[[Any], Any]:
        if not self.plan.quote_rows:
            return lambda raw: None
        if self.plan.format == "csv":
            builder = RecordBuilder(self.plan.layout)  # type: ignore[arg-type]
            return lambda raw: None if raw is None else builder.raw(raw)
        return lambda raw: raw

    def _chunk(
        self,
        rows: list[Any],
        numbers: list[int],
        ids: list[str | None],
        refs: list[list[tuple[int, str, Any]]],
        errors: list[RowError],
        read: int,
    ) -> Chunk:
        now = utcnow()
        if not self.plan.records and rows:
            now_db = self.now_proc(now)
            actor = self.plan.actor
            kept = ids if self.plan.keep_ids else [None] * len(rows)
            new = self.ids.batch(len(rows))
            names = [self._audit_names(values) for values in rows]
            rows = [
                (rid or nid, 1, now_db, now_db, actor, actor, None, *values)
                for rid, nid, values in zip(kept, new, rows, strict=True)
            ]
            if self.sealer is not None:
                rows = self.sealer.seal_rows(rows)
        else:
            names = []
        return Chunk(
            rows=rows,
            fields=names,
            numbers=numbers,
            ids=ids,
            refs=refs,
            errors=errors,
            rows_read=read,
            bytes_read=self.source.bytes_read,
            now=now,
        )


def _same_in_file(group: tuple[str, ...]) -> tuple[str, str]:
    """The problem of a row whose unique key `group` an earlier row of the file has."""
    return f"/{group[0]}", f"another row of this file has the same {', '.join(group)}"


class _RowSealer:
    """Seals the private values of ready table rows and appends their blind indexes (in the
    order of the table's blind index columns)."""

    def __init__(
        self, entity: str, private: tuple[tuple[int, str, str, bool], ...], keys: DataKeys
    ):
        self.cipher = FieldCipher(Keyring(keys), entity)
        self.private = [
            (len(SYSTEM_COLUMNS) + 1 + pos, name, kind) for pos, name, kind, _ in private
        ]
        self.blind = [
            (len(SYSTEM_COLUMNS) + 1 + pos, name, kind) for pos, name, kind, b in private if b
        ]

    def seal_rows(self, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        blind = self.cipher.blind
        out: list[list[Any]] = []
        #: (row, column, field, record id, JSON value) of each private value, sealed together
        todo: list[tuple[int, int, str, str, Any]] = []
        for row in rows:
            values = list(row)
            rid = values[0]
            extra = []
            for at, name, kind in self.blind:
                v = values[at]
                extra.append(None if v is None else blind(name, blind_input(kind, v)))
            for at, name, kind in self.private:
                v = values[at]
                if v is not None:
                    todo.append((len(out), at, name, rid, json_value(kind, v)))
            values.extend(extra)
            out.append(values)
        sealed = self.cipher.seal_many([(name, rid, v) for _, _, name, rid, v in todo])
        for (i, at, *_), text in zip(todo, sealed, strict=True):
            out[i][at] = text
        return [tuple(values) for values in out]


def _worker(conn: Any, plan: Plan) -> None:  # pragma: no cover - runs in the worker process
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what Ctrl-C does
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a forked worker: not the parent's handler
    gc.disable()  # short-lived, makes no reference cycles; collections only cost time here
    try:
        for chunk in prepare_chunks(plan):
            conn.send_bytes(pickle.dumps(("chunk", chunk), protocol=pickle.HIGHEST_PROTOCOL))
        conn.send_bytes(pickle.dumps(("end", None)))
    except (BrokenPipeError, EOFError):
        pass
    except ImportUsageError as exc:
        conn.send_bytes(pickle.dumps(("usage", str(exc))))
    except BaseException:
        conn.send_bytes(pickle.dumps(("error", traceback.format_exc())))
    finally:
        conn.close()


def _long_row(row: LongRow) -> RowProblem:
    return RowProblem("", row.message, "limit")


#: The row readers' problems whose messages quote no value: a row too long, too many cells.
_SAFE_PROBLEMS = frozenset({"limit", "columns"})
