"""Every version of every entity schema, in the system table `registry_schema_version`.

One row per version: the schema document, who saved it and when, where it came from (`ui` for the
schema editor, or the file it was read from), the migration revision applied with it and the
planned changes in words. The primary key (entity, version) is what makes two editors saving at
once a clear conflict instead of a lost update: the second insert of the same version fails.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from open_registry.core import storage
from open_registry.core.codec import utcnow
from open_registry.core.errors import Conflict
from open_registry.core.storage import Database
from open_registry.generators.tables import UTCDateTime, json_type

HISTORY_TABLE = "registry_schema_version"
#: `origin` of a version saved in the schema editor
UI_ORIGIN = "ui"


def schema_history_table(metadata: sa.MetaData) -> sa.Table:
    """Add the schema history table to `metadata` (next to the audit log and the outbox)."""
    if HISTORY_TABLE in metadata.tables:
        return metadata.tables[HISTORY_TABLE]
    return sa.Table(
        HISTORY_TABLE,
        metadata,
        sa.Column("entity", sa.String(100), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("schema", json_type(), nullable=False),
        sa.Column("actor", sa.String(200)),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("origin", sa.String(1000), nullable=False),
        sa.Column("revision", sa.String(64)),
        sa.Column("changes", json_type()),
    )


@dataclass(frozen=True)
class SchemaVersion:
    """One stored version of an entity's schema."""

    entity: str
    version: int
    schema: Mapping[str, Any]
    actor: str | None
    at: datetime
    origin: str
    revision: str | None
    changes: Sequence[str]

    @property
    def from_ui(self) -> bool:
        return self.origin == UI_ORIGIN


@dataclass(frozen=True)
class NewVersion:
    """A version to record: the document, its origin, and (for files) when it was written."""

    schema: Mapping[str, Any]
    origin: str
    actor: str | None = None
    at: datetime | None = None
    changes: Sequence[str] = ()


class SchemaHistory:
    """Reads and writes the history table of one registry's database."""

    def __init__(self, db: Database):
        self.db = db

    @property
    def table(self) -> sa.Table:
        return schema_history_table(self.db.metadata)

    def _version(self, row: Any) -> SchemaVersion:
        return SchemaVersion(
            entity=row.entity,
            version=row.version,
            schema=row.schema,
            actor=row.actor,
            at=row.at,
            origin=row.origin,
            revision=row.revision,
            changes=tuple(row.changes or ()),
        )

    def versions(self, entity: str) -> list[SchemaVersion]:
        """Every version of `entity`, newest first."""
        t = self.table
        with storage.read(self.db.engine) as conn:
            rows = conn.execute(
                sa.select(t).where(t.c.entity == entity).order_by(t.c.version.desc())
            ).all()
        return [self._version(r) for r in rows]

    def get(self, entity: str, version: int) -> SchemaVersion | None:
        t = self.table
        with storage.read(self.db.engine, snapshot=False) as conn:
            row = conn.execute(
                sa.select(t).where(t.c.entity == entity, t.c.version == version)
            ).first()
        return self._version(row) if row is not None else None

    def latest(self, entity: str) -> SchemaVersion | None:
        t = self.table
        with storage.read(self.db.engine, snapshot=False) as conn:
            row = conn.execute(
                sa.select(t).where(t.c.entity == entity).order_by(t.c.version.desc()).limit(1)
            ).first()
        return self._version(row) if row is not None else None

    def latest_numbers(self) -> dict[str, int]:
        """The newest version number of every entity that has a history."""
        t = self.table
        with storage.read(self.db.engine) as conn:
            rows = conn.execute(
                sa.select(t.c.entity, sa.func.max(t.c.version)).group_by(t.c.entity)
            ).all()
        return {entity: number for entity, number in rows}

    def record(self, entity: str, expected: int, versions: Sequence[NewVersion]) -> list[int]:
        """Append `versions` after version `expected`, in one transaction; returns their numbers.

        Raises `Conflict` when the newest stored version is not `expected` any more (someone
        saved meanwhile, here or in another process).
        """
        t = self.table
        now = utcnow()
        numbers = [expected + i + 1 for i in range(len(versions))]
        try:
            with storage.write(self.db.engine) as conn:
                newest = conn.execute(
                    sa.select(sa.func.max(t.c.version)).where(t.c.entity == entity)
                ).scalar_one()
                if (newest or 0) != expected:
                    raise Conflict(
                        f"the schema of {entity} was saved meanwhile (now version {newest}, "
                        f"you started from version {expected})"
                    )
                conn.execute(
                    t.insert(),
                    [
                        {
                            "entity": entity,
                            "version": n,
                            "schema": dict(v.schema),
                            "actor": v.actor,
                            "at": v.at or now,
                            "origin": v.origin,
                            "revision": None,
                            "changes": list(v.changes),
                        }
                        for n, v in zip(numbers, versions, strict=True)
                    ],
                )
        except IntegrityError:
            raise Conflict(
                f"the schema of {entity} was saved meanwhile by someone else; reload it"
            ) from None
        return numbers

    def set_revision(self, entity: str, version: int, revision: str | None) -> None:
        t = self.table
        with storage.write(self.db.engine) as conn:
            conn.execute(
                t.update()
                .where(t.c.entity == entity, t.c.version == version)
                .values(revision=revision)
            )

    def forget(self, entity: str, numbers: Sequence[int]) -> None:
        """Remove versions recorded for a change that then failed (nothing else was applied)."""
        t = self.table
        with storage.write(self.db.engine) as conn:
            conn.execute(t.delete().where(t.c.entity == entity, t.c.version.in_(list(numbers))))
