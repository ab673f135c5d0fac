"""Deliveries: follow-up work that leaves the database (an SMS, an email, a webhook call, a
document pushed to a vault), one row per (event, destination), each retried on its own.

A plugin reacting to an outbox event (`after_write` / `after_write_batch`) does not call the
outside world in the worker's transaction: it `enqueue`s a delivery there, so the delivery commits
with the event's `done` mark (a committed record is never without its follow-up, and the follow-up
is queued once). The `Dispatcher` then sends each delivery OUTSIDE any transaction: it claims the
row with a lease (a short transaction), calls the named sender (`register_senders`), and settles
the row (another short transaction): `done`, or back to `pending` after exponential back-off, or
`dead` after `max_attempts`. So a slow gateway never holds SQLite's write lock, and a failing
webhook never rolls back a certificate or re-sends an SMS that already went out.

Every delivery has a stable `key` (sink, destination and the event's `seq`): senders send it as
the `Idempotency-Key` header (or an email's Message-ID). A worker that dies between the send and
the settle leaves the row `sending`; when its lease runs out another worker sends it again with
the same key, and the receiver drops the duplicate. Nothing is lost; nothing is applied twice by
a receiver that honours the key.

The lease is tied to the sender's own time limit, so a crash delays a delivery by about that
long, not by a fixed hold: a sender declares the longest one call of it may take
(`timed(sender, seconds)`, seconds being a number or a function of the delivery and the
registry, e.g. 3 x an adapter's HTTP timeout), and a delivery claimed for it is leased for that
plus `LEASE_GRACE`. A sender that declares nothing gets `LEASE_SECONDS`. The deliveries of one
claim are sent one after the other, so each one's lease also covers the declared time of those
before it in the claim, and a claim takes no more deliveries than fit in `LEASE_SECONDS` (at
least one). A lease never ends while its worker may still be sending (the sender keeps to its
declared time), so a delivery is sent again only after its worker died or gave up: at most
once at a time per idempotency key.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from open_registry.core import observability, storage
from open_registry.core.codec import utcnow
from open_registry.generators.tables import UTCDateTime, json_type

log = logging.getLogger("registry.deliveries")

TABLE = "registry_delivery"
MAX_ATTEMPTS = 8
BASE_DELAY = 2.0  # seconds; attempt n waits BASE_DELAY * 2**(n-1), capped
MAX_DELAY = 3600.0
#: how long a claimed delivery stays with its worker when its sender declares no time limit
#: (`timed`); past it, another worker may send it again. Also the most one claim may lease.
LEASE_SECONDS = 300.0
#: added to a sender's declared time: settling the delivery after the send (the write lock)
LEASE_GRACE = 15.0
#: the attribute `timed` puts on a sender
TIMEOUT_ATTRIBUTE = "delivery_timeout"
STATUSES = ("pending", "sending", "done", "dead")

Sender = Callable[[dict[str, Any], Any], Any]
#: a sender's declared time limit: seconds, or seconds for (delivery, registry)
SenderTimeout = float | Callable[[dict[str, Any], Any], float]


def timed(sender: Sender, seconds: SenderTimeout) -> Sender:
    """Declare the longest one call of `sender` may take (it must keep to it: its own HTTP
    timeouts and the like), so that a delivery interrupted by a crash is sent again about that
    long after its claim; returns `sender`. `seconds` may be a function of the delivery and the
    registry (a webhook subscription's own timeout)."""
    setattr(sender, TIMEOUT_ATTRIBUTE, seconds)
    return sender


def declared_seconds(
    sender: Sender | None, delivery: dict[str, Any], registry: Any
) -> float | None:
    """What `sender` declared with `timed` for `delivery` (None: nothing, or nothing usable)."""
    declared = getattr(sender, TIMEOUT_ATTRIBUTE, None)
    if declared is None:
        return None
    try:
        value = float(declared(delivery, registry) if callable(declared) else declared)
    except Exception as exc:  # a broken setting: the sender will say so when it is called
        log.debug("delivery %s: no declared time limit (%s)", delivery.get("id"), exc)
        return None
    return value if value > 0 else None


class DeliveryError(Exception):
    """A delivery failed in a way worth retrying (the message says why, without secrets)."""


class PermanentDeliveryError(DeliveryError):
    """A delivery that can never succeed (a 4xx answer, an address that does not exist): it is
    parked as dead at once instead of being retried."""


def delivery_table(metadata: sa.MetaData) -> sa.Table:
    """Add the delivery table to `metadata` (next to the outbox)."""
    if TABLE in metadata.tables:
        return metadata.tables[TABLE]
    table = sa.Table(
        TABLE,
        metadata,
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("key", sa.String(300), nullable=False, unique=True),
        sa.Column("sink", sa.String(60), nullable=False),
        sa.Column("event_seq", sa.BigInteger),
        sa.Column("event", sa.String(40)),
        sa.Column("entity", sa.String(100)),
        sa.Column("record_id", sa.String(36)),
        sa.Column("version", sa.Integer),
        sa.Column("payload", json_type()),
        sa.Column("status", sa.String(20), nullable=False, default="pending"),
        sa.Column("attempts", sa.Integer, nullable=False, default=0),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("available_at", UTCDateTime(), nullable=False),
        sa.Column("lease_until", UTCDateTime()),
        sa.Column("done_at", UTCDateTime()),
        sa.Column("last_error", sa.Text),
        sa.Column("result", sa.String(500)),
    )
    sa.Index("ix_registry_delivery_due", table.c.status, table.c.available_at)
    return table


def backoff(attempts: int, base: float = BASE_DELAY) -> float:
    """Seconds to wait before attempt `attempts + 1`: `base` doubled per attempt, capped at an
    hour (deliveries and outbox events alike)."""
    return min(MAX_DELAY, base * 2 ** max(0, attempts - 1))


def delivery_key(sink: str, target: str, event: Mapping[str, Any]) -> str:
    """The stable idempotency key of one event sent to one destination."""
    return f"{sink}:{target}:{event['seq']}"[:300]


def enqueue(
    connection: Connection,
    registry: Any,
    sink: str,
    key: str,
    event: Mapping[str, Any] | None = None,
    payload: Mapping[str, Any] | None = None,
) -> bool:
    """Queue a delivery in the caller's transaction; False if `key` is queued already.

    `payload` is stored as it is: put references (entity, record id, template) in it, never
    private values (they are read, decrypted, when the delivery is sent).
    """
    table = registry.db.metadata.tables[TABLE]
    now = utcnow()
    values = {
        "key": key,
        "sink": sink,
        "event_seq": event.get("seq") if event else None,
        "event": event.get("event") if event else None,
        "entity": event.get("entity") if event else None,
        "record_id": event.get("record_id") if event else None,
        "version": event.get("version") if event else None,
        "payload": dict(payload or {}),
        "status": "pending",
        "attempts": 0,
        "created_at": now,
        "available_at": now,
    }
    dialect = connection.dialect.name
    if dialect in ("sqlite", "postgresql"):
        insert: Any
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert
        stmt = insert(table).values(**values).on_conflict_do_nothing(index_elements=["key"])
        return bool(connection.execute(stmt).rowcount)
    found = connection.execute(sa.select(table.c.id).where(table.c.key == key)).first()
    if found:
        return False
    connection.execute(table.insert().values(**values))
    return True


class Dispatcher:
    """Sends due deliveries of one registry: claim (lease) -> send -> settle."""

    def __init__(
        self,
        registry: Any,
        *,
        max_attempts: int = MAX_ATTEMPTS,
        base_delay: float = BASE_DELAY,
        lease_seconds: float = LEASE_SECONDS,
        clock: Callable[[], Any] = utcnow,
    ):
        self.registry = registry
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.lease_seconds = lease_seconds
        self.lease = timedelta(seconds=lease_seconds)
        self.clock = clock
        self.table = delivery_table(registry.db.metadata)
        self.engine = registry.db.engine
        self._senders: dict[str, Sender] | None = None

    @property
    def senders(self) -> dict[str, Sender]:
        if self._senders is None:
            found: dict[str, Sender] = {}
            for contributed in self.registry.pm.hook.register_senders(registry=self.registry):
                found.update(contributed or {})
            self._senders = found
        return self._senders

    def send_seconds(self, delivery: dict[str, Any]) -> float:
        """The longest sending `delivery` may take: its sender's declared time (`timed`), or
        `lease_seconds` when it declares none."""
        declared = declared_seconds(self.senders.get(delivery["sink"]), delivery, self.registry)
        return self.lease_seconds if declared is None else declared

    def claim(self, limit: int = 20) -> list[dict[str, Any]]:
        """Take up to `limit` due deliveries (pending and due, or sending with a lapsed lease),
        leased for their senders' declared times (see the module's doc): the n-th until the
        times of the first n have passed, plus `LEASE_GRACE`; no more than fit in
        `lease_seconds` (at least one)."""
        t, now = self.table, self.clock()
        due = sa.or_(
            sa.and_(t.c.status == "pending", t.c.available_at <= now),
            sa.and_(t.c.status == "sending", t.c.lease_until <= now),
        )
        stmt = sa.select(t).where(due).order_by(t.c.id).limit(limit)
        if self.engine.dialect.name == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)
        with storage.write(self.engine) as conn:
            found = [dict(r) for r in conn.execute(stmt).mappings()]
            rows: list[dict[str, Any]] = []
            leases: list[dict[str, Any]] = []
            elapsed = 0.0
            for r in found:
                elapsed += self.send_seconds(r)
                if rows and elapsed > self.lease_seconds:
                    break  # the rest stay due for the next claim (or another worker)
                rows.append(r)
                until = now + timedelta(seconds=elapsed + LEASE_GRACE)
                leases.append({"rid": r["id"], "until": until})
                r["lease_until"] = until
            if not rows:
                return []
            conn.execute(
                t.update()
                .where(t.c.id == sa.bindparam("rid"))
                .values(
                    status="sending",
                    attempts=t.c.attempts + 1,
                    lease_until=sa.bindparam("until"),
                ),
                leases,
            )
        for r in rows:
            r["attempts"] += 1
            r["status"] = "sending"
        return rows

    def send(self, delivery: dict[str, Any]) -> tuple[bool, str | None, bool]:
        """Call the delivery's sender: (succeeded, result or error text, permanent failure)."""
        sender = self.senders.get(delivery["sink"])
        if sender is None:
            return False, f"no sender named {delivery['sink']!r} is installed", False
        try:
            result = sender(delivery, self.registry)
        except Exception as exc:
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()[:2000]
            return False, detail, isinstance(exc, PermanentDeliveryError)
        return True, None if result is None else str(result)[:500], False

    def settle(
        self, delivery: dict[str, Any], ok: bool, detail: str | None, permanent: bool = False
    ) -> None:
        """Record the outcome of one send (unless another worker took the delivery meanwhile)."""
        t, now = self.table, self.clock()
        attempts = delivery["attempts"]
        if ok:
            values: dict[str, Any] = {
                "status": "done",
                "done_at": now,
                "lease_until": None,
                "last_error": None,
                "result": detail,
            }
        else:
            dead = permanent or attempts >= self.max_attempts
            delay = backoff(attempts, self.base_delay)
            log.warning(
                "delivery %s (%s) failed, attempt %d%s: %s",
                delivery["id"],
                delivery["key"],
                attempts,
                ", now dead" if dead else f", retry in {delay:.1f}s",
                detail,
            )
            values = {
                "status": "dead" if dead else "pending",
                "lease_until": None,
                "last_error": detail,
                "available_at": now + timedelta(seconds=delay),
            }
        with storage.write(self.engine) as conn:
            conn.execute(
                t.update()
                .where(t.c.id == delivery["id"], t.c.status == "sending", t.c.attempts == attempts)
                .values(**values)
            )
        outcome = "done" if ok else "dead" if values["status"] == "dead" else "retry"
        observability.delivery_settled(self.registry, delivery["sink"], outcome)  # metrics only

    def run_once(self, limit: int = 100) -> int:
        """Send up to `limit` due deliveries; returns how many were attempted."""
        done = 0
        while done < limit:
            batch = self.claim(min(20, limit - done))
            if not batch:
                break
            for delivery in batch:
                ok, detail, permanent = self.send(delivery)
                self.settle(delivery, ok, detail, permanent)
            done += len(batch)
        return done


def counts(registry: Any) -> dict[str, int]:
    """Deliveries by status."""
    t = delivery_table(registry.db.metadata)
    with registry.db.engine.connect() as conn:
        rows = conn.execute(sa.select(t.c.status, sa.func.count()).group_by(t.c.status)).all()
    return {status: n for status, n in rows}


def retry(registry: Any, delivery_id: int | None = None, sink: str | None = None) -> int:
    """Queue dead deliveries (all, one, or one sink's) again, due now; returns how many."""
    t = delivery_table(registry.db.metadata)
    where = [t.c.status == "dead"]
    if delivery_id is not None:
        where.append(t.c.id == delivery_id)
    if sink is not None:
        where.append(t.c.sink == sink)
    with storage.write(registry.db.engine) as conn:
        result = conn.execute(
            t.update().where(*where).values(status="pending", attempts=0, available_at=utcnow())
        )
    return int(result.rowcount or 0)
