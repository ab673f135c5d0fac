"""Tables from entity schemas (pure): SQLAlchemy Core `Table` objects, no engine, no I/O.

One table per entity: a typed column per top-level scalar property, JSON (JSONB on PostgreSQL)
for nested objects and arrays, and the system columns. Unique keys are partial unique indexes
over live rows (`_deleted_at IS NULL`), so a soft-deleted record does not block re-creating it.
Every other index on scalar columns ends with `id`, the lists' tie-breaker (and default order):
a filtered page (`status = ? ORDER BY id LIMIT 51`) or a page sorted by the indexed field reads
its rows from the index in order and stops, however many rows share the value.

A private field's column holds ciphertext (text, whatever the field's type); when the field is
indexed or unique, a `_bi_<field>` column holds its blind index (a keyed hash) and the index or
unique key is built on that column instead (see `registry.crypto`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator

from open_registry.generators.columns import blind_index_column, blind_indexed
from open_registry.generators.schema import EntitySchema, Field


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back time-zone aware (SQLite keeps no zone)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime; registry timestamps carry a time zone")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def json_type() -> sa.types.TypeEngine[Any]:
    """JSON, stored as JSONB on PostgreSQL; Python None is SQL NULL (an absent value), never
    JSON `null`, so `IS NULL` and element searches behave alike on both databases."""
    return sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def column_type(f: Field) -> sa.types.TypeEngine[Any]:
    """The SQL type of one field."""
    if f.kind == "string":
        return sa.String(f.max_length) if f.max_length and f.max_length <= 1000 else sa.Text()
    if f.kind == "integer":
        return sa.BigInteger()
    if f.kind == "number":
        return sa.Float(53)
    if f.kind == "boolean":
        return sa.Boolean()
    if f.kind == "date":
        return sa.Date()
    if f.kind == "datetime":
        return UTCDateTime()
    return json_type()


ColumnHook = Callable[[Field], sa.types.TypeEngine[Any] | None]


def system_columns() -> list[sa.Column[Any]]:
    """The columns every entity table has."""
    return [
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("_version", sa.Integer, nullable=False, default=1),
        sa.Column("_created_at", UTCDateTime(), nullable=False),
        sa.Column("_updated_at", UTCDateTime(), nullable=False),
        sa.Column("_created_by", sa.String(200)),
        sa.Column("_updated_by", sa.String(200)),
        sa.Column("_deleted_at", UTCDateTime()),
    ]


def build_table(
    entity: EntitySchema,
    metadata: sa.MetaData,
    *,
    column_hook: ColumnHook | None = None,
) -> sa.Table:
    """Add the table of `entity` to `metadata` and return it.

    `column_hook(field)` may return a type to override the default for a field (plugins supply
    field types this way); returning None keeps the default.
    """
    name = entity.table_name
    columns: list[sa.Column[Any]] = system_columns()
    private = set(entity.private)
    for f in entity.fields.values():
        if f.name in private:
            ctype: sa.types.TypeEngine[Any] = sa.Text()  # ciphertext
        else:
            ctype = (column_hook(f) if column_hook else None) or column_type(f)
        # Nullability is enforced by validation (and PATCH may leave old rows without a new
        # optional field), so columns stay nullable: a schema can tighten without a table rewrite.
        columns.append(sa.Column(f.name, ctype, nullable=True))
    blind = set(blind_indexed(entity))
    columns.extend(
        sa.Column(blind_index_column(f), sa.String(64)) for f in entity.private if f in blind
    )
    table = sa.Table(name, metadata, *columns, info={"entity": entity.name})
    live = table.c["_deleted_at"].is_(None)

    def col(field: str) -> sa.Column[Any]:
        return table.c[blind_index_column(field) if field in blind else field]

    for group in entity.indexes:
        nested = len(group) == 1 and not entity.fields[group[0]].is_scalar
        nested = nested and group[0] not in blind
        # A nested (JSON) field gets a GIN index on PostgreSQL, for containment searches.
        dialect_kw: dict[str, Any] = {"postgresql_using": "gin"} if nested else {}
        tie = [] if nested or "id" in group else [table.c["id"]]
        sa.Index(index_name(name, "ix", group), *(col(c) for c in group), *tie, **dialect_kw)
    for group in entity.uniques:
        sa.Index(
            index_name(name, "uq", group),
            *(col(c) for c in group),
            unique=True,
            sqlite_where=live,
            postgresql_where=live,
        )
    sa.Index(index_name(name, "ix", ("_created_at",)), table.c["_created_at"], table.c["id"])
    return table


def index_name(table: str, kind: str, columns: Iterable[str]) -> str:
    """A stable index name that fits PostgreSQL's 63-character limit."""
    cols = "_".join(columns)
    raw = f"{kind}_{table}_{cols}"
    if len(raw) <= 63:
        return raw
    digest = hashlib.sha1(raw.encode()).hexdigest()[:8]
    return f"{raw[:54]}_{digest}"


def build_metadata(
    entities: Iterable[EntitySchema],
    *,
    column_hook: ColumnHook | None = None,
    metadata: sa.MetaData | None = None,
) -> sa.MetaData:
    """All entity tables in one `MetaData`."""
    md = metadata if metadata is not None else sa.MetaData()
    for e in entities:
        build_table(e, md, column_hook=column_hook)
    return md
