"""The audit log as hash chains: editing, deleting or reordering an entry is detected.

Every `registry_audit` row carries `prev_hash` (the hash of the entry before it in its chain)
and `hash` = SHA-256 over a canonical encoding of its content and `prev_hash`. Each row of
`registry_audit_head` is the end of one chain: the number of entries chained on it and the last
hash. A writer appends all the entries of its transaction to ONE chain, whose head it locks until
it commits; so a chain never forks, and `verify` notices entries cut off its end.

On SQLite writers take turns anyway: there is one chain. On PostgreSQL there are
`audit_shards` chains (`ensure_heads`) and a writer takes the first head no other writer holds
(`FOR UPDATE SKIP LOCKED`, starting from a place of its own), so concurrent writers do not queue
behind one row; it waits only when every head is taken. Which chain an entry joined is not
stored: `verify` finds it, since an entry's `prev_hash` is the hash of exactly one chain's last
entry (or the genesis value, for the first entry of a chain), and checks every chain's end
against its head. The design and why it is as strong as one chain: docs/audit.md.

Entries name who, when, what entity and record, and which fields changed: never a value.
"""

from __future__ import annotations

import hashlib
import os
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
    id: int = 1


_MD = sa.MetaData()
storage.system_tables(_MD)
AUDIT = _MD.tables["registry_audit"]
HEAD = _MD.tables["registry_audit_head"]


_HEAD_ROW = sa.select(HEAD.c.entries, HEAD.c.hash, HEAD.c.id).where(HEAD.c.id == HEAD_ID)
_HEAD_ROW_LOCKED = _HEAD_ROW.with_for_update()
#: the number of heads, for each process's starting place among them
_COUNT = sa.select(sa.func.count()).select_from(HEAD)
#: PostgreSQL: a head no other writer holds, the search starting at `:start`
_FREE_HEAD = (
    sa.select(HEAD.c.entries, HEAD.c.hash, HEAD.c.id)
    .order_by(
        (HEAD.c.id + sa.bindparam("start", type_=sa.Integer)) % sa.bindparam("n", type_=sa.Integer)
    )
    .limit(1)
    .with_for_update(skip_locked=True)
)
_ADVANCE = (
    sa.update(HEAD)
    .where(HEAD.c.id == sa.bindparam("head_id"))
    .values(entries=sa.bindparam("new_entries"), hash=sa.bindparam("new_hash"))
)
#: where this process starts looking for a free head (spreads processes over the chains)
_START = os.getpid()
_heads: dict[int, int] = {}  # id(engine) -> number of heads seen (a hint; refreshed on misses)


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
    prev = (
        sa.select(HEAD.c.hash, HEAD.c.id)
        .order_by(
            (HEAD.c.id + sa.bindparam("start", type_=sa.Integer))
            % sa.bindparam("n", type_=sa.Integer)
        )
        .limit(1)
        .with_for_update(skip_locked=True)
        .cte("prev")
    )
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
        .where(HEAD.c.id == sa.select(prev.c.id).scalar_subquery())
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


def _placement(conn: Connection) -> dict[str, int]:
    """Where this process starts looking for a free head among the `n` heads."""
    key = id(conn.engine)
    n = _heads.get(key)
    if n is None:
        n = _heads[key] = max(1, int(conn.execute(_COUNT).scalar_one()))
    return {"start": _START % n, "n": n}


def ensure_heads(engine: Engine, shards: int) -> None:
    """Give the log `shards` chains (PostgreSQL; SQLite keeps one): their heads are created
    once, never removed (a chain's entries stay verifiable whatever `audit_shards` says later)."""
    if engine.dialect.name != "postgresql":
        return
    rows = [{"id": i, "entries": 0, "hash": GENESIS} for i in range(1, max(1, shards) + 1)]
    with storage.write(engine) as conn:
        conn.execute(pg_insert(HEAD).values(rows).on_conflict_do_nothing())
        _heads[id(engine)] = max(1, int(conn.execute(_COUNT).scalar_one()))


