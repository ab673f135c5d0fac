"""The monitoring dashboard over 10 million vaccinations on PostgreSQL: rollups against full
scans, measured in the same run on the same data.

What it builds, in a throwaway PostgreSQL database:

1. the registry with the demo data, plus `--facilities` facility and facility_programme
   records (through the services, so the utilisation table has real rates);
2. `bench_vaccination`, an UNLOGGED base table of `-n` synthetic vaccinations, already joined
   with what the rollups need (day, programme, facility, district, state, vaccine, dose, gender,
   age band), made on the server by INSERT ... SELECT over generate_series (no row travels from
   Python), with an index on the day as the real vaccination table has on its date. It is the
   baseline's input, and kinder to it than the real tables (no join with recipients and
   facilities);
3. the rollups of those vaccinations, by INSERT INTO programme_rollup SELECT ... GROUP BY over the
   base table, day level then month level: the rows the outbox path converges on.
   Certificates (one per vaccination), side effects (one in a thousand) and verifications are
   filled the same way.

Then it times, for the last 30 days and for the whole period:

- rollups: every aggregate of the dashboard (13 tables, `Analytics`), and the page itself
  (`GET /ui/dashboard`, rendering included), median of `--repeat` runs;
- full scan: the 4 vaccination aggregates (per day; per facility, district and state; per
  programme, vaccine and dose; per gender and age band) computed from the base table;

and the incremental path: vaccinations recorded through the services, their outbox events
applied to the rollups by `Rollups.apply` (what the worker does), in events per second.
Prints figures and ratios; never asserts timings.

    .venv/bin/python benchmarks/dashboard.py              # 10M vaccinations (a few minutes)
    .venv/bin/python benchmarks/dashboard.py -n 1000000 --repeat 3
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import harness
import sqlalchemy as sa
from fastapi.testclient import TestClient

from open_registry.core import create_app
from open_registry.plugins.programme.analytics import TABLES, Analytics, Period
from open_registry.plugins.programme.rollups import Rollups
from open_registry.plugins.programme.runtime import runtime

PG_ADMIN = harness.pg_admin_url("REGISTRY_TEST_PG_URL")
PROGRAMS = ("COVID19-2026", "MR-2026")
VACCINES = {"COVID19-2026": ("CVX-AV", "CVX-MR"), "MR-2026": ("MRV-2",)}
BANDS = ("0-17", "18-44", "45-59", "60+")
GENDERS = ("Female", "Male", "Other")

BASE_TABLE = """
CREATE UNLOGGED TABLE bench_vaccination (
    day date NOT NULL, program varchar(32) NOT NULL, facility varchar(32) NOT NULL,
    district varchar(100) NOT NULL, state varchar(100) NOT NULL, vaccine varchar(32) NOT NULL,
    dose int NOT NULL, gender varchar(10) NOT NULL, age_band varchar(10) NOT NULL)
"""

FILL = """
INSERT INTO bench_vaccination
SELECT CAST(:last AS date) - r.d, r.program, 'BF' || lpad(r.f::text, 5, '0'),
       'District ' || (r.f % 100), 'State ' || (r.f % 100 % 12),
       CASE WHEN r.program = 'MR-2026' THEN 'MRV-2'
            WHEN r.v < 0.7 THEN 'CVX-AV' ELSE 'CVX-MR' END,
       1 + (r.v * 1000)::int % 2,
       (ARRAY['Female', 'Male', 'Other'])[1 + (r.g * 100)::int % 3],
       (ARRAY['0-17', '18-44', '45-59', '60+'])[1 + (r.g * 1000)::int % 4]
