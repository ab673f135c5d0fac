"""Planner statistics and list plans: start-up and imports leave statistics behind, and a
filtered page reads its rows off an index in order, however large the table (docs/scaling.md)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from open_registry.core import Settings, storage
from open_registry.core.app import Registry, open_registry
from open_registry.core.imports.importer import import_file
from tests.registry.test_imports import recipient_row, write_csv


def _facility_rows(n: int) -> list[dict[str, object]]:
    now = datetime.now(UTC)
    return [
        {
            "id": str(uuid.uuid4()),
            "_version": 1,
            "_created_at": now,
            "_updated_at": now,
            "code": f"F{i}",
            "name": f"Facility {i}",
            "category": "GOVT",
            "type": "Mobile",
            "status": ("Active", "Inactive")[i % 2],
            "address": {"state": "Northland"},
        }
        for i in range(n)
    ]


def _sqlite_stats(registry: Registry, table: str) -> list[tuple[str, str]]:
    with registry.db.engine.connect() as conn:
        present = conn.exec_driver_sql(
            "SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'"
        ).first()
        if present is None:
            return []
        rows = conn.exec_driver_sql(
            "SELECT idx, stat FROM sqlite_stat1 WHERE tbl = ?", (table,)
        ).all()
        return [(r[0], r[1]) for r in rows]


def test_sqlite_start_up_analyses_tables_that_have_rows_and_no_statistics(tmp_path: Path):
    # (PostgreSQL's autovacuum gathers statistics by itself)
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'registry.db'}",
        data_dir=tmp_path / "data",
        load_entrypoints=False,
        inline_worker=False,
    )
    reg = open_registry(settings)
    try:
        with storage.write(reg.db.engine) as conn:  # rows that no ANALYZE has seen
            conn.execute(reg.services["facility"].table.insert(), _facility_rows(30))
        assert _sqlite_stats(reg, "facility") == []
    finally:
        reg.close()
    reg = open_registry(settings)
    try:
        stats = dict(_sqlite_stats(reg, "facility"))
        assert stats["ix_facility_status"].split()[0] == "30"
        assert "program" not in {t for (t,) in _stat_tables(reg)}  # empty: nothing to learn
    finally:
        reg.close()


def _stat_tables(registry: Registry) -> list[tuple[str]]:
    with registry.db.engine.connect() as conn:
        return [(r[0],) for r in conn.exec_driver_sql("SELECT DISTINCT tbl FROM sqlite_stat1")]


def test_an_import_leaves_statistics_of_the_tables_it_wrote(registry: Registry, tmp_path: Path):
    path = write_csv(tmp_path / "r.csv", [recipient_row(i) for i in range(12)])
    assert import_file(registry.services["recipient"], path).inserted == 12
    if registry.db.dialect == "sqlite":
        for table in ("recipient", "registry_audit", "registry_outbox"):
            assert _sqlite_stats(registry, table), table
        return
    with registry.db.engine.connect() as conn:
        analysed = dict(
            conn.exec_driver_sql(
                "SELECT relname, last_analyze IS NOT NULL FROM pg_stat_user_tables "
                "WHERE relname IN ('recipient', 'registry_audit', 'registry_outbox')"
            ).all()
        )
        reltuples = conn.exec_driver_sql(
            "SELECT reltuples FROM pg_class WHERE relname = 'recipient'"
        ).scalar()
    assert analysed == {"recipient": True, "registry_audit": True, "registry_outbox": True}
    assert reltuples == 12
    # the columns plans use; not JSON values nor the ciphertext of private fields
    with registry.db.engine.connect() as conn:
        stats = {
            tuple(r)
            for r in conn.exec_driver_sql(
                "SELECT tablename, attname FROM pg_stats WHERE tablename IN "
                "('recipient', 'registry_audit', 'registry_outbox')"
            )
        }
    assert {("recipient", "name"), ("recipient", "_bi_identity"), ("registry_audit", "action"),
            ("registry_outbox", "status")} <= stats  # fmt: skip
    assert not {("recipient", "address"), ("recipient", "identity"), ("registry_audit", "fields"),
                ("registry_outbox", "payload")} & stats  # fmt: skip


def test_a_dry_run_import_analyses_nothing(make_registry: Any, tmp_path: Path):
    registry = make_registry(load_entrypoints=False)
    path = write_csv(tmp_path / "r.csv", [recipient_row(i) for i in range(3)])
    import_file(registry.services["recipient"], path, dry_run=True)
    assert _sqlite_stats(registry, "recipient") == []


def test_a_filtered_page_comes_off_the_index_in_order(registry: Registry):
    """`status = ? ORDER BY id LIMIT 51` walks (status, id): no sort of every matching row,
    with statistics or without; so does a deep page (its cursor is an index range)."""
    svc = registry.services["facility"]
    with storage.write(registry.db.engine) as conn:
        conn.execute(svc.table.insert(), _facility_rows(40))
    first = svc.search(svc.parser.from_params([("status", "Inactive"), ("limit", "5")]))
    assert first.next_cursor
    search = svc.parser.from_params(
        [("status", "Inactive"), ("limit", "5"), ("cursor", first.next_cursor)]
    )
    second = svc.search(search)
    ids = [r["id"] for r in first.items + second.items]
    assert ids == sorted(ids) and len(set(ids)) == 10
    sql = str(
        svc.sql.select(search).compile(registry.db.engine, compile_kwargs={"literal_binds": True})
    )
    with registry.db.engine.connect() as conn:
        if registry.db.dialect == "sqlite":
            plan = " | ".join(r[3] for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
            assert "ix_facility_status (status=? AND id>?)" in plan, plan
            assert "TEMP B-TREE" not in plan, plan
        else:
            conn.exec_driver_sql("SET enable_seqscan = off")  # 40 rows: force the index's case
            plan = " | ".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + sql))
            assert "ix_facility_status" in plan, plan
            assert "Sort" not in plan, plan


def test_newest_first_needs_no_sort_on_postgresql(registry: Registry):
    """`sort=-_createdAt`: no NULLS LAST on a NOT NULL column, so PostgreSQL reads the
    (_created_at, id) index backwards instead of sorting."""
    if registry.db.dialect != "postgresql":
        return
    svc = registry.services["facility"]
    search = svc.parser.from_params([("sort", "-_createdAt,-id")])
    sql = str(
        svc.sql.select(search).compile(registry.db.engine, compile_kwargs={"literal_binds": True})
    )
    assert "NULLS LAST" not in sql
    with registry.db.engine.connect() as conn:
        conn.exec_driver_sql("SET enable_sort = off")  # a plan without a sort, if there is one
        plan = " | ".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + sql))
    assert "Index Scan Backward using ix_facility__created_at" in plan, plan
    assert "Sort" not in plan, plan


def test_statistics_of_a_sqlite_table_are_renewed_when_it_grew_tenfold(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        conn.exec_driver_sql("CREATE INDEX ix_t_v ON t (v)")
        conn.exec_driver_sql("INSERT INTO t (v) VALUES ('a'), ('b')")
    raw = engine.raw_connection()
    try:
        assert storage.analyse_stale(raw.dbapi_connection) == ["t"]
        assert storage.analyse_stale(raw.dbapi_connection) == []  # analysed: nothing to do
        raw.dbapi_connection.executemany("INSERT INTO t (v) VALUES (?)", [("c",)] * 18)
        assert storage.analyse_stale(raw.dbapi_connection) == ["t"]  # 2 -> 20 rows
    finally:
        raw.close()
        engine.dispose()
