"""Putting events in the outbox: the one place that writes `registry_outbox` rows for writes.

An event row is derived from a `Change` (`event_of`); `enqueue` inserts them in the caller's
transaction, `event_values` gives them as tuples in `COLUMNS` order for the bulk strategy (COPY
on PostgreSQL, `executemany` on SQLite; see `registry.writes`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from open_registry.core import storage
from open_registry.core.events import Change

_MD = sa.MetaData()
storage.system_tables(_MD)
OUTBOX = _MD.tables["registry_outbox"]

#: the columns a new event fills, in the order `event_values` gives them
COLUMNS = (
    "created_at",
    "event",
    "entity",
    "record_id",
    "version",
    "payload",
    "status",
    "attempts",
    "available_at",
)


def event_of(change: Change) -> dict[str, Any]:
    """The outbox row of a write: pending, available at once."""
    return {
        "created_at": change.at,
        "event": change.event,
        "entity": change.entity,
        "record_id": change.record_id,
        "version": change.version,
        "payload": {"fields": list(change.fields)},
        "status": "pending",
        "attempts": 0,
        "available_at": change.at,
        "last_error": None,
    }


def event_values(change: Change, at: Any) -> tuple[Any, ...]:
    """`event_of` as a tuple in `COLUMNS` order, the payload as JSON text and both times as
    `at` (the driver's form of `change.at`)."""
    payload = '{"fields": ' + change.fields_json() + "}"
    return (at, change.event, change.entity, change.record_id, change.version, payload,
            "pending", 0, at)  # fmt: skip


def enqueue(conn: Connection, changes: Sequence[Change]) -> None:
    """Insert the events of `changes` in the caller's transaction."""
    if changes:
        conn.execute(OUTBOX.insert(), [event_of(c) for c in changes])
