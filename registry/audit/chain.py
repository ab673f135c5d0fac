"""The audit log as a hash chain: editing, deleting or reordering an entry is detected.

Every `registry_audit` row carries `prev_hash` (the hash of the entry before it) and `hash` =
SHA-256 over a canonical encoding of its content and `prev_hash`. The one row of
`registry_audit_head` holds the number of chained entries and the last hash: writers lock it
(`SELECT ... FOR UPDATE` on PostgreSQL; SQLite's write transaction is already exclusive) before
appending, so parallel writers never fork the chain, and `verify` notices entries cut off its end.

Entries name who, when, what entity and record, and which fields changed: never a value.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Connection, Engine

from open_registry.core import storage
from open_registry.core.codec import RowLike, format_datetime, utcnow
from open_registry.core.events import Change

GENESIS = "0" * 64
HEAD_ID = 1
#: The content columns of an entry, in the order they are hashed.
CONTENT = ("at", "actor", "action", "entity", "record_id", "version", "fields")


def at_text(at: datetime) -> str:
    """An entry's time as hashed: `YYYY-MM-DDTHH:MM:SS.ffffffZ`."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def fields_json(fields: Any) -> bytes:
    """The canonical JSON of an entry's `fields` (keys sorted, no spaces)."""
    return orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)


def entry_content(
    at: str,
    actor: str | None,
    action: str,
    entity: str | None,
    record_id: str | None,
    version: int | None,
    fields_text: bytes,
) -> bytes:
    """What an entry's hash covers besides the hash before it: the compact JSON array
    `[at, actor, action, entity, record_id, version, fields]`, `at` as `at_text` gives it,
    `fields` as `fields_json`."""
    head = orjson.dumps([at, actor, action, entity, record_id, version])
    return head[:-1] + b"," + fields_text + b"]"


def chain_hash(prev_hash: str, content: bytes) -> str:
    """SHA-256 (hex) of the previous entry's hash (64 hex digits) followed by `content`."""
    return hashlib.sha256(prev_hash.encode("ascii") + content).hexdigest()


def entry_hash(
    prev_hash: str,
    at: str,
    actor: str | None,
    action: str,
    entity: str | None,
    record_id: str | None,
    version: int | None,
    fields_text: bytes,
) -> str:
    """The hash of an entry: `chain_hash(prev_hash, entry_content(...))`."""
    content = entry_content(at, actor, action, entity, record_id, version, fields_text)
    return chain_hash(prev_hash, content)


@dataclass
class Head:
    entries: int
    hash: str


_MD = sa.MetaData()
storage.system_tables(_MD)
AUDIT = _MD.tables["registry_audit"]
HEAD = _MD.tables["registry_audit_head"]


_HEAD_ROW = sa.select(HEAD.c.entries, HEAD.c.hash).where(HEAD.c.id == HEAD_ID)
_HEAD_ROW_LOCKED = _HEAD_ROW.with_for_update()
_ADVANCE = (
    sa.update(HEAD)
    .where(HEAD.c.id == HEAD_ID)
    .values(entries=sa.bindparam("new_entries"), hash=sa.bindparam("new_hash"))
)


def _one_row(table: sa.Table, prefix: str) -> sa.Insert:
    """`INSERT INTO table (...) VALUES (:prefix_column, ...)` of every column but `seq`."""
    cols = [c for c in table.columns if c.name != "seq"]
    return table.insert().values(
        {c.name: sa.bindparam(prefix + c.name, type_=c.type) for c in cols}
    )


def _params(row: Mapping[str, Any], table: sa.Table, prefix: str) -> dict[str, Any]:
    return {prefix + c.name: row.get(c.name) for c in table.columns if c.name != "seq"}


