"""A filtered list page as the registry runs it, at two table sizes: is it flat in table size?

Rows go straight into the registry's own SQLite database: `executemany` of ready rows into the
`facility` table the registry made (no validation, audit or outbox: the reads are measured, not
the load). Then the record service's `search` (what `GET /api/v1/facility?...` calls, without
HTTP) is timed for a first page of 50, p50 of `--reads` calls, for:

- `status=Inactive`            (a third of the rows),
- `status=Blocked`             (1% of the rows),
- `status=Active&sort=-_createdAt` (newest first).

Each on the same database in four set-ups, in this order:

- before:           the indexes as they were (one column: `status`, `_created_at`, ...) and no
                    planner statistics: what the issue measured;
- before+ANALYZE:   the same indexes, statistics gathered (`storage.analyse`);
- composite:        the indexes the registry makes now (`(status, id)`, `(_created_at, id)`, ...),
                    no statistics;
- as shipped:       composite indexes and statistics, as after an import or a start-up.

Prints each p50, the ratio large/small per set-up (target: at most 1.5 for "as shipped"), and
the ratio before/as-shipped at the large size. With PostgreSQL reachable (`--pg-url`), also
how many statements stay prepared over repeated checkouts, with psycopg's own rollback on
return (plain SQLAlchemy engine) against the registry's engine. Never asserts timings.

    .venv/bin/python benchmarks/lists.py --quick          # 5,000 and 50,000 rows (CI)
    .venv/bin/python benchmarks/lists.py                  # 10,000 and 1,000,000 rows
"""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import harness

QUERIES: dict[str, list[tuple[str, str]]] = {
    "status=Inactive": [("status", "Inactive")],
    "status=Blocked": [("status", "Blocked")],
    "status=Active&sort=-_createdAt": [("status", "Active"), ("sort", "-_createdAt")],
}
#: the plain indexes the registry made before they ended with `id` (name -> columns)
OLD_INDEXES = {
    "ix_facility_status": "status",
    "ix_facility_category": "category",
    "ix_facility_name": "name",
    "ix_facility__created_at": "_created_at",
}
SETUPS = ("before", "before+ANALYZE", "composite", "as shipped")


def load(reg: Any, n: int) -> float:
    """`n` facility rows into the registry's table by `executemany`; returns the seconds."""
    table = reg.services["facility"].table
    columns = [c.name for c in table.columns]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    began = time.perf_counter()
    raw = reg.db.engine.raw_connection()
    try:
        dbapi = raw.dbapi_connection
        placeholders = ", ".join("?" for _ in columns)
        names = ", ".join(f'"{c}"' for c in columns)
        sql = f"INSERT INTO facility ({names}) VALUES ({placeholders})"
        dbapi.execute("BEGIN")
        for first in range(0, n, 50_000):
            rows = []
            for i in range(first, min(n, first + 50_000)):
                at = (start + timedelta(seconds=i)).replace(tzinfo=None).isoformat(" ")
                status = "Blocked" if i % 100 == 0 else "Inactive" if i % 3 == 0 else "Active"
                values = {
                    "id": str(uuid.UUID(int=(i << 64) | 0x4000_8000_0000_0000)),
                    "_version": 1,
                    "_created_at": at,
                    "_updated_at": at,
                    "code": f"F{i}",
                    "name": f"Facility {i}",
                    "category": "GOVT" if i % 2 else "PRIVATE",
                    "type": "Fixed location",
                    "status": status,
                    "address": '{"state": "Northland"}',
                }
                rows.append(tuple(values.get(c) for c in columns))
            dbapi.executemany(sql, rows)
        dbapi.execute("COMMIT")
    finally:
        raw.close()
    return time.perf_counter() - began


def set_up(reg: Any, setup: str) -> None:
    """Indexes and statistics as `setup` says; the pool is emptied so that the next
    connections read the statistics afresh."""
    from open_registry.core import storage

    engine = reg.db.engine
    composite = setup in ("composite", "as shipped")
    with storage.write(engine) as conn:
        for name, column in OLD_INDEXES.items():
            conn.exec_driver_sql(f"DROP INDEX IF EXISTS {name}")
            cols = f'"{column}", id' if composite else f'"{column}"'
            conn.exec_driver_sql(f"CREATE INDEX {name} ON facility ({cols})")
        if conn.exec_driver_sql("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'").first():
            conn.exec_driver_sql("DELETE FROM sqlite_stat1")
    if setup in ("before+ANALYZE", "as shipped"):
        storage.analyse(engine, ["facility"])
    engine.dispose()


