"""Signed checkpoints over every audit chain: the heads of all chains at one moment, signed.

The audit log is several hash chains (`registry.audit.chain`), so that writers never queue on
one row. A checkpoint row of `registry_audit_checkpoint` records, for every chain head, how many
entries the chain held and the hash of its last entry; it is chained to the checkpoint before it
(`prev_hash`, `hash` as for entries) and its hash is signed with the registry's audit key
(Ed25519, `registry.audit.keys`). Nobody without that key can make or change a checkpoint, so a
chain rewritten, truncated or forked below a checkpointed head is found by `verify`, even by
someone who also rewrote the head rows (which the chains alone cannot tell).

Writing one never blocks a writer: the heads are read with a plain `SELECT` (the committed
state; uncommitted entries are in the next checkpoint), and checkpoint writers take turns among
themselves only (a PostgreSQL advisory lock tried without waiting: a worker that finds another
one checkpointing skips its turn). Workers write one at most every `INTERVAL` seconds, and only
when a head moved (`Worker.run`); `registry audit checkpoint` and `registry audit verify` write
one on demand. The design and its proof: docs/audit.md.

The table is the audit log's own (not an entity): it is created on first use.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from open_registry.core import storage
from open_registry.core.audit.chain import (
    GENESIS,
    HEAD,
    Expected,
    Verdict,
    at_text,
    chain_hash,
    snapshot,
    walk,
)
from open_registry.core.audit.keys import AuditKey

#: seconds between two checkpoints written by the workers (when a head moved)
INTERVAL = 60.0
#: what the hashed content starts with (a checkpoint hash can never pass for an entry's)
KIND = "audit-checkpoint/1"
#: the PostgreSQL advisory lock key checkpoint writers take turns under (any fixed number)
LOCK_KEY = 0x61756463

_MD = sa.MetaData()
CHECKPOINT = sa.Table(
    "registry_audit_checkpoint",
    _MD,
    sa.Column(
        "seq",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("at", sa.String(32), nullable=False),  # `chain.at_text`, as hashed
    sa.Column("heads", sa.Text, nullable=False),  # JSON [[head id, entries, hash], ...]
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("key_id", sa.String(32), nullable=False),
    sa.Column("signature", sa.String(128), nullable=False),
)

_ready: set[int] = set()  # id(engine) of engines whose table exists
_ready_lock = threading.Lock()


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint: the chain heads `(id, entries, hash)` at `at`, signed."""

    seq: int
    at: str
    heads: tuple[tuple[int, int, str], ...]
    prev_hash: str
    hash: str
    key_id: str
    signature: str


def content(at: str, heads: Sequence[tuple[int, int, str]]) -> bytes:
    """What a checkpoint's hash covers besides the hash before it: the compact JSON array
    `["audit-checkpoint/1", at, [[id, entries, hash], ...]]`, heads by id."""
    return orjson.dumps([KIND, at, [list(h) for h in sorted(heads)]])


def heads_text(heads: Sequence[tuple[int, int, str]]) -> str:
    return orjson.dumps([list(h) for h in sorted(heads)]).decode()


def signed_message(hash_: str) -> bytes:
    """What the key signs: the checkpoint's hash (hex)."""
    return hash_.encode("ascii")


def ensure_table(engine: Engine) -> None:
    """Create the checkpoint table if missing (once per process and engine), in a transaction
    of its own: PostgreSQL processes take turns under a transaction's advisory lock."""
    if id(engine) in _ready:
        return
    with _ready_lock:
        if id(engine) in _ready:
            return
        with storage.schema_change(engine, LOCK_KEY) as conn:
            _MD.create_all(conn, checkfirst=True)
        _ready.add(id(engine))


def _row(row: Any) -> Checkpoint:
    heads = tuple((int(i), int(n), str(h)) for i, n, h in orjson.loads(row["heads"]))
    return Checkpoint(
        int(row["seq"]),
        row["at"],
        heads,
        row["prev_hash"],
        row["hash"],
        row["key_id"],
        row["signature"],
    )


def latest(conn: Connection) -> Checkpoint | None:
    """The last checkpoint written, if any."""
    row = (
        conn.execute(sa.select(CHECKPOINT).order_by(CHECKPOINT.c.seq.desc()).limit(1))
        .mappings()
        .first()
    )
    return _row(row) if row is not None else None