def one_statement_append(before: sa.Insert) -> sa.Insert:
    """PostgreSQL, one entry (the API's write of one record), in one statement: run `before`
    (the write's outbox insert, as a CTE), lock the head, chain the entry on in the database
    (`sha256` of the previous hash and the entry's content, computed here: pass it as `content`,
    the entry's columns prefixed `a_`) and insert it with its hashes. The head stays locked
    only for the rest of that statement and the commit. Run it with `append_one`."""
    event = before.cte("event")
    prev = sa.select(HEAD.c.hash).where(HEAD.c.id == HEAD_ID).with_for_update().cte("prev")
    chained = sa.func.encode(
        sa.func.sha256(
            sa.func.convert_to(prev.c.hash, "UTF8").op("||")(
                sa.bindparam("content", type_=sa.LargeBinary)
            )
        ),
        "hex",
    )
    head = (
        sa.update(HEAD)
        .where(HEAD.c.id == HEAD_ID)
        .values(entries=HEAD.c.entries + 1, hash=sa.select(chained).scalar_subquery())
        .returning(HEAD.c.hash)
        .cte("head")
    )
    cols = [c for c in AUDIT.columns if c.name not in ("seq", "prev_hash", "hash")]
    values = [sa.bindparam("a_" + c.name, type_=c.type) for c in cols]
    rows = sa.select(*values, prev.c.hash, head.c.hash).select_from(prev).join(head, sa.true())
    return (
        sa.insert(AUDIT)
        .from_select([*(c.name for c in cols), "prev_hash", "hash"], rows)
        .add_cte(event)
        .returning(AUDIT.c.seq)
    )


def one_row_insert(table: sa.Table, prefix: str) -> sa.Insert:
    """`INSERT INTO table (...) VALUES (:prefix_column, ...)` of every column but `seq`."""
    return _one_row(table, prefix)


def params(row: Mapping[str, Any], table: sa.Table, prefix: str) -> dict[str, Any]:
    """The parameters of `one_row_insert(table, prefix)` for `row`."""
    return _params(row, table, prefix)


def lock_head(conn: Connection) -> Head:
    """The end of the chain, locked until the transaction ends (call inside a write)."""
    pg = conn.dialect.name == "postgresql"
    row = conn.execute(_HEAD_ROW_LOCKED if pg else _HEAD_ROW).first()
    if row is None:  # the first entry ever: create the head row (once, whoever comes first)
        values = {"id": HEAD_ID, "entries": 0, "hash": GENESIS}
        if pg:
            conn.execute(pg_insert(HEAD).values(values).on_conflict_do_nothing())
        else:
            conn.execute(sa.insert(HEAD).values(values))
        row = conn.execute(_HEAD_ROW_LOCKED if pg else _HEAD_ROW).one()
    return Head(int(row[0]), row[1])


def advance_head(conn: Connection, head: Head, added: int, last_hash: str) -> None:
    """Record `added` new entries ending in `last_hash` (same transaction as the entries)."""
    if not added:
        return
    conn.execute(_ADVANCE, {"new_entries": head.entries + added, "new_hash": last_hash})
    head.entries += added
    head.hash = last_hash