FROM (
    SELECT (random() * (:days - 1))::int AS d,
           (random() * (:facilities - 1))::int AS f,
           CASE WHEN random() < 0.75 THEN 'COVID19-2026' ELSE 'MR-2026' END AS program,
           random() AS v, random() AS g
    FROM generate_series(1, :n)
) r
"""

ROLLUPS = [
    "SELECT 'dose', day, program, vaccine, dose::text, '', '', count(*) FROM bench_vaccination "
    "GROUP BY day, program, vaccine, dose",
    "SELECT 'place', day, program, facility, district, state, '', count(*) "
    "FROM bench_vaccination GROUP BY day, program, facility, district, state",
    "SELECT 'people', day, program, gender, age_band, '', '', count(*) FROM bench_vaccination "
    "GROUP BY day, program, gender, age_band",
    "SELECT 'cert', day, program, 'issued', '', '', '', count(*) FROM bench_vaccination "
    "GROUP BY day, program",
    "SELECT 'aefi', day, program, facility, CASE WHEN dose = 2 THEN 'yes' ELSE 'no' END, '', '',"
    " count(*) FROM bench_vaccination TABLESAMPLE SYSTEM (0.1) GROUP BY 1, 2, 3, 4, 5",
    "SELECT 'verify', day, '', 'VALID', '', '', '', count(*) / 3 FROM bench_vaccination "
    "GROUP BY day",
]

#: the month level of every rollup, as `add_to_rollups` keeps it
MONTHS = """
INSERT INTO programme_rollup (rollup, day, program, k1, k2, k3, k4, n)
SELECT rollup || '/m', date_trunc('month', day)::date, program, k1, k2, k3, k4, sum(n)
FROM programme_rollup GROUP BY 1, 2, 3, 4, 5, 6, 7
"""

#: the baseline: the vaccination aggregates, from the base table
FULL_SCANS = [
    "SELECT day, count(*) FROM bench_vaccination WHERE day BETWEEN :a AND :b GROUP BY day",
    "SELECT program, facility, district, state, count(*) FROM bench_vaccination "
    "WHERE day BETWEEN :a AND :b GROUP BY program, facility, district, state",
    "SELECT program, vaccine, dose, count(*) FROM bench_vaccination "
    "WHERE day BETWEEN :a AND :b GROUP BY program, vaccine, dose",
    "SELECT gender, age_band, count(*) FROM bench_vaccination "
    "WHERE day BETWEEN :a AND :b GROUP BY gender, age_band",
]


def add_facilities(reg: Any, count: int) -> None:
    """`count` facilities BF00000..., each active in both programmes with a daily rate."""
    harness.create_all(
        reg.services["facility"],
        (
            {
                "code": f"BF{f:05d}",
                "name": f"Bench facility {f}",
                "category": "GOVT",
                "type": "Fixed location",
                "status": "Active",
                "address": {
                    "addressLine1": f"{f} Main Road",
                    "district": f"District {f % 100}",
                    "state": f"State {f % 100 % 12}",
                    "pincode": "560001",
                },
            }
            for f in range(count)
        ),
    )
    harness.create_all(
        reg.services["facility_programme"],
        (
            {"facility": f"BF{f:05d}", "program": p, "status": "Active", "rate": 100}
            for f in range(count)
            for p in PROGRAMS
        ),
    )


def build(reg: Any, n: int, days: int, facilities: int, last: date) -> dict[str, float]:
    """The base table and the rollups; returns seconds per step."""
    out = {}
    engine = reg.db.engine
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS bench_vaccination"))
        conn.execute(sa.text(BASE_TABLE))
    start = time.perf_counter()
    step = 2_000_000
    for done in range(0, n, step):
        with engine.begin() as conn:
            conn.execute(
                sa.text(FILL),
                {"last": last, "days": days, "facilities": facilities, "n": min(step, n - done)},
            )
    out["base table"] = time.perf_counter() - start
    start = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE INDEX ix_bench_vaccination_day ON bench_vaccination (day)"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE bench_vaccination"))
    out["base index"] = time.perf_counter() - start
    start = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM programme_rollup"))
        for select in ROLLUPS:
            conn.execute(
                sa.text(
                    f"INSERT INTO programme_rollup (rollup, day, program, k1, k2, k3, k4, n) "
                    f"{select}"
                )
            )
        conn.execute(sa.text(MONTHS))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE programme_rollup"))
    out["rollups"] = time.perf_counter() - start
    return out


def count_rows(reg: Any, sql: str) -> int:
    with reg.db.engine.connect() as conn:
        return int(conn.execute(sa.text(sql)).scalar_one())


def rollup_aggregates(reg: Any, period: Period, today: date) -> dict[str, Any]:
    rt = runtime(reg)
    with reg.db.engine.connect() as conn:
        analytics = Analytics(rt, conn, period, today)
        return {name: analytics.table(name) for name in TABLES}


def full_scan_aggregates(reg: Any, period: Period) -> list[list[Any]]:
    with reg.db.engine.connect() as conn:
        params = {"a": period.start, "b": period.end}
        return [conn.execute(sa.text(q), params).all() for q in FULL_SCANS]


def incremental(reg: Any, k: int) -> tuple[float, int]:
    """Record `k` vaccinations through the services, then apply their outbox events to the
    rollups as the worker does (batches of 100); returns (events per second, rows added)."""
    services = reg.services
    today = datetime.now(UTC).date()
    people = harness.create_all(
        services["recipient"],
        (
            {
                "name": f"Bench person {j}",
                "dob": "1980-01-01",
                "gender": "Female",
                "identity": f"did:bench:{uuid.uuid4().hex}",
            }
            for j in range(k)
        ),
    )
    activation = {"facility": "NL-RVS-01", "program": "COVID19-2026", "status": "Active", "rate": k}
    harness.create_all(services["facility_programme"], [activation])
    harness.skip_pending(reg)
    when = f"{today.isoformat()}T10:00:00Z"
    harness.create_all(
        services["vaccination"],
        (
            {
                "recipient": p["id"],
                "program": "COVID19-2026",
                "vaccine": "CVX-AV",
                "facility": "NL-RVS-01",
                "dose": 1,
                "totalDoses": 2,
                "batch": "BENCH-1",
                "date": when,
            }
            for p in people
        ),
    )
    outbox = reg.db.metadata.tables["registry_outbox"]
    before = count_rows(
        reg, "SELECT coalesce(sum(n), 0) FROM programme_rollup WHERE rollup = 'dose'"
    )
    rollups = Rollups(runtime(reg))
    with reg.db.engine.connect() as conn:
        events = [
            dict(r)
            for r in conn.execute(
                sa.select(outbox)
                .where(outbox.c.status == "pending", outbox.c.entity == "vaccination")
                .order_by(outbox.c.seq)
            ).mappings()
        ]
    start = time.perf_counter()
    for i in range(0, len(events), 100):
        with reg.db.engine.begin() as conn:
            rollups.apply(conn, events[i : i + 100])
    elapsed = time.perf_counter() - start
    after = count_rows(
        reg, "SELECT coalesce(sum(n), 0) FROM programme_rollup WHERE rollup = 'dose'"
    )
    return len(events) / max(elapsed, 1e-9), after - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=10_000_000, help="synthetic vaccinations")
    parser.add_argument("--days", type=int, default=365, help="days they spread over")
    parser.add_argument("--facilities", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per measurement")
    parser.add_argument(
        "--incremental",
        type=int,
        default=2000,
        metavar="K",
        help="vaccinations for the incremental path (0: skip)",
    )
    parser.add_argument("--database-url", help="an existing PostgreSQL database to fill")
    args = parser.parse_args()
    today = datetime.now(UTC).date()
    print(
        f"dashboard over {args.n:,} vaccinations, {args.days} days, {args.facilities:,} "
        f"facilities; PostgreSQL; {os.cpu_count()} CPUs"
    )
    database = (
        contextlib.nullcontext(args.database_url)
        if args.database_url
        else harness.pg_database(PG_ADMIN, "registry_bench_dash", {"synchronous_commit": "off"})
    )
    with database as url, harness.scratch_folder() as tmp:
        reg = harness.open_bench_registry(url, tmp, demo=True, inline_worker=False, pool_size=4)
        runtime(reg).create_tables()
        start = time.perf_counter()
        add_facilities(reg, args.facilities)
        print(
            f"set-up: {args.facilities:,} facilities and {2 * args.facilities:,} "
            f"activations through the services in {time.perf_counter() - start:.1f} s"
        )
        steps = build(reg, args.n, args.days, args.facilities, today)
        print("build: " + ", ".join(f"{k} {v:.1f} s" for k, v in steps.items()))
        base_rows = count_rows(reg, "SELECT count(*) FROM bench_vaccination")
        rollup_rows = count_rows(reg, "SELECT count(*) FROM programme_rollup")
        print(f"base table: {base_rows:,} rows; rollup table: {rollup_rows:,} rows")
        app = create_app(registry=reg)
        client = TestClient(app)  # no lifespan: the registry stays open
        periods = {
            "last 30 days": Period(today - timedelta(days=29), today),
            f"all {args.days} days": Period(today - timedelta(days=args.days - 1), today),
        }
        for label, period in periods.items():
            tables = rollup_aggregates(reg, period, today)
            total = sum(r[1] for r in tables["daily"].rows)
            scans = full_scan_aggregates(reg, period)
            assert total == sum(r[1] for r in scans[0]), "rollups and base table disagree"
            query = f"from={period.start.isoformat()}&to={period.end.isoformat()}"

            def page(query: str = query) -> None:
                resp = client.get(f"/ui/dashboard?{query}")
                assert resp.status_code == 200, resp.text[:300]

            t_roll = harness.median_seconds(
                lambda p=period: rollup_aggregates(reg, p, today), args.repeat
            )
            t_page = harness.median_seconds(page, args.repeat)
            t_scan = harness.median_seconds(
                lambda p=period: full_scan_aggregates(reg, p), max(1, args.repeat // 2)
            )
            print(f"\n[{label}: {total:,} vaccinations]")
            print(f"rollups, all 13 dashboard aggregates {t_roll * 1000:9.1f} ms")
            print(f"rollups, the page GET /ui/dashboard  {t_page * 1000:9.1f} ms")
            print(f"full scan, 4 vaccination aggregates  {t_scan * 1000:9.1f} ms")
            print(
                f"ratio full scan / rollups: {t_scan / t_roll:.1f}x (page: {t_scan / t_page:.1f}x)"
            )
        if args.incremental:
            rate, added = incremental(reg, args.incremental)
            print(
                f"\nincremental: {args.incremental:,} vaccination events applied to the "
                f"rollups at {rate:,.0f} events/s wall-clock (batches of 100); "
                f"dose rollup +{added:,}"
            )
        reg.close()


if __name__ == "__main__":
    main()
