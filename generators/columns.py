"""Column names and stored values that need no SQLAlchemy: what the import's worker process
uses to make table rows (`registry.imports.prepare`), which then starts without importing it
(about a fifth of a second). `generators.tables` builds its tables from these.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from open_registry.generators.schema import EntitySchema

#: system columns: API name -> column name
SYSTEM_COLUMNS = {
    "id": "id",
    "_version": "_version",
    "_createdAt": "_created_at",
    "_updatedAt": "_updated_at",
    "_createdBy": "_created_by",
    "_updatedBy": "_updated_by",
    "_deletedAt": "_deleted_at",
}


def blind_index_column(field: str) -> str:
    """The column holding the blind index (keyed hash) of a private field."""
    return f"_bi_{field}"


def blind_indexed(entity: EntitySchema) -> tuple[str, ...]:
    """The private fields that are indexed or unique, so get a blind index column."""
    keyed = {f for group in (*entity.indexes, *entity.uniques) for f in group}
    return tuple(f for f in entity.private if f in keyed)


def _sqlite_datetime(value: datetime) -> str:
    v = value.astimezone(UTC)
    return (
        f"{v.year:04d}-{v.month:02d}-{v.day:02d} "
        f"{v.hour:02d}:{v.minute:02d}:{v.second:02d}.{v.microsecond:06d}"
    )


def _postgres_datetime(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(sep=" ", timespec="microseconds")


def stored_datetime(dialect: str) -> Callable[[datetime], object]:
    """A time-zone-aware timestamp as the import writes it into a `tables.UTCDateTime` column
    on `dialect` (`sqlite`: UTC text, as SQLAlchemy writes it; else UTC ISO 8601 text with its
    offset, for COPY: the server reads it as the same instant, and psycopg formats text about
    three times faster than a datetime, five of which go with every imported row). A naive one
    is refused (`ValueError`), as the column type does."""

    convert = _sqlite_datetime if dialect == "sqlite" else _postgres_datetime

    def stored(value: datetime) -> object:
        if value.tzinfo is None:
            raise ValueError("naive datetime; registry timestamps carry a time zone")
        return convert(value)

    return stored