def seal(head: Head, entries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The entries with their `prev_hash` and `hash`, chained on from `head`."""
    prev = head.hash
    rows = []
    for e in entries:
        h = entry_hash(
            prev,
            at_text(e["at"]),
            e.get("actor"),
            e["action"],
            e.get("entity"),
            e.get("record_id"),
            e.get("version"),
            fields_json(e.get("fields")),
        )
        rows.append({**e, "prev_hash": prev, "hash": h})
        prev = h
    return rows


def entry_of(change: Change) -> dict[str, Any]:
    """The audit entry of a record write (its `CONTENT` columns)."""
    return {
        "at": change.at,
        "actor": change.actor,
        "action": change.action,
        "entity": change.entity,
        "record_id": change.record_id,
        "version": change.version,
        "fields": list(change.fields),
    }


#: the columns of a sealed entry, in the order `sealed_values` gives them
COLUMNS = (*CONTENT, "prev_hash", "hash")


def sealed_values(
    changes: Sequence[Change], at: Any, prev: str
) -> tuple[list[tuple[Any, ...]], str]:
    """The entries of `changes` (all made at one time, `at` being the driver's form of it)
    chained on from the hash `prev`, as tuples in `COLUMNS` order with `fields` as JSON text,
    for the bulk strategy; and the last hash."""
    out = []
    stamp = at_text(changes[0].at) if changes else ""
    for c in changes:
        text = c.fields_json()
        h = entry_hash(prev, stamp, c.actor, c.action, c.entity, c.record_id, c.version,
                       text.encode())  # fmt: skip
        out.append((at, c.actor, c.action, c.entity, c.record_id, c.version, text, prev, h))
        prev = h
    return out, prev


def append_one(
    conn: Connection, statement: sa.Insert, entry: Mapping[str, Any], extra: Mapping[str, Any]
) -> bool:
    """Run a `one_statement_append` statement for `entry` (`extra`: its CTE's parameters).
    False when the chain has no head row yet (the first entry ever): the CTE ran but the entry
    was not appended; append it with `append`."""
    content = entry_content(
        at_text(entry["at"]),
        entry.get("actor"),
        entry["action"],
        entry.get("entity"),
        entry.get("record_id"),
        entry.get("version"),
        fields_json(entry.get("fields")),
    )
    params = {**extra, **_params(entry, AUDIT, "a_"), "content": content}
    return conn.execute(statement, params).first() is not None


def append(conn: Connection, entries: Sequence[Mapping[str, Any]]) -> None:
    """Append audit entries (dicts of the `CONTENT` columns) to the chain, in order, inside the
    caller's write transaction.

    The head is locked as late as possible: from here to the commit, other writers wait."""
    if not entries:
        return
    head = lock_head(conn)
    rows = seal(head, entries)
    conn.execute(AUDIT.insert(), rows)
    advance_head(conn, head, len(rows), rows[-1]["hash"])


def record_event(
    engine: Engine,
    action: str,
    *,
    actor: str | None = None,
    entity: str | None = None,
    record_id: str | None = None,
    details: Any = None,
) -> None:
    """Audit something that is not a record write (an export, a schema change, a key rotation),
    in a transaction of its own. `details` must hold no private value."""
    with storage.write(engine) as conn:
        append(
            conn,
            [
                {
                    "at": utcnow(),
                    "actor": actor,
                    "action": action,
                    "entity": entity,
                    "record_id": record_id,
                    "version": None,
                    "fields": details,
                }
            ],
        )


# -- verification ------------------------------------------------------------------------------
@dataclass
class Verdict:
    """The result of `verify`: `broken_seq` is None when the chain is intact."""

    entries: int
    head_hash: str
    unchained: int = 0  # entries written before the chain existed (no hash), at the start
    broken_seq: int | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.broken_seq is None


def _rows(conn: Connection, batch: int) -> Iterator[RowLike]:
    last = None
    while True:
        stmt = sa.select(AUDIT)
        if last is not None:
            stmt = stmt.where(AUDIT.c.seq > last)
        rows = conn.execute(stmt.order_by(AUDIT.c.seq).limit(batch)).mappings().all()
        yield from rows
        if len(rows) < batch:
            return
        last = rows[-1]["seq"]


def _at(value: Any) -> datetime:
    if isinstance(value, str):  # a driver that hands back text
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _fields(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str | bytes) else value


@contextmanager
def _snapshot(engine: Engine) -> Iterator[Connection]:
    """One read-only transaction whose statements all see the same committed state, however
    many writers commit meanwhile: REPEATABLE READ, READ ONLY on PostgreSQL (its snapshot is
    taken at the first statement; READ COMMITTED would give each statement a newer one); on
    SQLite `storage.read`'s transaction, which in WAL mode keeps the snapshot of its first read
    until it ends. Neither blocks writers, nor is blocked by them."""
    if engine.dialect.name != "postgresql":
        with storage.read(engine) as conn:
            yield conn
        return
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        with conn.begin():
            yield conn


def verify(engine: Engine, *, batch: int = 5000) -> Verdict:
    """Walk the whole chain in `seq` order, recomputing every hash; name the first broken entry.

    The head and every entry are read in one snapshot (`_snapshot`), so entries appended while
    the walk goes on are neither seen nor counted against the head; the entries come `batch` at
    a time (keyset paging on `seq`), so memory stays flat however long the log."""
    with _snapshot(engine) as conn:
        head_row = conn.execute(
            sa.select(HEAD.c.entries, HEAD.c.hash).where(HEAD.c.id == HEAD_ID)
        ).first()
        head = Head(int(head_row[0]), head_row[1]) if head_row else Head(0, GENESIS)
        prev, prev_seq, count, unchained = GENESIS, None, 0, 0
        for row in _rows(conn, batch):
            seq = row["seq"]
            if row["hash"] is None:
                if count == 0:
                    unchained += 1
                    continue
                return Verdict(count, prev, unchained, seq, "the entry has no hash")
            if row["prev_hash"] != prev:
                where = f"seq {prev_seq}" if prev_seq is not None else "the start of the log"
                return Verdict(
                    count,
                    prev,
                    unchained,
                    seq,
                    f"it does not follow the entry before it ({where}): an entry was deleted or "
                    "inserted there, or entries were reordered",
                )
            computed = entry_hash(
                prev,
                at_text(_at(row["at"])),
                row["actor"],
                row["action"],
                row["entity"],
                row["record_id"],
                row["version"],
                fields_json(_fields(row["fields"])),
            )
            if computed != row["hash"]:
                return Verdict(
                    count, prev, unchained, seq, "its content does not match its hash (edited)"
                )
            prev, prev_seq, count = row["hash"], seq, count + 1
        if (count, prev) != (head.entries, head.hash):
            after = f"after seq {prev_seq}" if prev_seq is not None else "at the start"
            return Verdict(
                count,
                prev,
                unchained,
                (prev_seq or 0) + 1,
                f"the chain head records {head.entries} entries but the log holds {count}: "
                f"entries {after} were deleted, or the head was altered",
            )
        return Verdict(count, prev, unchained)


# -- reading ------------------------------------------------------------------------------------
@dataclass
class AuditQuery:
    """Filters and keyset paging of the audit log (newest first unless `ascending`)."""

    entity: str | None = None
    record_id: str | None = None
    actor: str | None = None
    action: str | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive
    after_seq: int | None = None  # the cursor: entries past this seq in the listing's order
    limit: int = 100
    ascending: bool = False


def entry_json(row: RowLike) -> dict[str, Any]:
    """One entry as the API and the CLI show it."""
    return {
        "seq": row["seq"],
        "at": format_datetime(_at(row["at"])),
        "actor": row["actor"],
        "action": row["action"],
        "entity": row["entity"],
        "recordId": row["record_id"],
        "version": row["version"],
        "fields": _fields(row["fields"]),
        "hash": row["hash"],
    }


def list_entries(engine: Engine, q: AuditQuery) -> tuple[list[dict[str, Any]], int | None]:
    """One page of entries and the cursor (last seq) of the next page, or None at the end."""
    audit = AUDIT
    conds: list[Any] = []
    for name, value in (
        ("entity", q.entity),
        ("record_id", q.record_id),
        ("actor", q.actor),
        ("action", q.action),
    ):
        if value is not None:
            conds.append(audit.c[name] == value)
    if q.since is not None:
        conds.append(audit.c.at >= q.since)
    if q.until is not None:
        conds.append(audit.c.at < q.until)
    if q.after_seq is not None:
        conds.append(audit.c.seq > q.after_seq if q.ascending else audit.c.seq < q.after_seq)
    order = audit.c.seq.asc() if q.ascending else audit.c.seq.desc()
    stmt = sa.select(audit).where(*conds).order_by(order).limit(q.limit + 1)
    with storage.read(engine) as conn:
        rows = conn.execute(stmt).mappings().all()
    more = len(rows) > q.limit
    rows = rows[: q.limit]
    return [entry_json(r) for r in rows], (rows[-1]["seq"] if more and rows else None)