def lock_head(conn: Connection) -> Head:
    """The end of a chain, locked until the transaction ends (call inside a write): on
    PostgreSQL the first head no other writer holds (waiting only when all are held)."""
    pg = conn.dialect.name == "postgresql"
    row = conn.execute(_FREE_HEAD, _placement(conn)).first() if pg else None
    if row is None:
        row = conn.execute(_HEAD_ROW_LOCKED if pg else _HEAD_ROW).first()
    if row is None:  # the first entry ever: create the first head (once, whoever comes first)
        values = {"id": HEAD_ID, "entries": 0, "hash": GENESIS}
        if pg:
            conn.execute(pg_insert(HEAD).values(values).on_conflict_do_nothing())
        else:
            conn.execute(sa.insert(HEAD).values(values))
        row = conn.execute(_HEAD_ROW_LOCKED if pg else _HEAD_ROW).one()
    return Head(int(row[0]), row[1], int(row[2]))


def advance_head(conn: Connection, head: Head, added: int, last_hash: str) -> None:
    """Record `added` new entries ending in `last_hash` (same transaction as the entries)."""
    if not added:
        return
    conn.execute(
        _ADVANCE, {"head_id": head.id, "new_entries": head.entries + added, "new_hash": last_hash}
    )
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


#: the columns of a sealed entry, in the order `chained_entries` gives them
COLUMNS = (*CONTENT, "prev_hash", "hash")


def entry_values(changes: Sequence[Change], at: Any) -> tuple[list[tuple[Any, ...]], list[bytes]]:
    """The entries of `changes` (all made at one time, `at` being the driver's form of it) for
    the bulk strategy, before they are chained: tuples of their `CONTENT` columns (`fields` as
    JSON text), and what each one's hash covers besides the hash before it (`entry_content`).
    Nothing here depends on the chain, so it can be computed ahead of the write
    (`chained_entries`)."""
    values = []
    contents = []
    stamp = at_text(changes[0].at) if changes else ""
    for c in changes:
        text = c.fields_json()
        values.append((at, c.actor, c.action, c.entity, c.record_id, c.version, text))
        content = entry_content(
            stamp, c.actor, c.action, c.entity, c.record_id, c.version, text.encode()
        )
        contents.append(content)
    return values, contents


def chained_entries(
    values: Sequence[tuple[Any, ...]], contents: Sequence[bytes], prev: str
) -> Iterator[tuple[Any, ...]]:
    """`entry_values`' entries chained on from the hash `prev`, one by one, as tuples in
    `COLUMNS` order (the last item of each is its hash). One at a time, so a writer can hash
    an entry while the database takes the rows before it."""
    for row, content in zip(values, contents, strict=True):
        h = chain_hash(prev, content)
        yield (*row, prev, h)
        prev = h


def append_one(
    conn: Connection, statement: sa.Insert, entry: Mapping[str, Any], extra: Mapping[str, Any]
) -> bool:
    """Run a `one_statement_append` statement for `entry` (`extra`: its CTE's parameters).
    False when no head was free (all held by other writers, or none yet: the first entry
    ever): the CTE ran but the entry was not appended; append it with `append`, which waits."""
    content = entry_content(
        at_text(entry["at"]),
        entry.get("actor"),
        entry["action"],
        entry.get("entity"),
        entry.get("record_id"),
        entry.get("version"),
        fields_json(entry.get("fields")),
    )
    params = {**extra, **_params(entry, AUDIT, "a_"), "content": content, **_placement(conn)}
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
    """The result of `verify`: `broken_seq` (an entry) and `broken_checkpoint` (a checkpoint,
    `registry.audit.checkpoint`) are None when the log is intact."""

    entries: int
    head_hash: str
    unchained: int = 0  # entries written before the chain existed (no hash), at the start
    broken_seq: int | None = None
    reason: str = ""
    checkpoints: int = 0  # signed checkpoints checked
    checkpoint_hash: str = ""  # the hash of the last of them
    broken_checkpoint: int | None = None

    @property
    def ok(self) -> bool:
        return self.broken_seq is None and self.broken_checkpoint is None