def p50_ms(reg: Any, params: list[tuple[str, str]], reads: int) -> float:
    svc = reg.services["facility"]
    search = svc.parser.from_params(params)
    svc.search(search)  # warm: plans, pages in the cache
    times = []
    for _ in range(reads):
        began = time.perf_counter()
        svc.search(search)
        times.append(time.perf_counter() - began)
    return harness.percentile(sorted(times), 50) * 1000


def sqlite_sizes(sizes: list[int], reads: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for n in sizes:
        with harness.scratch_folder() as tmp:
            reg = harness.open_bench_registry(harness.sqlite_url(tmp), tmp / "data")
            try:
                seconds = load(reg, n)
                print(f"  {n:>9,} rows loaded in {seconds:.1f} s (executemany)", flush=True)
                for setup in SETUPS:
                    set_up(reg, setup)
                    for label, params in QUERIES.items():
                        ms = p50_ms(reg, params, reads)
                        out.setdefault(setup, {}).setdefault(label, {})[n] = ms
                        print(f"    {setup:<15} {label:<32} p50 {ms:8.2f} ms", flush=True)
            finally:
                reg.close()
    return out


def prepared_statements(pg_url: str, reads: int) -> dict[str, Any] | None:
    """Statements prepared on the server after `reads` checkouts that each run the same query
    and close without a commit, and microseconds per read: a plain SQLAlchemy engine (psycopg
    rolls back on return, forgetting its statements) against the registry's."""
    problem = harness.pg_problem(pg_url)
    if problem:
        print(f"  PostgreSQL skipped: {problem}")
        return None
    import sqlalchemy as sa

    from open_registry.core import storage

    out: dict[str, Any] = {}
    with harness.scratch_folder() as tmp, harness.pg_database(pg_url) as url:
        settings = harness.settings(url, tmp, pool_size=1)
        engines = {
            # the same pool as the registry's (pre-ping included), psycopg's own rollback
            "plain SQLAlchemy": sa.create_engine(
                settings.sqlalchemy_url, pool_size=1, pool_pre_ping=True
            ),
            "registry": storage.make_engine(settings),
        }
        query = sa.text("SELECT relname FROM pg_class WHERE relname = :n AND relkind = 'r'")
        for name, engine in engines.items():
            began = time.perf_counter()
            for _ in range(reads):
                with engine.connect() as conn:
                    conn.execute(query, {"n": "pg_class"}).all()
            per_read = (time.perf_counter() - began) / reads * 1e6
            with engine.connect() as conn:
                prepared = conn.exec_driver_sql(
                    "SELECT count(*) FROM pg_prepared_statements"
                ).scalar()
            engine.dispose()
            out[name] = {"prepared": prepared, "us_per_read": per_read}
            print(
                f"  {name:<17} {reads} checkouts: {prepared} statement(s) prepared after, "
                f"{per_read:7.1f} us per checkout+read",
                flush=True,
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="5,000 and 50,000 rows, fewer reads")
    ap.add_argument("--sizes", default="", help="comma-separated table sizes (small,large)")
    ap.add_argument("--reads", type=int, default=0, help="timed reads per query and set-up")
    ap.add_argument("--pg-url", default=harness.pg_admin_url())
    ap.add_argument("--no-postgres", action="store_true")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s] or (
        [5_000, 50_000] if args.quick else [10_000, 1_000_000]
    )
    reads = args.reads or (30 if args.quick else 200)
    print(f"load average before: {os.getloadavg()}")
    print(f"SQLite, facility table, first page of 50, p50 of {reads} record-service searches")
    results = sqlite_sizes(sizes, reads)
    small, large = sizes[0], sizes[-1]
    print(f"\n{'set-up':<15} {'query':<32} {small:>10,} {large:>10,}   large/small")
    for setup in SETUPS:
        for label in QUERIES:
            a, b = results[setup][label][small], results[setup][label][large]
            print(f"{setup:<15} {label:<32} {a:8.2f}ms {b:8.2f}ms   {harness.ratio(b, a):6.2f}x")
    print(f"\nat {large:,} rows, before / as shipped (how many times faster now):")
    for label in QUERIES:
        before, now = results["before"][label][large], results["as shipped"][label][large]
        print(f"  {label:<32} {harness.ratio(before, now):8.1f}x")
    print("target: as shipped, large/small <= 1.5 (reported, not asserted)")
    pg = None
    if not args.no_postgres:
        print("\nPostgreSQL: prepared statements across checkouts")
        pg = prepared_statements(args.pg_url, 200 if args.quick else 2000)
    print(f"load average after: {os.getloadavg()}")
    print(json.dumps({"sizes": sizes, "reads": reads, "sqlite": results, "postgresql": pg}))


if __name__ == "__main__":
    main()
