"""Claims on counters: a record takes one unit of a counter (a facility's vaccinations of a day,
a slot's places, a batch's doses, a recipient's one open booking) inside its write transaction.

Taking is a conditional update, `used = used + 1 WHERE used < limit`: on PostgreSQL concurrent
writers queue on the counter row and each re-reads it after the one before commits, so the limit
holds under any concurrency; SQLite has one writer. The claim row says which record holds which
unit, so moving a record (another day, slot or batch) gives its unit back in the same
transaction, and deleting it gives it back exactly once.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from open_registry.plugins.programme.tables import claim, counter, ensure_counters, insert_for

RATE = "rate"  # key facility|program|day
SLOT = "slot"  # key facility|program|date|HH:MM
BATCH = "batch"  # key: the stock record's id
BOOKING = "booking"  # key recipient|program


_STATEMENTS: dict[tuple[str, str], Any] = {}


def _statement(conn: Connection, name: str) -> Any:
    """The counters' statements, built once per dialect with bind parameters (compiled once)."""
    found = _STATEMENTS.get((conn.dialect.name, name))
    if found is not None:
        return found
    kind: sa.BindParameter[str] = sa.bindparam("b_kind")
    key: sa.BindParameter[str] = sa.bindparam("b_key")
    rid: sa.BindParameter[str] = sa.bindparam("b_rid")
    mine = (claim.c.kind == kind, claim.c.record_id == rid)
    if name == "held":
        stmt: Any = sa.select(claim.c.key).where(*mine)
    elif name == "held-locked":
        stmt = sa.select(claim.c.key).where(*mine)
        if conn.dialect.name == "postgresql":
            stmt = stmt.with_for_update()
    elif name == "take":
        stmt = (
            sa.update(counter)
            .where(counter.c.kind == kind, counter.c.key == key)
            .values(used=counter.c.used + 1)
        )
    elif name == "take-limited":
        stmt = (
            sa.update(counter)
            .where(counter.c.kind == kind, counter.c.key == key)
            .where(counter.c.used < sa.bindparam("b_limit"))
            .values(used=counter.c.used + 1)
        )
    elif name == "new-counter":
        stmt = insert_for(conn, counter).values(kind=kind, key=key, used=0).on_conflict_do_nothing()
    elif name == "claim":
        stmt = insert_for(conn, claim).values(kind=kind, record_id=rid, key=key)
    else:  # pragma: no cover - a typo
        raise KeyError(name)
    _STATEMENTS[(conn.dialect.name, name)] = stmt
    return stmt


def held(conn: Connection, kind: str, record_id: str, *, lock: bool = False) -> str | None:
    """The counter key `record_id` holds a unit of, if any."""
    stmt = _statement(conn, "held-locked" if lock else "held")
    return conn.execute(stmt, {"b_kind": kind, "b_rid": record_id}).scalar()


def release(conn: Connection, kind: str, record_id: str) -> str | None:
    """Give back the unit `record_id` holds (if any); returns its counter key."""
    key = held(conn, kind, record_id, lock=True)
    if key is None:
        return None
    conn.execute(sa.delete(claim).where(claim.c.kind == kind, claim.c.record_id == record_id))
    conn.execute(
        sa.update(counter)
        .where(counter.c.kind == kind, counter.c.key == key, counter.c.used > 0)
        .values(used=counter.c.used - 1)
    )
    return key


def take(
    conn: Connection,
    kind: str,
    record_id: str,
    key: str,
    limit: int | None,
    *,
    fresh: bool = False,
) -> bool:
    """Have `record_id` hold one unit of counter `key`, if fewer than `limit` are used
    (`None`: no limit). A record already holding a unit of `key` keeps it; one holding another
    key gives that back first (`fresh`: a record being created, which holds nothing yet). False
    when the counter is full: the caller must then fail the transaction (which also undoes the
    give-back).

    One conditional UPDATE in the common case; a counter seen for the first time is inserted
    (a concurrent first insert waits on the key, then does nothing) and the UPDATE repeated."""
    if not fresh:
        current = held(conn, kind, record_id, lock=True)
        if current == key:
            return True
        if current is not None:
            release(conn, kind, record_id)
    params: dict[str, Any] = {"b_kind": kind, "b_key": key}
    stmt = _statement(conn, "take")
    if limit is not None:
        stmt = _statement(conn, "take-limited")
        params["b_limit"] = limit
    if conn.execute(stmt, params).rowcount != 1:
        conn.execute(_statement(conn, "new-counter"), {"b_kind": kind, "b_key": key})
        if conn.execute(stmt, params).rowcount != 1:
            return False
    conn.execute(_statement(conn, "claim"), {"b_kind": kind, "b_rid": record_id, "b_key": key})
    return True


def force_many(conn: Connection, kind: str, claims: dict[str, str]) -> None:
    """Have each record (id -> counter key) hold a unit, whatever the limit: for records that
    bypassed the write checks (a bulk import), counted afterwards. Records holding one keep it."""
    if not claims:
        return
    ids = sorted(claims)
    holding: set[str] = set()
    for i in range(0, len(ids), 500):
        stmt = sa.select(claim.c.record_id).where(
            claim.c.kind == kind, claim.c.record_id.in_(ids[i : i + 500])
        )
        holding.update(r for (r,) in conn.execute(stmt))
    fresh = {rid: key for rid, key in claims.items() if rid not in holding}
    if not fresh:
        return
    per_key: dict[str, int] = {}
    for key in fresh.values():
        per_key[key] = per_key.get(key, 0) + 1
    ensure_counters(conn, kind, per_key)
    conn.execute(
        sa.update(counter)
        .where(counter.c.kind == kind, counter.c.key == sa.bindparam("k"))
        .values(used=counter.c.used + sa.bindparam("n")),
        [{"k": k, "n": n} for k, n in sorted(per_key.items())],
    )
    conn.execute(
        claim.insert(),
        [{"kind": kind, "record_id": rid, "key": key} for rid, key in sorted(fresh.items())],
    )


def used(conn: Connection, kind: str, key: str) -> int:
    value = conn.execute(
        sa.select(counter.c.used).where(counter.c.kind == kind, counter.c.key == key)
    ).scalar()
    return int(value or 0)