@dataclass(frozen=True)
class Expected:
    """A chain end a signed checkpoint recorded: chain head `head` held `entries` entries, the
    last with the hash this is keyed by (`walk`'s `expected`)."""

    head: int
    entries: int
    checkpoint: int


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
def snapshot(engine: Engine) -> Iterator[Connection]:
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


_snapshot = snapshot  # older name


def _entry_hash(row: RowLike) -> str:
    return entry_hash(
        row["prev_hash"],
        at_text(_at(row["at"])),
        row["actor"],
        row["action"],
        row["entity"],
        row["record_id"],
        row["version"],
        fields_json(_fields(row["fields"])),
    )


def verify(engine: Engine, *, batch: int = 5000) -> Verdict:
    """Walk the whole log in one snapshot (`walk`); name the first broken entry. The signed
    checkpoints are checked too by `registry.audit.checkpoint.verify`."""
    with snapshot(engine) as conn:
        return walk(conn, batch=batch)


def _pending_by_head(expected: Mapping[str, Expected]) -> dict[int, list[tuple[int, str, int]]]:
    """The expected chain ends of each head as (entries, hash, checkpoint), most entries first
    (so the next one due is popped off the end)."""
    out: dict[int, list[tuple[int, str, int]]] = {}
    for h, e in expected.items():
        out.setdefault(e.head, []).append((e.entries, h, e.checkpoint))
    for items in out.values():
        items.sort(reverse=True)
    return out


@dataclass
class _Tail:
    """The end of one chain during `walk`."""

    entries: int
    seq: int
    owner: int | None = None  # its head, once an entry a checkpoint signed was reached
    #: until then: the seq of its entries at the places checkpoints signed (fork names)
    passed: dict[int, int] | None = None


