"""The plugin's own tables: counters with their claims (daily rates, slot places, batch doses,
one booking per recipient), the facts each record last contributed to the rollups, and the
rollups themselves. They hold derived state, not records, so they are not entities: they are
created on first use (the registry's migrations leave tables without `_version` columns alone).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from open_registry.core import storage

#: the key columns of a rollup row after its name: day, programme, then up to four dimensions
ROLLUP_KEYS = ("rollup", "day", "program", "k1", "k2", "k3", "k4")


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True), "postgresql"
    )


metadata = sa.MetaData()

#: how much of something is used: vaccinations of a facility-programme-day, places of a slot,
#: doses of a batch, bookings of a recipient
counter = sa.Table(
    "programme_counter",
    metadata,
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("key", sa.String(240), primary_key=True),
    sa.Column("used", sa.BigInteger, nullable=False),
)

#: which record holds a unit of which counter (so a change or a deletion gives it back once)
claim = sa.Table(
    "programme_claim",
    metadata,
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("record_id", sa.String(64), primary_key=True),
    sa.Column("key", sa.String(240), nullable=False),
)

#: what a record last contributed to the rollups (a list of rollup keys), by entity and id
fact = sa.Table(
    "programme_fact",
    metadata,
    sa.Column("entity", sa.String(40), primary_key=True),
    sa.Column("record_id", sa.String(64), primary_key=True),
    sa.Column("parts", _json(), nullable=False),
)

#: counts by rollup, day, programme and up to four dimensions ('' when unused)
rollup = sa.Table(
    "programme_rollup",
    metadata,
    sa.Column("rollup", sa.String(16), primary_key=True),
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("program", sa.String(32), primary_key=True),
    sa.Column("k1", sa.String(100), primary_key=True),
    sa.Column("k2", sa.String(100), primary_key=True),
    sa.Column("k3", sa.String(100), primary_key=True),
    sa.Column("k4", sa.String(100), primary_key=True),
    sa.Column("n", sa.BigInteger, nullable=False),
)

#: additions to `rollup` not folded in yet: appended by every worker (no row shared between
#: writers), added on read, folded in by one worker at a time (`rollups.compact`)
rollup_delta = sa.Table(
    "programme_rollup_delta",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    *(sa.Column(c.name, c.type, nullable=False) for c in rollup.columns),
)

#: recipients that look like the same person (found after an import), for staff to resolve
duplicate = sa.Table(
    "programme_duplicate",
    metadata,
    sa.Column("recipient_id", sa.String(64), primary_key=True),
    sa.Column("duplicate_of", sa.String(64), primary_key=True),
    sa.Column("reason", sa.String(40), nullable=False),
    sa.Column("found_at", sa.DateTime(timezone=True), nullable=False),
)


#: the PostgreSQL advisory lock key under which the tables are created (any fixed number)
_CREATE_LOCK_KEY = 0x70726F67


def create_tables(engine: Engine) -> None:
    """Create the plugin's tables if missing, in a transaction of its own (outside any write
    transaction). On PostgreSQL processes take turns under a transaction's advisory lock, so
    concurrent first uses do not race on the catalog."""
    with storage.schema_change(engine, _CREATE_LOCK_KEY) as conn:
        metadata.create_all(conn, checkfirst=True)


def insert_for(conn: Connection, table: sa.Table) -> Any:
    """The dialect's INSERT, which has `on_conflict_do_*`."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


MONTHLY = "/m"  # suffix of a rollup's month level: its rows are dated the 1st of the month


def rollup_rows(deltas: Mapping[tuple[Any, ...], int]) -> list[dict[str, Any]]:
    """Rows of `deltas` keyed `(rollup, day, program, k1..k4)` at the day level and the month
    level (`<rollup>/m`, dated the 1st, which long periods read instead of every day), merged,
    without zeros, in key order."""
    merged: dict[tuple[Any, ...], int] = {}
    for key, n in deltas.items():
        if not n:
            continue
        day = date.fromisoformat(key[1]) if isinstance(key[1], str) else key[1]
        for level in ((key[0], day), (key[0] + MONTHLY, day.replace(day=1))):
            full = (*level, *key[2:])
            merged[full] = merged.get(full, 0) + n
    return [
        dict(zip(ROLLUP_KEYS, key, strict=True), n=n) for key, n in sorted(merged.items()) if n
    ]


def add_to_rollups(conn: Connection, deltas: Mapping[tuple[Any, ...], int]) -> None:
    """Add `n` to each rollup row keyed `(rollup, day, program, k1, k2, k3, k4)`, creating it,
    and to the same row of the rollup's month level (`<rollup>/m`, dated the 1st), which long
    periods read instead of every day.

    Keys are applied in order, so concurrent workers lock rows in the same order (no deadlock).
    """
    rows = rollup_rows(deltas)
    if not rows:
        return
    stmt = insert_for(conn, rollup)
    stmt = stmt.on_conflict_do_update(
        index_elements=list(ROLLUP_KEYS), set_={"n": rollup.c.n + stmt.excluded.n}
    )
    for i in range(0, len(rows), 500):
        conn.execute(stmt, rows[i : i + 500])


def ensure_counters(conn: Connection, kind: str, keys: Iterable[str]) -> None:
    """Counter rows for `keys` (at 0 when new)."""
    rows = [{"kind": kind, "key": k, "used": 0} for k in sorted(set(keys))]
    if rows:
        conn.execute(insert_for(conn, counter).on_conflict_do_nothing(), rows)


def counts(conn: Connection, kind: str, keys: Sequence[str]) -> dict[str, int]:
    """How much of each counter is used (0 for one never used)."""
    out = dict.fromkeys(keys, 0)
    for i in range(0, len(keys), 500):
        chunk = list(keys[i : i + 500])
        stmt = sa.select(counter.c.key, counter.c.used).where(
            counter.c.kind == kind, counter.c.key.in_(chunk)
        )
        out.update({k: int(u) for k, u in conn.execute(stmt)})
    return out
