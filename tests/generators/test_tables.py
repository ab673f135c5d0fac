"""Tables from entity schemas: the DDL of the shipped entities is snapshotted per dialect.

The snapshots live in `tests/generators/snapshots/<entity>.<dialect>.sql`. A change to
`generators/tables.py` (or to a shipped schema) that alters the DDL makes
`test_ddl_matches_snapshot` fail; review the change, then rewrite the snapshots with

    UPDATE_SNAPSHOTS=1 .venv/bin/pytest tests/generators/test_tables.py

and commit them with the change, so the diff of the generated SQL is part of the review.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.schema import CreateIndex, CreateTable

from open_registry.generators.schema import DRAFT_2020_12, EntitySchema, Field, parse_entity_schema
from open_registry.generators.tables import (
    UTCDateTime,
    build_metadata,
    build_table,
    column_type,
    index_name,
)

SNAPSHOTS = Path(__file__).parent / "snapshots"
DIALECTS: dict[str, Dialect] = {"sqlite": sqlite.dialect(), "postgresql": postgresql.dialect()}
SHIPPED = ["facility", "program", "recipient", "vaccinator", "vaccine"]


def ddl(table: sa.Table, dialect: Dialect) -> str:
    """CREATE TABLE then every CREATE INDEX (by name), as one SQL script (no trailing blanks)."""
    statements = [CreateTable(table).compile(dialect=dialect)]
    statements += [
        CreateIndex(ix).compile(dialect=dialect)
        for ix in sorted(table.indexes, key=lambda ix: str(ix.name))
    ]
    text = "\n".join(str(s).strip() + ";\n" for s in statements)
    return "\n".join(line.rstrip() for line in text.splitlines()) + "\n"


def compiled_type(column: sa.Column[Any], dialect: Dialect) -> str:
    return column.type.compile(dialect=dialect)


def entity(properties: dict[str, Any], xreg: dict[str, Any] | None = None, name: str = "thing"):
    doc = {"$schema": DRAFT_2020_12, "type": "object", "properties": properties}
    if xreg:
        doc["x-registry"] = xreg
    return parse_entity_schema(doc, name=name, source=f"{name}.json")


def table_of(e: EntitySchema, **kwargs: Any) -> sa.Table:
    return build_table(e, sa.MetaData(), **kwargs)


@pytest.mark.parametrize("dialect", sorted(DIALECTS))
@pytest.mark.parametrize("name", SHIPPED)
def test_ddl_matches_snapshot(shipped: dict[str, EntitySchema], name: str, dialect: str):
    got = ddl(table_of(shipped[name]), DIALECTS[dialect])
    path = SNAPSHOTS / f"{name}.{dialect}.sql"
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        SNAPSHOTS.mkdir(exist_ok=True)
        path.write_text(got, encoding="utf-8")
    assert path.exists(), f"no snapshot {path.name}; run with UPDATE_SNAPSHOTS=1 to create it"
    assert got == path.read_text(encoding="utf-8"), (
        f"DDL of {name} on {dialect} changed; if intended, rerun with UPDATE_SNAPSHOTS=1"
    )


def test_every_snapshot_belongs_to_a_shipped_entity():
    expected = {f"{n}.{d}.sql" for n in SHIPPED for d in DIALECTS}
    assert {p.name for p in SNAPSHOTS.glob("*.sql")} == expected


def test_table_has_system_columns_then_one_column_per_field(shipped: dict[str, EntitySchema]):
    facility = shipped["facility"]
    table = table_of(facility)
    system = [
        "id",
        "_version",
        "_created_at",
        "_updated_at",
        "_created_by",
        "_updated_by",
        "_deleted_at",
    ]
    assert [c.name for c in table.columns] == system + list(facility.fields)
    assert [c.name for c in table.primary_key] == ["id"]
    assert table.info == {"entity": "facility"}
    assert all(table.c[f].nullable for f in facility.fields)
    assert not table.c["_created_at"].nullable


@pytest.mark.parametrize("dialect", sorted(DIALECTS))
def test_unique_indexes_are_partial_over_live_rows(shipped: dict[str, EntitySchema], dialect: str):
    count = 0
    for e in shipped.values():
        for ix in table_of(e).indexes:
            sql = str(CreateIndex(ix).compile(dialect=DIALECTS[dialect]))
            if ix.unique:
                count += 1
                assert re.match(r'CREATE UNIQUE INDEX "?uq_', sql), sql
                assert sql.rstrip().endswith("WHERE _deleted_at IS NULL"), sql
            else:
                assert "WHERE" not in sql, sql
    assert count == sum(len(e.uniques) for e in shipped.values()) > 0


def test_composite_unique_and_index_cover_their_columns_in_order():
    e = entity(
        {"a": {"type": "string"}, "b": {"type": "integer"}},
        {"indexed": [["b", "a"]], "unique": [["a", "b"]]},
    )
    by_name = {ix.name: ix for ix in table_of(e).indexes}
    # a plain index ends with id, the lists' tie-breaker (a filtered page comes off it in order)
    assert [c.name for c in by_name["ix_thing_b_a"].columns] == ["b", "a", "id"]
    assert [c.name for c in by_name["uq_thing_a_b"].columns] == ["a", "b"]
    assert by_name["uq_thing_a_b"].unique
    assert "ix_thing__created_at" in by_name


def test_json_columns_are_jsonb_on_postgresql(shipped: dict[str, EntitySchema]):
    table = table_of(shipped["facility"])
    for column in ("address", "geoLocation", "admins", "programs"):
        assert compiled_type(table.c[column], DIALECTS["postgresql"]) == "JSONB"
        assert compiled_type(table.c[column], DIALECTS["sqlite"]) == "JSON"


def test_index_on_json_field_uses_gin_on_postgresql():
    e = entity({"tags": {"type": "array", "items": {"type": "string"}}}, {"indexed": ["tags"]})
    (ix,) = [ix for ix in table_of(e).indexes if ix.name == "ix_thing_tags"]
    assert "USING gin" in str(CreateIndex(ix).compile(dialect=DIALECTS["postgresql"]))
    assert "gin" not in str(CreateIndex(ix).compile(dialect=DIALECTS["sqlite"]))


def test_date_time_columns_are_time_zone_aware():
    e = entity(
        {
            "at": {"type": "string", "format": "date-time"},
            "day": {"type": "string", "format": "date"},
        }
    )
    table = table_of(e)
    for column in ("at", "_created_at", "_updated_at", "_deleted_at"):
        assert isinstance(table.c[column].type, UTCDateTime)
        assert compiled_type(table.c[column], DIALECTS["postgresql"]) == "TIMESTAMP WITH TIME ZONE"
    assert compiled_type(table.c["day"], DIALECTS["postgresql"]) == "DATE"


def test_utc_date_time_rejects_naive_and_stores_utc():
    col = UTCDateTime()
    pg, lite = DIALECTS["postgresql"], DIALECTS["sqlite"]
    with pytest.raises(ValueError, match="naive"):
        col.process_bind_param(datetime(2026, 1, 1, 9, 30), pg)
    ist = datetime(2026, 1, 1, 15, 0, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    assert col.process_bind_param(ist, pg) == datetime(2026, 1, 1, 9, 30, tzinfo=UTC)
    assert col.process_bind_param(ist, lite) == datetime(2026, 1, 1, 9, 30)  # SQLite: no zone
    assert col.process_result_value(datetime(2026, 1, 1, 9, 30), lite) == datetime(
        2026, 1, 1, 9, 30, tzinfo=UTC
    )
    assert col.process_result_value(ist, pg) == datetime(2026, 1, 1, 9, 30, tzinfo=UTC)
    assert col.process_bind_param(None, pg) is None
    assert col.process_result_value(None, pg) is None


@pytest.mark.parametrize(
    ("schema", "sql"),
    [
        ({"type": "string"}, "TEXT"),
        ({"type": "string", "maxLength": 32}, "VARCHAR(32)"),
        ({"type": "string", "maxLength": 4000}, "TEXT"),
        ({"type": "integer"}, "BIGINT"),
        ({"type": "number"}, "FLOAT(53)"),
        ({"type": "boolean"}, "BOOLEAN"),
        ({"type": "string", "format": "date"}, "DATE"),
        ({"type": "string", "format": "date-time"}, "TIMESTAMP WITH TIME ZONE"),
        ({"type": "object"}, "JSONB"),
        ({"type": ["integer", "null"]}, "BIGINT"),
    ],
)
def test_column_type_follows_the_field_kind(schema: dict[str, Any], sql: str):
    table = table_of(entity({"x": schema}))
    assert compiled_type(table.c["x"], DIALECTS["postgresql"]) == sql


def test_long_index_names_fit_postgresql_and_stay_distinct():
    long_entity = "e" * 63
    fields = {f"{c}{'f' * 60}": {"type": "string"} for c in "abc"}
    a, b, c = fields
    e = entity(
        fields, {"indexed": [[a, b], [a, c]], "unique": [[a, b], [a, c], c]}, name=long_entity
    )
    table = table_of(e)
    names = [str(ix.name) for ix in table.indexes]
    assert len(names) == 6
    assert len(set(names)) == len(names)
    assert all(len(n) <= 63 for n in names), names
    # compiles on PostgreSQL (SQLAlchemy raises for an explicit name over 63 characters)
    for ix in table.indexes:
        assert str(ix.name) in str(CreateIndex(ix).compile(dialect=DIALECTS["postgresql"]))


def test_index_name_is_stable_and_short_names_are_kept():
    assert index_name("facility", "uq", ["code"]) == "uq_facility_code"
    long = index_name("t" * 40, "ix", ["c" * 40])
    assert long == index_name("t" * 40, "ix", ["c" * 40])
    assert len(long) == 63
    assert long.startswith("ix_" + "t" * 40)
    assert long != index_name("t" * 40, "ix", ["c" * 39 + "d"])


def test_column_hook_overrides_a_type(shipped: dict[str, EntitySchema]):
    seen: list[str] = []

    def hook(f: Field) -> sa.types.TypeEngine[Any] | None:
        seen.append(f.name)
        return sa.Numeric(3, 2) if f.name == "averageRating" else None

    facility = shipped["facility"]
    table = table_of(facility, column_hook=hook)
    assert seen == list(facility.fields)
    assert compiled_type(table.c["averageRating"], DIALECTS["postgresql"]) == "NUMERIC(3, 2)"
    assert compiled_type(table.c["name"], DIALECTS["postgresql"]) == "VARCHAR(200)"
    assert str(table.c["name"].type) == str(column_type(facility.fields["name"]))


def test_build_metadata_holds_every_entity_table(shipped: dict[str, EntitySchema]):
    md = build_metadata(shipped.values())
    assert sorted(md.tables) == SHIPPED
    md2 = sa.MetaData()
    assert build_metadata(shipped.values(), metadata=md2) is md2


def test_tables_and_partial_unique_indexes_are_created_on_sqlite(shipped: dict[str, EntitySchema]):
    engine = sa.create_engine("sqlite://")
    try:
        build_metadata(shipped.values()).create_all(engine)
        inspector = sa.inspect(engine)
        assert sorted(inspector.get_table_names()) == SHIPPED
        uniques = {ix["name"] for ix in inspector.get_indexes("facility") if ix["unique"]}
        assert uniques == {"uq_facility_code"}
    finally:
        engine.dispose()