def walk(  # noqa: C901 - one pass, one rule per branch, each named in docs/audit.md
    conn: Connection, *, batch: int = 5000, expected: Mapping[str, Expected] | None = None
) -> Verdict:
    """Walk the whole log in `seq` order, recomputing every hash; name the first broken entry.

    Each entry must continue exactly one chain: its `prev_hash` is the hash of a chain's last
    entry so far, or the genesis value for a chain's first entry (at most as many chains as
    heads). At the end every chain must end where a head says, with as many entries, and every
    head must end a chain. `expected` (hash -> `Expected`, from the signed checkpoints) are
    chain ends recorded earlier: each must be the entry with that hash, at that place in its
    chain; the first one a chain reaches tells which head the chain belongs to, and from then on
    the chain must pass through every later one of that head. A chain rewritten from some entry
    on (a fork) is named at the first entry a checkpoint signed that it no longer holds; a chain
    that ends before a checkpointed entry was truncated.

    Read it inside one snapshot (`snapshot`), so entries appended while the walk goes on are
    neither seen nor counted against the heads; the entries come `batch` at a time (keyset
    paging on `seq`), so memory stays flat in the log's length (one item per chain, plus the
    checkpointed chain ends). `Verdict.entries`/`head_hash`: all entries, the hash of the last
    one (on SQLite, the one chain's end)."""
    heads = {
        str(r[1]): Head(int(r[0]), r[1], int(r[2]))
        for r in conn.execute(sa.select(HEAD.c.entries, HEAD.c.hash, HEAD.c.id))
        if int(r[0]) > 0
    }
    head_entries = {h.id: h.entries for h in heads.values()}
    allowed = max(1, int(conn.execute(_COUNT).scalar_one()))
    wanted = dict(expected or {})
    due = _pending_by_head(wanted)
    places = {e.entries for e in wanted.values()}
    tails: dict[str, _Tail] = {}  # a chain's last hash -> its end
    count, unchained, last_seq = 0, 0, None
    last_hash = GENESIS

    def broken(seq: int, reason: str) -> Verdict:
        return Verdict(count, last_hash, unchained, seq, reason)

    for row in _rows(conn, batch):
        seq = row["seq"]
        if row["hash"] is None:
            if count == 0:
                unchained += 1
                continue
            return broken(seq, "the entry has no hash")
        prev = row["prev_hash"]
        if prev == GENESIS and len(tails) < allowed:
            tail = _Tail(0, seq, passed={} if places else None)
        elif prev in tails:
            tail = tails.pop(prev)
        else:
            before = f"seq {last_seq}" if last_seq is not None else "the start of the log"
            return broken(
                seq,
                "it does not follow the last entry of any chain (the entry before it in the "
                f"log is {before}): an entry was deleted or inserted before it, or entries "
                "were reordered",
            )
        if _entry_hash(row) != row["hash"]:
            return broken(seq, "its content does not match its hash (edited)")
        position, h = tail.entries + 1, row["hash"]
        tail.entries, tail.seq = position, seq
        mark = wanted.pop(h, None) if wanted else None
        if mark is not None:
            if mark.entries != position or tail.owner not in (None, mark.head):
                return broken(
                    seq,
                    f"checkpoint {mark.checkpoint} recorded this entry as entry {mark.entries} "
                    f"of chain {mark.head}, but it is entry {position} of its chain: entries "
                    "were inserted or deleted before it",
                )
            tail.owner, tail.passed = mark.head, None
        if tail.owner is not None:
            todo = due.get(tail.owner)
            if todo and todo[-1][0] <= position:
                n, want, ck = todo.pop()
                if want != h:
                    return broken(
                        seq,
                        f"this is entry {position} of chain {tail.owner}, but checkpoint {ck} "
                        f"signed another entry there (hash {want[:16]}...): the chain was "
                        "rewritten from here or before (a fork)",
                    )
        elif tail.passed is not None and position in places:
            tail.passed[position] = seq
        tails[h] = tail
        last_hash = h
        count, last_seq = count + 1, seq
    for end, tail in sorted(tails.items(), key=lambda t: t[1].seq):
        head = heads.pop(end, None)
        if head is None or head.entries != tail.entries:
            recorded = f"records {head.entries} entries" if head else "does not end there"
            return broken(
                tail.seq + 1,
                f"a chain of {tail.entries} entries ends at seq {tail.seq} but its head "
                f"{recorded}: entries after seq {tail.seq} were deleted, or the head was altered",
            )
    if heads:
        lost = min(heads.values(), key=lambda h: h.id)
        return broken(
            (last_seq or 0) + 1,
            f"the chain head {lost.id} records {lost.entries} entries that the log does not "
            "hold: entries were deleted, or the head was altered",
        )
    missing = sorted((todo[-1][2], owner, todo[-1]) for owner, todo in due.items() if todo)
    if not missing:
        return Verdict(count, last_hash, unchained)
    ck, owner, (n, want, _) = missing[0]
    signed = f"checkpoint {ck} signed {n} entries of chain {owner} (entry {n}: {want[:16]}...)"
    mine = [t for t in tails.values() if t.owner == owner]
    if mine and mine[0].entries < n:
        t = mine[0]
        return broken(
            t.seq + 1,
            f"chain {owner} ends at seq {t.seq} with {t.entries} entries, but {signed}: entries "
            "were cut off its end (truncated)",
        )
    # a chain no checkpoint recognised: if one alone passed entry n, it is the rewritten one
    strays = [t for t in tails.values() if t.owner is None]
    passed = [t.passed[n] for t in strays if t.passed and n in t.passed]
    if len(passed) == 1 or (len(strays) == 1 and mine == []):
        where = passed[0] if passed else (last_seq or 0) + 1
        if passed or strays[0].entries >= n:
            return broken(
                where,
                f"{signed}, but entry {n} of the chain is another entry: the chain was "
                "rewritten from here or before (a fork)",
            )
        return broken(
            strays[0].seq + 1,
            f"{signed}, but the chain ends at seq {strays[0].seq} with {strays[0].entries} "
            "entries: entries were cut off and the rest rewritten (truncated)",
        )
    now = head_entries.get(owner, 0)
    cut = (
        f"its head now records {now} entries: entries were cut off (truncated)"
        if now < n
        else "the chain was rewritten (a fork)"
    )
    return broken((last_seq or 0) + 1, f"{signed}; no chain holds that entry: {cut}")


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
