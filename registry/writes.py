"""The write pipeline: every record write leaves its audit entry and outbox event the same way.

A write is a batch of `Change`s (`registry.events`): one for the API, thousands for an import.
The record service (`registry.records.EntityService.write_batch`) runs the write rules, stores
the rows and hands the changes here; imports of ready rows use the same service step with the
bulk strategy (`BulkWriter`: COPY on PostgreSQL, the driver's `executemany` on SQLite). Either
way the audit entries come from `registry.audit.chain` and the events from
`registry.outbox.queue`, in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from open_registry.core.audit import chain
from open_registry.core.events import Change
from open_registry.core.outbox import queue

#: PostgreSQL, a batch of one: the event, the locked head, the chained entry in one statement
_ONE_PG = chain.one_statement_append(chain.one_row_insert(queue.OUTBOX, "o_"))


def record(conn: Connection, changes: Sequence[Change]) -> None:
    """Log `changes` (statement strategy): their outbox events, then their audit entries."""
    if not changes:
        return
    if conn.dialect.name == "postgresql" and len(changes) == 1:
        (c,) = changes
        entry = chain.entry_of(c)
        event = chain.params(queue.event_of(c), queue.OUTBOX, "o_")
        if not chain.append_one(conn, _ONE_PG, entry, event):
            chain.append(conn, [entry])  # the first entry ever: the event is already in
        return
    queue.enqueue(conn, changes)
    chain.append(conn, [chain.entry_of(c) for c in changes])


@dataclass(slots=True)
class BulkBatch:
    """What a batch of changes leaves besides its rows, computed ahead of the write (it does not
    depend on the audit chain's head, which the write takes): the audit entries, not yet chained
    (`chain.entry_values`), and the outbox events (`queue.event_values`)."""

    entries: list[tuple[Any, ...]]
    contents: list[bytes]
    events: list[tuple[Any, ...]]

    def __len__(self) -> int:
        return len(self.entries)

    def subset(self, keep: Sequence[int]) -> BulkBatch:
        """The batch of the changes at positions `keep` (in order)."""
        return BulkBatch(
            [self.entries[i] for i in keep],
            [self.contents[i] for i in keep],
            [self.events[i] for i in keep],
        )


class BulkWriter:
    """The bulk strategy for ready rows of one table: the rows, their audit entries and their
    events with COPY (PostgreSQL) or the driver's `executemany` (SQLite), on a raw cursor of the
    caller's transaction. The caller holds the audit head (`chain.lock_head`)."""

    def __init__(self, dialect: Any, table: sa.Table, columns: Sequence[str]):
        self.postgres = dialect.name == "postgresql"
        q = dialect.identifier_preparer
        self.sql = [
            self._statement(q.format_table(t), [q.quote(c) for c in cols])
            for t, cols in (
                (table, columns),
                (chain.AUDIT, chain.COLUMNS),
                (queue.OUTBOX, queue.COLUMNS),
            )
        ]

    def _statement(self, table: str, columns: Sequence[str]) -> str:
        names = ", ".join(columns)
        if self.postgres:
            return f"COPY {table} ({names}) FROM STDIN"
        return f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))})"

    @staticmethod
    def prepare(changes: Sequence[Change], at: Any) -> BulkBatch:
        """The batch of `changes` (made at one time; `at`: the driver's form of it)."""
        entries, contents = chain.entry_values(changes, at)
        return BulkBatch(entries, contents, [queue.event_values(c, at) for c in changes])

    def write(self, cur: Any, rows: Sequence[tuple[Any, ...]], batch: BulkBatch, prev: str) -> str:
        """Insert `rows` (tuples in the table's column order, one per change of `batch`) and the
        entries and events of `batch`, chaining the entries on from the hash `prev`; returns
        the last entry's hash."""
        if not rows:
            return prev
        if len(rows) != len(batch):
            raise ValueError(f"{len(rows)} rows for a batch of {len(batch)} changes")
        entries = chain.chained_entries(batch.entries, batch.contents, prev)
        if not self.postgres:
            sealed = list(entries)
            for sql, data in zip(self.sql, (rows, sealed, batch.events), strict=True):
                cur.executemany(sql, data)
            return sealed[-1][-1]
        sealed = []
        keep = sealed.append
        with cur.copy(self.sql[0]) as copy:
            put = copy.write_row
            for row, entry in zip(rows, entries, strict=True):
                put(row)
                keep(entry)  # hashed while the server takes the rows sent before
        for sql, data in zip(self.sql[1:], (sealed, batch.events), strict=True):
            with cur.copy(sql) as copy:
                put = copy.write_row
                for r in data:
                    put(r)
        return sealed[-1][-1]
