"""Workers deliver the outbox: the follow-up work of committed writes, handed to `after_write`.

Events are claimed in batches, handed to every plugin's `after_write_batch` (the whole batch)
and `after_write` (each event) with the worker's connection, and marked done in ONE transaction:
what a plugin writes to the database commits together with the `done` marks, so follow-up work is
done once. A plugin that raises rolls its work back; the event
is retried with exponential back-off and, after `max_attempts`, parked as `dead` for an admin to
see and retry. On PostgreSQL many workers (threads or processes) claim disjoint events with
`FOR UPDATE SKIP LOCKED`; on SQLite one worker runs in the app process.

Side effects outside the database (an SMS, a webhook) are not made in that transaction: a plugin
queues a delivery (`registry.outbox.deliveries.enqueue`) that commits with the `done` mark,
and the same worker sends it afterwards, outside any transaction, with its own retries and a stable
idempotency key (`registry.outbox.deliveries`).
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from open_registry.core import idempotency, observability
from open_registry.core.audit import checkpoint as audit_checkpoint
from open_registry.core.audit import keys as audit_keys
from open_registry.core.codec import utcnow
from open_registry.core.outbox.deliveries import Dispatcher, backoff

log = logging.getLogger("registry.outbox")

MAX_ATTEMPTS = 8
BASE_DELAY = 1.0  # seconds; attempt n waits BASE_DELAY * 2**(n-1), capped
#: the largest batch a worker grows to while the queue stays deep (`Worker.max_batch_size`)
MAX_BATCH_SIZE = 800


class Worker:
    """Delivers outbox events of one registry; `run_once` is one pass, `run` loops until stopped.

    Batches start at `batch_size` events; while they come back full (the queue is deeper than a
    batch) each next one is twice as big, up to `max_batch_size`, and the first one that is not
    full goes back to `batch_size`. A deep queue is so drained in fewer, bigger transactions:
    the per-transaction costs (claim, settle, commit, the plugins' per-batch reads) are shared
    by more events, and on SQLite, where the worker thread queues for the one write lock among
    the server's request threads and gets it about once per round of them, each turn settles
    more events, so issuance keeps pace with the writes that made the events
    (benchmarks/national_day.py --db sqlite; docs/operations.md).
    """

    def __init__(
        self,
        registry: Any,
        *,
        name: str = "worker",
        max_attempts: int = MAX_ATTEMPTS,
        base_delay: float = BASE_DELAY,
        clock: Callable[[], Any] = utcnow,
        batch_size: int = 100,
        checkpoint_seconds: float | None = None,
        max_batch_size: int | None = None,
    ):
        self.registry = registry
        #: how often `run` signs an audit checkpoint (`registry.audit.checkpoint`); 0: never
        self.checkpoint_seconds = (
            audit_checkpoint.INTERVAL if checkpoint_seconds is None else checkpoint_seconds
        )
        self._checkpointed = time.monotonic()
        self.batch_size = batch_size
        #: a full batch doubles the next one, up to this (module default `MAX_BATCH_SIZE`)
        self.max_batch_size = max(batch_size, max_batch_size or MAX_BATCH_SIZE)
        self._size = batch_size  # the next batch's size
        self.name = name
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.clock = clock
        self.table = registry.db.metadata.tables["registry_outbox"]
        self.engine = registry.db.engine
        self.dispatcher = Dispatcher(registry, clock=clock)
        #: events this worker has claimed and settled (done, retried or dead) since it started
        self.delivered = 0
        self._stop = threading.Event()

    def _claim_stmt(self, limit: int) -> sa.Select[Any]:
        t = self.table
        stmt = (
            sa.select(t)
            .where(t.c.status == "pending", t.c.available_at <= self.clock())
            .order_by(t.c.seq)
            .limit(limit)
        )
        if self.engine.dialect.name == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)
        return stmt

    def _hand_over(self, events: list[dict[str, Any]], conn: Any) -> None:
        hook = self.registry.pm.hook
        hook.after_write_batch(events=events, connection=conn, registry=self.registry)
        for event in events:
            hook.after_write(event=event, connection=conn, registry=self.registry)

    def _failed(self, conn: Any, event: dict[str, Any], exc: Exception) -> None:
        attempts = event["attempts"] + 1
        dead = attempts >= self.max_attempts
        delay = backoff(attempts, self.base_delay)
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()[:2000]
        log.warning(
            "outbox event %s (%s) failed, attempt %d%s: %s",
            event["seq"],
            event["event"],
            attempts,
            ", now dead" if dead else f", retry in {delay:.1f}s",
            detail,
        )
        conn.execute(
            self.table.update()
            .where(self.table.c.seq == event["seq"])
            .values(
                status="dead" if dead else "pending",
                attempts=attempts,
                last_error=detail,
                available_at=self.clock() + timedelta(seconds=delay),
            )
        )
        observability.event_failed(self.registry, dead)  # metrics only

    def _done(self, conn: Any, events: list[dict[str, Any]]) -> None:
        t = self.table
        seqs = [e["seq"] for e in events]
        for i in range(0, len(seqs), 500):  # one statement per 500 events, not one per event
            conn.execute(
                t.update()
                .where(t.c.seq.in_(seqs[i : i + 500]))
                .values(status="done", attempts=t.c.attempts + 1, last_error=None)
            )
        observability.events_done(self.registry, len(seqs))  # metrics only

    def deliver_batch(self, limit: int = 100) -> int:
        """Claim up to `limit` due events, deliver and settle them; returns how many were claimed.

        One transaction: the plugins' work (in a savepoint) commits together with the `done`
        marks. If a plugin raises, the batch's work is rolled back and the events are delivered
        one by one, each in its own savepoint, so one bad event cannot hold back the others.
        """
        from open_registry.core import storage

        with storage.write(self.engine) as conn:
            events = [dict(r) for r in conn.execute(self._claim_stmt(limit)).mappings()]
            if not events:
                return 0
            try:
                with conn.begin_nested():
                    self._hand_over(events, conn)
            except Exception as exc:
                if len(events) == 1:
                    self._failed(conn, events[0], exc)
                    return 1
                ok = []
                for event in events:
                    try:
                        with conn.begin_nested():
                            self._hand_over([event], conn)
                    except Exception as one:
                        self._failed(conn, event, one)
                    else:
                        ok.append(event)
                if ok:
                    self._done(conn, ok)
                return len(events)
            self._done(conn, events)
        return len(events)

    def deliver_one(self) -> bool:
        """Claim, deliver and settle one due event; False when none was due."""
        return self.deliver_batch(1) == 1

    def run_once(self, limit: int | None = None, batch: int | None = None) -> int:
        """Deliver up to `limit` due events (default: one batch) in batches of `batch` (default:
        growing while they come back full, see the class); returns how many."""
        limit = self._size if limit is None else limit
        done = 0
        while done < limit and not self._stop.is_set():
            size = min(batch or self._size, limit - done)
            n = self.deliver_batch(size)
            if batch is None:
                full = n == size
                self._size = min(2 * self._size, self.max_batch_size) if full else self.batch_size
            if n == 0:
                break
            done += n
            self.delivered += n
        return done

    def send_due(self, limit: int = 100) -> int:
        """Send up to `limit` due deliveries (SMS, email, webhooks, ...); returns how many."""
        return self.dispatcher.run_once(limit)

    def run(self, poll_interval: float = 0.5) -> None:
        """Deliver events and send deliveries until `stop()`; sleeps when nothing is due."""
        while not self._stop.is_set():
            try:
                events = self.run_once()
                sent = self.send_due() if not self._stop.is_set() else 0
                idempotency.purge_expired(self.registry)  # expired keys; once a minute at most
                self.checkpoint_due()
                if not events and not sent:
                    self._stop.wait(poll_interval)
            except Exception:
                log.exception("outbox worker %s: pass failed", self.name)
                self._stop.wait(max(poll_interval, 1.0))

    def checkpoint_due(self) -> bool:
        """Sign an audit checkpoint when `checkpoint_seconds` have passed since this worker's
        last one (none when another process signed one meanwhile or no chain moved); whether
        one was written. A failure is logged, never raised: delivery goes on."""
        every = self.checkpoint_seconds
        if not every or time.monotonic() - self._checkpointed < every:
            return False
        self._checkpointed = time.monotonic()
        try:
            key = audit_keys.signing_key(self.registry.settings.data_dir)
            made = audit_checkpoint.record(self.engine, key, min_interval=every * 0.9)
        except Exception:
            log.exception("outbox worker %s: audit checkpoint failed", self.name)
            return False
        return made is not None

    def stop(self) -> None:
        self._stop.set()

    def start_thread(self, poll_interval: float = 0.5) -> threading.Thread:
        thread = threading.Thread(
            target=self.run, args=(poll_interval,), name=self.name, daemon=True
        )
        thread.start()
        return thread


def counts(registry: Any) -> dict[str, int]:
    """Events by status."""
    t = registry.db.metadata.tables["registry_outbox"]
    with registry.db.engine.connect() as conn:
        rows = conn.execute(sa.select(t.c.status, sa.func.count()).group_by(t.c.status)).all()
    return {status: n for status, n in rows}


def retry_dead(registry: Any) -> int:
    """Put dead events back in the queue, due now; returns how many."""
    from open_registry.core import storage

    t = registry.db.metadata.tables["registry_outbox"]
    with storage.write(registry.db.engine) as conn:
        result = conn.execute(
            t.update()
            .where(t.c.status == "dead")
            .values(status="pending", attempts=0, available_at=utcnow())
        )
    return int(result.rowcount or 0)


#: what the admin view shows of an event (never its payload's values: there are none, only
#: the names of the fields that changed)
_COLUMNS = (
    "seq",
    "event",
    "entity",
    "record_id",
    "version",
    "status",
    "attempts",
    "created_at",
    "available_at",
    "last_error",
)


def list_events(
    registry: Any, status: str | None = None, *, limit: int = 100, after: int | None = None
) -> list[dict[str, Any]]:
    """Events (of one status), oldest first, `after` a seq (keyset paging)."""
    t = registry.db.metadata.tables["registry_outbox"]
    stmt = sa.select(*(t.c[c] for c in _COLUMNS)).order_by(t.c.seq).limit(limit)
    if status:
        stmt = stmt.where(t.c.status == status)
    if after is not None:
        stmt = stmt.where(t.c.seq > after)
    with registry.db.engine.connect() as conn:
        return [dict(r) for r in conn.execute(stmt).mappings()]


def retry_event(registry: Any, seq: int) -> dict[str, Any] | None:
    """Queue one dead event again, due now; returns it, or None when there is no such event.

    Raises `ValueError` when the event is not dead (pending or done events are left alone)."""
    from open_registry.core import storage

    t = registry.db.metadata.tables["registry_outbox"]
    with storage.write(registry.db.engine) as conn:
        row = conn.execute(sa.select(t.c.status).where(t.c.seq == seq)).first()
        if row is None:
            return None
        if row[0] != "dead":
            raise ValueError(f"event {seq} is {row[0]}, not dead: there is nothing to retry")
        conn.execute(
            t.update()
            .where(t.c.seq == seq)
            .values(status="pending", attempts=0, available_at=utcnow())
        )
    return next(iter(list_events(registry, after=seq - 1, limit=1)), None)