def _age(cp: Checkpoint, now: datetime) -> float:
    then = datetime.strptime(cp.at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return (now - then).total_seconds()


def record(
    engine: Engine,
    key: AuditKey,
    *,
    min_interval: float = 0.0,
    force: bool = False,
    now: datetime | None = None,
) -> Checkpoint | None:
    """Write a checkpoint of every chain head now, signed with `key`; returns it, or None when
    none was written: another process is writing one (PostgreSQL), the last one is younger than
    `min_interval` seconds, or no head moved since it (unless `force`)."""
    ensure_table(engine)
    now = now or datetime.now(UTC)
    with storage.write(engine) as conn:
        if conn.dialect.name == "postgresql":
            turn = conn.execute(sa.select(sa.func.pg_try_advisory_xact_lock(LOCK_KEY))).scalar()
            if not turn:
                return None
        last = latest(conn)
        if last is not None and min_interval and _age(last, now) < min_interval:
            return None
        heads = tuple(
            (int(i), int(n), str(h))
            for i, n, h in conn.execute(
                sa.select(HEAD.c.id, HEAD.c.entries, HEAD.c.hash).order_by(HEAD.c.id)
            )
        )
        if last is not None and heads == last.heads and not force:
            return None
        at = at_text(now)
        prev = last.hash if last is not None else GENESIS
        h = chain_hash(prev, content(at, heads))
        values = {
            "at": at,
            "heads": heads_text(heads),
            "prev_hash": prev,
            "hash": h,
            "key_id": key.id,
            "signature": key.sign(signed_message(h)),
        }
        inserted = conn.execute(CHECKPOINT.insert().values(values)).inserted_primary_key
        seq = inserted[0] if inserted is not None else 0
    return Checkpoint(int(seq), at, heads, prev, h, key.id, values["signature"])


def _all(conn: Connection, batch: int = 1000) -> Iterator[Checkpoint]:
    last = 0
    while True:
        rows = (
            conn.execute(
                sa.select(CHECKPOINT)
                .where(CHECKPOINT.c.seq > last)
                .order_by(CHECKPOINT.c.seq)
                .limit(batch)
            )
            .mappings()
            .all()
        )
        for r in rows:
            yield _row(r)
        if len(rows) < batch:
            return
        last = int(rows[-1]["seq"])


@dataclass
class Checked:
    """The checkpoints read and checked: the chain ends they signed (for `chain.walk`), how many
    there were and the last one's hash; or the first broken one and why."""

    expected: dict[str, Expected]
    count: int = 0
    last_hash: str = ""
    broken: int | None = None
    reason: str = ""


def check(conn: Connection, keys: Iterable[AuditKey]) -> Checked:
    """Read every checkpoint in order and check it: it follows the one before it (`prev_hash`;
    a checkpoint deleted, inserted or reordered breaks this), its hash matches its content, it is
    signed by one of `keys`, and no chain head went backwards since the one before it. Returns
    the chain ends they signed, one per head and number of entries (memory: one item per head
    per checkpoint in which it moved)."""
    trusted = {k.id: k for k in keys}
    out = Checked({})
    if not sa.inspect(conn).has_table(CHECKPOINT.name):
        return out
    prev_hash, prev_seq = GENESIS, None
    seen: dict[int, tuple[int, str]] = {}  # head -> (entries, hash) at the checkpoint before
    for cp in _all(conn):

        def bad(reason: str, cp: Checkpoint = cp) -> Checked:
            out.broken, out.reason = cp.seq, reason
            return out

        if cp.prev_hash != prev_hash:
            before = f"checkpoint {prev_seq}" if prev_seq is not None else "the start"
            return bad(
                f"it does not follow {before}: a checkpoint was deleted, inserted or reordered"
            )
        if chain_hash(cp.prev_hash, content(cp.at, cp.heads)) != cp.hash:
            return bad("its content does not match its hash (edited)")
        key = trusted.get(cp.key_id)
        if key is None:
            known = ", ".join(sorted(trusted)) or "none given"
            return bad(
                f"it is signed by key {cp.key_id}, which is not a trusted audit key "
                f"(trusted: {known})"
            )
        if not key.verifies(signed_message(cp.hash), cp.signature):
            return bad(f"its signature does not verify with key {cp.key_id} (forged or edited)")
        for head, n, h in cp.heads:
            before_n, before_h = seen.get(head, (0, GENESIS))
            if n < before_n or (n == before_n and h != before_h):
                return bad(
                    f"it records chain {head} at {n} entries, behind checkpoint {prev_seq} "
                    f"({before_n}): the chain was cut or rewritten between them"
                )
            if n > before_n:
                out.expected[h] = Expected(head, n, cp.seq)
            seen[head] = (n, h)
        missing = set(seen) - {head for head, _, _ in cp.heads}
        if missing:
            return bad(f"chain head {min(missing)} is missing from it (a head row was deleted)")
        prev_hash, prev_seq = cp.hash, cp.seq
        out.count += 1
        out.last_hash = cp.hash
    return out


def verify(engine: Engine, keys: Iterable[AuditKey], *, batch: int = 5000) -> Verdict:
    """Check the signed checkpoints (`check`), then walk the log (`chain.walk`) requiring every
    chain to extend the heads they signed: all in one snapshot, safe on a live registry."""
    with snapshot(engine) as conn:
        checked = check(conn, keys)
        if checked.broken is not None:
            return Verdict(
                0,
                GENESIS,
                checkpoints=checked.count,
                checkpoint_hash=checked.last_hash,
                broken_checkpoint=checked.broken,
                reason=checked.reason,
            )
        verdict = walk(conn, batch=batch, expected=checked.expected)
    verdict.checkpoints = checked.count
    verdict.checkpoint_hash = checked.last_hash
    return verdict
