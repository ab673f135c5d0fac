"""Incremental rollups, fed by the outbox (`after_write_batch`): for every vaccination,
certificate, side-effect report and appointment event, the record's contribution to the rollups
is worked out from its current state and compared with what it contributed last time (kept in
`programme_fact`); only the difference is added. Re-delivery, corrections, deletions and events
out of order all converge on the same counts, without ever scanning the base tables.

Rollups (`programme_rollup.rollup`, then day, programme and up to four dimensions):
- `dose`: vaccine, dose
- `place`: facility, district, state
- `people`: gender, age band
- `cert`: issued | corrected | revoked | suspended
- `aefi`: facility, serious (yes/no)
- `appt`: appointment status
- `verify`: verification outcome (programme '')

No row is shared between workers: a batch's differences are appended to
`programme_rollup_delta` (plain INSERTs, never an update of a row another worker also updates),
readers add the deltas to the folded rows (`merged`), and one worker at a time folds the
deltas into `programme_rollup` (`compact`, at most every `COMPACT_SECONDS` per process, under a
PostgreSQL advisory lock tried without waiting: the others skip their turn). Before, every
worker updated the same day's rows in place and queued behind the others until they committed.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from open_registry.core import storage
from open_registry.core.codec import parse_datetime
from open_registry.plugins.programme import counters
from open_registry.plugins.programme.activation import rate_key
from open_registry.plugins.programme.runtime import (
    APPOINTMENT,
    CERTIFICATE,
    FACILITY,
    RECIPIENT,
    SIDE_EFFECT,
    STOCK,
    VACCINATION,
    Programme,
)
from open_registry.plugins.programme.tables import (
    ROLLUP_KEYS,
    claim,
    fact,
    insert_for,
    rollup,
    rollup_delta,
    rollup_rows,
)

TRACKED = (VACCINATION, CERTIFICATE, SIDE_EFFECT, APPOINTMENT)
Part = tuple[str, str, str, str, str, str, str]  # rollup, day, program, k1..k4

#: seconds between two compactions by one process (`compact`)
COMPACT_SECONDS = 5.0
#: deltas folded in by one compaction at most (the rest wait for the next one)
COMPACT_ROWS = 50_000
#: the PostgreSQL advisory lock key compactions take turns under (any fixed number)
COMPACT_LOCK_KEY = 0x726F6C6C
_compacted: dict[int, float] = {}  # id(engine) -> when this process last compacted
_compacted_lock = threading.Lock()


def add_deltas(conn: Connection, deltas: Mapping[tuple[Any, ...], int]) -> int:
    """Append `deltas` (and their month level) to the rollups' delta table: INSERTs only, so
    concurrent workers never wait on each other here. Returns the rows appended."""
    rows = rollup_rows(deltas)
    for i in range(0, len(rows), 500):
        conn.execute(rollup_delta.insert(), rows[i : i + 500])
    return len(rows)


def merged() -> sa.Subquery:
    """What readers count: the folded rollup rows plus the deltas not folded in yet (same
    columns as `programme_rollup`; a key may appear several times: sum `n`)."""
    cols = [*ROLLUP_KEYS, "n"]
    return sa.union_all(
        sa.select(*(rollup.c[c] for c in cols)),
        sa.select(*(rollup_delta.c[c] for c in cols)),
    ).subquery("rollups")


def compact(conn: Connection, *, limit: int = COMPACT_ROWS) -> int | None:
    """Fold up to `limit` deltas into the rollup rows, in `conn`'s transaction; returns how many
    were folded, or None when another process is compacting (PostgreSQL: its advisory lock is
    taken until the transaction ends, without waiting). Deltas other transactions have not
    committed are not seen, so they wait for the next compaction; readers see the deltas or
    the folded rows, never both (one commit)."""
    if conn.dialect.name == "postgresql":
        turn = conn.execute(sa.select(sa.func.pg_try_advisory_xact_lock(COMPACT_LOCK_KEY)))
        if not turn.scalar():
            return None
    ids = sa.select(rollup_delta.c.id).order_by(rollup_delta.c.id).limit(limit)
    if conn.dialect.name == "postgresql":
        taken = conn.execute(
            sa.delete(rollup_delta)
            .where(rollup_delta.c.id.in_(ids.scalar_subquery()))
            .returning(*(rollup_delta.c[c] for c in ROLLUP_KEYS), rollup_delta.c.n)
        ).all()
    else:  # one writer: read, then delete what was read
        top = conn.execute(sa.select(sa.func.max(ids.subquery().c.id))).scalar()
        if top is None:
            return 0
        taken = conn.execute(
            sa.select(*(rollup_delta.c[c] for c in ROLLUP_KEYS), rollup_delta.c.n).where(
                rollup_delta.c.id <= top
            )
        ).all()
        conn.execute(sa.delete(rollup_delta).where(rollup_delta.c.id <= top))
    sums: dict[tuple[Any, ...], int] = {}
    for *key, n in taken:
        sums[tuple(key)] = sums.get(tuple(key), 0) + int(n)
    rows = [dict(zip(ROLLUP_KEYS, k, strict=True), n=n) for k, n in sorted(sums.items()) if n]
    if rows:
        stmt = insert_for(conn, rollup)
        stmt = stmt.on_conflict_do_update(
            index_elements=list(ROLLUP_KEYS), set_={"n": rollup.c.n + stmt.excluded.n}
        )
        for i in range(0, len(rows), 500):
            conn.execute(stmt, rows[i : i + 500])
    return len(taken)


def compact_due(conn: Connection, every: float = COMPACT_SECONDS) -> int | None:
    """`compact` when this process last did `every` seconds ago or more; else None."""
    key = id(conn.engine)
    now = time.monotonic()
    with _compacted_lock:
        if now - _compacted.get(key, -every) < every:
            return None
        _compacted[key] = now
    return compact(conn)


def _part(rollup: str, day: date, program: str | None, *keys: Any) -> Part:
    ks = [("" if k is None else str(k))[:100] for k in keys] + [""] * (4 - len(keys))
    return (rollup, day.isoformat(), program or "", ks[0], ks[1], ks[2], ks[3])


def age_on(record: dict[str, Any], day: date) -> int | None:
    """Whole years of age on `day`, from the date of birth (or the year of birth)."""
    dob = record.get("dob")
    if dob:
        born = date.fromisoformat(dob)
        return day.year - born.year - ((day.month, day.day) < (born.month, born.day))
    yob = record.get("yob")
    return day.year - yob if isinstance(yob, int) else None


class Rollups:
    """Brings the rollups up to date with a batch of outbox events."""

    def __init__(self, rt: Programme):
        self.rt = rt
        self.config = rt.config

    def _day(self, value: str | datetime) -> date:
        when = parse_datetime(value) if isinstance(value, str) else value
        return self.config.local_day(when)

    # -- contributions of one record ------------------------------------------------------
    def vaccination_parts(
        self, v: dict[str, Any], recipients: dict[Any, Any], facilities: dict[Any, Any]
    ) -> list[Part]:
        day = self._day(v["date"])
        program = v.get("program")
        person = recipients.get(v.get("recipient"), {})
        place = facilities.get(v.get("facility"), {})
        address = place.get("address") or {}
        band = self.config.age_band(age_on(person, day))
        return [
            _part("dose", day, program, v.get("vaccine"), v.get("dose")),
            _part(
                "place",
                day,
                program,
                v.get("facility"),
                address.get("district"),
                address.get("state"),
            ),
            _part("people", day, program, person.get("gender") or "Unknown", band),
        ]

    def certificate_parts(self, c: dict[str, Any]) -> list[Part]:
        program = c.get("program")
        kind = "corrected" if (c.get("revision") or 1) > 1 else "issued"
        parts = [_part("cert", self._day(c["issuedAt"]), program, kind)]
        changed = c.get("changedAt")
        if c.get("status") == "revoked" and not c.get("replacedBy") and changed:
            parts.append(_part("cert", self._day(changed), program, "revoked"))
        elif c.get("status") == "suspended" and changed:
            parts.append(_part("cert", self._day(changed), program, "suspended"))
        return parts

    def side_effect_parts(self, s: dict[str, Any]) -> list[Part]:
        day = self._day(s["_createdAt"])
        serious = "yes" if s.get("serious") or s.get("seriousness") else "no"
        return [_part("aefi", day, s.get("program"), s.get("facility"), serious)]

    def appointment_parts(self, a: dict[str, Any]) -> list[Part]:
        when = a.get("date") or a.get("dueFrom")
        if not when:
            return []
        return [_part("appt", date.fromisoformat(when), a.get("program"), a.get("status"))]

    # -- a batch ----------------------------------------------------------------------------
    def apply(
        self, conn: Connection, events: Iterable[dict[str, Any]]
    ) -> dict[str, dict[str, dict[str, Any]]]:
        """Bring the rollups up to date with `events`; returns the live records read, by entity
        and id (the follow-ups use them too)."""
        wanted: dict[str, set[str]] = {}
        for e in events:
            if e["entity"] in TRACKED and e["entity"] in self.rt.services:
                wanted.setdefault(e["entity"], set()).add(e["record_id"])
        seen: dict[str, dict[str, dict[str, Any]]] = {}
        if not wanted:
            return seen
        deltas: Counter[Part] = Counter()
        for entity, ids in sorted(wanted.items()):
            current = seen[entity] = self.rt.fetch(conn, entity, "id", ids)
            old = self._old_parts(conn, entity, sorted(ids))
            new = self._new_parts(conn, entity, current)
            if entity == VACCINATION:
                self._settle_vaccination_claims(conn, ids, current)
            elif entity == APPOINTMENT:
                for rid in ids - set(current):
                    counters.release(conn, counters.SLOT, rid)
                    counters.release(conn, counters.BOOKING, rid)
            changed = {
                rid: (old.get(rid), new.get(rid))
                for rid in sorted(ids)
                if old.get(rid) != new.get(rid)
            }
            for before, after in changed.values():
                # parts are tuples already, old (_old_parts) and new (_part)
                deltas.update(Counter(after or []))
                deltas.subtract(Counter(before or []))
            self._store(conn, entity, changed)
        add_deltas(conn, {k: n for k, n in deltas.items() if n})
        compact_due(conn)
        return seen

    def _old_parts(self, conn: Connection, entity: str, ids: list[str]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        for i in range(0, len(ids), 500):
            stmt = sa.select(fact.c.record_id, fact.c.parts).where(
                fact.c.entity == entity, fact.c.record_id.in_(ids[i : i + 500])
            )
            if conn.dialect.name == "postgresql":
                stmt = stmt.with_for_update()
            out.update({rid: [tuple(p) for p in parts] for rid, parts in conn.execute(stmt)})
        return out

    def _new_parts(
        self, conn: Connection, entity: str, current: dict[str, dict[str, Any]]
    ) -> dict[str, list[Part]]:
        records = list(current.values())
        if entity == VACCINATION:
            recipients = self.rt.fields_of(
                conn,
                RECIPIENT,
                "id",
                (v.get("recipient") for v in records),
                ["gender", "dob", "yob"],
            )
            facilities = self.rt.fields_of(
                conn, FACILITY, "code", (v.get("facility") for v in records), ["address"]
            )
            return {v["id"]: self.vaccination_parts(v, recipients, facilities) for v in records}
        if entity == CERTIFICATE:
            return {c["id"]: self.certificate_parts(c) for c in records}
        if entity == SIDE_EFFECT:
            return {s["id"]: self.side_effect_parts(s) for s in records}
        return {a["id"]: self.appointment_parts(a) for a in records}

    def _store(self, conn: Connection, entity: str, changed: dict[str, tuple[Any, Any]]) -> None:
        """Remember what each changed record contributes now."""
        gone = [rid for rid, (_, after) in changed.items() if after is None]
        new = [
            {"entity": entity, "record_id": rid, "parts": [list(p) for p in after]}
            for rid, (before, after) in changed.items()
            if before is None and after is not None
        ]
        moved = [
            {"e": entity, "r": rid, "parts": [list(p) for p in after]}
            for rid, (before, after) in changed.items()
            if before is not None and after is not None
        ]
        if gone:
            conn.execute(sa.delete(fact).where(fact.c.entity == entity, fact.c.record_id.in_(gone)))
        if new:
            conn.execute(fact.insert(), new)
        if moved:
            conn.execute(
                sa.update(fact)
                .where(fact.c.entity == sa.bindparam("e"), fact.c.record_id == sa.bindparam("r"))
                .values(parts=sa.bindparam("parts")),
                moved,
            )

    def _settle_vaccination_claims(
        self, conn: Connection, ids: set[str], current: dict[str, dict[str, Any]]
    ) -> None:
        """Deleted vaccinations give their day's place and their dose back; vaccinations that
        bypassed the write checks (a bulk import) are counted, over the rate if need be."""
        gone = sorted(ids - set(current))
        if gone:
            rows = conn.execute(
                sa.select(claim.c.kind, claim.c.record_id).where(
                    claim.c.kind.in_([counters.RATE, counters.BATCH]),
                    claim.c.record_id.in_(gone),
                )
            ).all()
            for kind, rid in sorted(rows):
                counters.release(conn, kind, rid)
        if not current:
            return
        if self.config.enforce_activation:
            counters.force_many(
                conn,
                counters.RATE,
                {
                    rid: rate_key(v["facility"], v["program"], self._day(v["date"]))
                    for rid, v in current.items()
                },
            )
        if self.config.stock != "off" and self.rt.has(STOCK):
            places = {v["facility"] for v in current.values()}
            lots = {
                (lot["facility"], lot["batch"]): lot
                for lot in self.rt.fetch_all(conn, STOCK, "facility", places)
            }
            counters.force_many(
                conn,
                counters.BATCH,
                {
                    rid: lots[(v["facility"], v["batch"])]["id"]
                    for rid, v in current.items()
                    if (v["facility"], v["batch"]) in lots
                },
            )


def rebuild(rt: Programme, chunk: int = 500) -> dict[str, int]:
    """Count the rollups again from the records (after a restore, or a change of `age_bands`
    or `timezone`): the facts and rollups are emptied (verification counts are kept, they have
    no records), then every live record of the tracked entities is applied in chunks, each
    committed. Workers may run meanwhile: both settle each record against its fact. Returns
    the records applied by entity."""
    engine = rt.registry.db.engine
    with storage.write(engine) as conn:
        rt.ensure(conn)
        conn.execute(sa.delete(fact))
        conn.execute(sa.delete(rollup).where(rollup.c.rollup.notin_(["verify", "verify/m"])))
        conn.execute(sa.delete(rollup_delta))  # (verification counts are never deltas)
    rollups = Rollups(rt)
    done: dict[str, int] = {}
    for entity in TRACKED:
        if entity not in rt.services:
            continue
        table = rt.services[entity].table
        last = ""
        done[entity] = 0
        while True:
            with storage.write(engine) as conn:
                ids = [
                    r
                    for (r,) in conn.execute(
                        sa.select(table.c.id)
                        .where(table.c._deleted_at.is_(None), table.c.id > last)
                        .order_by(table.c.id)
                        .limit(chunk)
                    )
                ]
                if not ids:
                    break
                rollups.apply(
                    conn,
                    [{"entity": entity, "record_id": i, "event": f"{entity}.updated"} for i in ids],
                )
            done[entity] += len(ids)
            last = ids[-1]
    with storage.write(engine) as conn:
        compact(conn)
    return done
