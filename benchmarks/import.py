"""Bulk import speed: 1,000,000 recipient rows from CSV into SQLite and PostgreSQL.

    python benchmarks/import.py [--rows N | --quick] [--backends sqlite,postgresql] [--repeat N]

Generates a realistic recipient CSV (99 % valid rows, 1 % invalid: bad dates, unknown genders,
missing names, duplicate identities), then per database:

- **import**: `registry.imports.importer.import_file` into an empty database, run in a
  subprocess so its peak memory (`ru_maxrss`) is measured alone (the worker process it starts
  is reported apart);
- **baseline, the same tables** (the limit the import is held to): the rows the import wrote
  into its three tables (the records, their audit entries and their outbox events), read back
  from the import's database, written into the same three tables of another empty database by
  the database's own fastest path: `COPY ... FROM STDIN` of the rows' text (PostgreSQL; the
  import uses COPY too) or the driver's `executemany` (SQLite), in chunks of 5,000 records (with
  their audit and outbox rows), one commit per chunk. Only the writes and commits are timed;
  what the import does besides (reading and checking the CSV, encrypting private fields, blind
  indexes, hashing the audit chain) is the difference.
- **baseline, one table** (the earlier figure, kept for comparison): a raw driver `executemany`
  of the same valid rows into the record table alone, chunks of 5,000, one commit per chunk; the
  rows are prepared by the import's own reader beforehand.

`--repeat N` runs the import and its same-tables baseline N times, in turn, each on fresh
databases, and keeps the runs of median speed; each pair's own ratio is printed too (the
PostgreSQL `COPY` baseline of a 50,000-row file varied from 18,000 to 32,000 rows/s between
runs on a shared 2-core machine).

Prints validated rows/s, the ratios import / baseline, peak memory, a summary and one JSON line.
Figures only: nothing is asserted. PostgreSQL: a throwaway database on `--pg-url`, dropped at
the end; skipped with a message when the server does not answer.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

import harness

HEADER = [
    "identity", "name", "dob", "yob", "gender", "nationality", "phone", "email",
    "address.addressLine1", "address.addressLine2", "address.district", "address.state",
    "address.pincode", "address.country", "enrollmentCode", "enrollmentType", "comorbidities",
]  # fmt: skip
FIRST = [
    "Asha", "Ravi", "Megha", "Anita", "Suresh", "Jai", "Priya", "Vikram", "Lena", "Omar", "Sara",
    "Tomas", "Ines", "Kofi", "Mei",
]  # fmt: skip
LAST = [
    "Lopes", "Varma", "Das", "Rao", "Kumar", "Thakur", "Shah", "Iyer", "Nair", "Khan", "Mehta",
    "Singh", "Okafor", "Chen", "Silva",
]  # fmt: skip
DISTRICTS = ["Riverside", "Hillcrest", "Lakeside", "Old Town", "Northgate", "Harbour"]
CONDITIONS = ["Diabetes", "Hypertension", "Asthma", "Heart disease", "Kidney disease"]


def generate(path: Path, rows: int, seed: int = 7) -> int:
    """Write the CSV; returns the number of rows made invalid on purpose."""
    rnd = random.Random(seed)
    bad = 0
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(HEADER)
        for i in range(rows):
            year = rnd.randint(1930, 2012)
            row = [
                f"did:example:national-id:{40_000_000 + i}",
                f"{rnd.choice(FIRST)} {rnd.choice(LAST)}",
                f"{year}-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}",
                str(year) if i % 5 == 0 else "",
                rnd.choice(("Male", "Female", "Other")),
                "Examplian",
                f"+99 {rnd.randint(70000, 99999)} {rnd.randint(10000, 99999)}",
                f"person{i}@mail.example" if i % 3 else "",
                f"{rnd.randint(1, 400)} {rnd.choice(('Fort', 'Station', 'Lake'))} Road",
                "Civil Lines" if i % 2 else "",
                rnd.choice(DISTRICTS),
                "Northland",
                str(rnd.randint(400000, 499999)),
                "Examplia",
                f"{9_000_000_000 + i}",
                rnd.choice(("SELF_ENROLLMENT", "PRE_ENROLLMENT", "WALK_IN")),
                "|".join(rnd.sample(CONDITIONS, rnd.randint(1, 2))) if i % 7 == 0 else "",
            ]
            if i % 100 == 50:  # 1 % invalid, four kinds
                bad += 1
                kind = (i // 100) % 4
                if kind == 0:
                    row[2] = f"{year}-02-30"
                elif kind == 1:
                    row[4] = "M"
                elif kind == 2:
                    row[1] = ""
                else:
                    row[0] = f"did:example:national-id:{40_000_000 + i - 1}"  # duplicate
            w.writerow(row)
    return bad


# -- children (each measured alone) ---------------------------------------------------------------
def child_import(url: str, data_dir: str, file: str) -> dict:
    from open_registry.core.imports.importer import import_file

    reg = harness.open_bench_registry(url, data_dir)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    res = import_file(reg.services["recipient"], file)
    reg.close()
    return {
        "rows": res.rows,
        "inserted": res.inserted,
        "failed": res.failed,
        "seconds": round(res.elapsed, 2),
        "rows_per_s": round(res.rows / res.elapsed),
        "maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "maxrss_before_mb": round(before / 1024, 1),
        "worker_maxrss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
    }


def child_baseline(url: str, data_dir: str, file: str) -> dict:
    """Raw executemany of the same valid rows (prepared first, untimed) into the same table."""
    from open_registry.core.imports.importer import (
        SQLITE_CACHE,
        Importer,
        ImportOptions,
        prepare_chunks,
    )

    reg = harness.open_bench_registry(url, data_dir)
    svc = reg.services["recipient"]
    importer = Importer(svc, ImportOptions())
    plan, _ = importer.plan(Path(file))
    cols = [c.name for c in svc.table.columns]
    q = reg.db.engine.dialect.identifier_preparer
    pg = reg.db.dialect == "postgresql"
    mark = "%s" if pg else "?"
    sql = (
        f"INSERT INTO {q.format_table(svc.table)} ({', '.join(q.quote(c) for c in cols)}) "
        f"VALUES ({', '.join([mark] * len(cols))})"
    )
    raw = reg.db.engine.raw_connection()
    dbapi = raw.driver_connection
    timed = 0.0
    rows = 0
    for chunk in prepare_chunks(plan):
        if not chunk.rows:
            continue
        cur = dbapi.cursor()
        start = time.perf_counter()
        if not pg:
            cur.execute(SQLITE_CACHE)  # the same page cache as the import's connection
            cur.execute("BEGIN IMMEDIATE")
        cur.executemany(sql, chunk.rows)
        dbapi.commit() if pg else cur.execute("COMMIT")
        timed += time.perf_counter() - start
        rows += len(chunk.rows)
        cur.close()
    raw.close()
    reg.close()
    return {"rows": rows, "seconds": round(timed, 2), "rows_per_s": round(rows / timed)}


#: the tables an import writes, besides the record table (`child_same_tables`)
SYSTEM_TABLES = ("registry_audit", "registry_outbox")
CHUNK = 5_000


def child_same_tables(url: str, data_dir: str, source: str) -> dict:
    """The rows the import wrote into its three tables (read back from `source`, the import's
    database, untimed), written into the same tables of `url`: COPY on PostgreSQL, executemany
    on SQLite, chunks of `CHUNK` records with their audit and outbox rows, a commit each."""
    import sqlalchemy as sa

    from open_registry.core.imports.importer import SQLITE_CACHE

    reg = harness.open_bench_registry(url, data_dir)
    names = [reg.services["recipient"].table.name, *SYSTEM_TABLES]
    tables = [reg.db.metadata.tables[n] for n in names]
    pg = reg.db.dialect == "postgresql"
    q = reg.db.engine.dialect.identifier_preparer
    source_engine = sa.create_engine(reg.db.engine.url.set(database=sa.make_url(source).database)
                                     if pg else source)  # fmt: skip
    data: list[list] = []  # per table: its rows (SQLite) or text lines (PostgreSQL)
    with source_engine.connect() as conn:
        for t in tables:
            cols = ", ".join(q.quote(c.name) for c in t.columns)
            if pg:
                raw = conn.connection.driver_connection
                with raw.cursor() as cur, cur.copy(
                    f"COPY (SELECT {cols} FROM {q.format_table(t)} ORDER BY 1) TO STDOUT"
                ) as copy:
                    text = b"".join(bytes(block) for block in copy)
                data.append(text.splitlines(keepends=True))
            else:
                data.append(list(conn.exec_driver_sql(f"SELECT {cols} FROM {q.format_table(t)}")))
    source_engine.dispose()
    records = len(data[0])
    per_chunk = [max(1, round(len(rows) * CHUNK / max(records, 1))) for rows in data]
    raw = reg.db.engine.raw_connection()
    dbapi = raw.driver_connection
    timed = 0.0
    chunks = (records + CHUNK - 1) // CHUNK
    for n in range(chunks):
        cur = dbapi.cursor()
        start = time.perf_counter()
        if not pg:
            cur.execute(SQLITE_CACHE)
            cur.execute("BEGIN IMMEDIATE")
        for t, rows, size in zip(tables, data, per_chunk, strict=True):
            part = rows[n * size :] if n == chunks - 1 else rows[n * size : (n + 1) * size]
            if not part:
                continue
            cols = ", ".join(q.quote(c.name) for c in t.columns)
            if pg:
                with cur.copy(f"COPY {q.format_table(t)} ({cols}) FROM STDIN") as copy:
                    copy.write(b"".join(part))
            else:
                marks = ", ".join("?" * len(t.columns))
                cur.executemany(f"INSERT INTO {q.format_table(t)} ({cols}) VALUES ({marks})", part)
        dbapi.commit() if pg else cur.execute("COMMIT")
        timed += time.perf_counter() - start
        cur.close()
    written = {t.name: len(rows) for t, rows in zip(tables, data, strict=True)}
    raw.close()
    reg.close()
    return {"rows": records, "seconds": round(timed, 2), "rows_per_s": round(records / timed),
            "tables": written}  # fmt: skip


def run_child(kind: str, url: str, data_dir: Path, file: Path | str) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--url", url, "--data-dir", str(data_dir),
           "--file", str(file)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{kind} child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- the run ---------------------------------------------------------------------------------------
def bench_backend(backend: str, file: Path, work: Path, pg_url: str, repeat: int = 1) -> dict:
    """The import and its same-tables baseline `repeat` times, in turn (each on fresh
    databases), then the one-table baseline once. The figures kept are the runs of median
    speed; the ratio is of the medians, and each pair's own ratio is printed too."""
    imports: list[dict] = []
    sames: list[dict] = []
    for run in range(repeat):
        tag = f"{backend}-{run}"
        with contextlib.ExitStack() as stack:
            urls = {
                kind: stack.enter_context(harness.database(backend, work / f"{tag}-{kind}", pg_url))
                for kind in ("import", "same-tables")
            }
            imp = run_child("import", urls["import"], work / f"{tag}-import", file)
            print(f"  {backend:<10} import    {imp['rows']:>9,} rows  {imp['seconds']:>7.1f} s  "
                  f"{imp['rows_per_s']:>9,} rows/s  ({imp['inserted']:,} inserted, "
                  f"{imp['failed']:,} bad)  peak {imp['maxrss_mb']:.0f} MB, worker "
                  f"{imp['worker_maxrss_mb']:.0f} MB", flush=True)  # fmt: skip
            same = run_child("same-tables", urls["same-tables"], work / f"{tag}-same-tables",
                             urls["import"])  # fmt: skip
            how = "COPY" if backend == "postgresql" else "executemany"
            tables = ", ".join(f"{n} {c:,}" for n, c in same["tables"].items())
            print(f"  {backend:<10} baseline  {same['rows']:>9,} rows  {same['seconds']:>7.1f} s  "
                  f"{same['rows_per_s']:>9,} rows/s  ({how} of the import's rows into the same "
                  f"tables: {tables})", flush=True)  # fmt: skip
        imports.append(imp)
        sames.append(same)
    with harness.database(backend, work / f"{backend}-baseline", pg_url) as url:
        base = run_child("baseline", url, work / f"{backend}-baseline", file)
    print(f"  {backend:<10} one table {base['rows']:>9,} rows  {base['seconds']:>7.1f} s  "
          f"{base['rows_per_s']:>9,} rows/s  (raw executemany, record table only)",
          flush=True)  # fmt: skip
    pairs = [
        round(harness.ratio(i["rows_per_s"], s["rows_per_s"]), 3)
        for i, s in zip(imports, sames, strict=True)
    ]
    if repeat > 1:
        print(f"  {backend:<10} each run's import / same tables: "
              + ", ".join(f"{r:.2f}" for r in pairs), flush=True)  # fmt: skip
    imp = _median_run(imports)
    same = _median_run(sames)
    return {
        "import": imp,
        "same_tables": same,
        "baseline": base,
        "ratio_same_tables": round(harness.ratio(imp["rows_per_s"], same["rows_per_s"]), 3),
        "ratio": round(harness.ratio(imp["rows_per_s"], base["rows_per_s"]), 3),
        "runs": [{"import": i, "same_tables": s} for i, s in zip(imports, sames, strict=True)],
        "run_ratios_same_tables": pairs,
    }


def _median_run(runs: list[dict]) -> dict:
    """The run of median speed (the lower middle one of an even number)."""
    ordered = sorted(runs, key=lambda r: r["rows_per_s"])
    return ordered[(len(ordered) - 1) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="50,000 rows")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--pg-url", default=harness.pg_admin_url())
    parser.add_argument("--json-out", type=Path)
    parser.add_argument(
        "--repeat", type=int, default=1, help="import and same-tables baseline N times in turn"
    )
    parser.add_argument("--child", choices=["import", "baseline", "same-tables"],
                        help=argparse.SUPPRESS)  # fmt: skip
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        func = {"import": child_import, "baseline": child_baseline,
                "same-tables": child_same_tables}[args.child]  # fmt: skip
        print(json.dumps(func(args.url, args.data_dir, args.file)))
        return
    rows = 50_000 if args.quick else args.rows
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}  "
          f"({os.cpu_count()} cores)")  # fmt: skip
    results: dict = {"rows": rows, "skipped": {}, "results": {}}
    with harness.scratch_folder("registry-bench-import-") as work:
        file = work / "recipients.csv"
        start = time.perf_counter()
        bad = generate(file, rows)
        size = file.stat().st_size
        print(f"generated {rows:,} recipient rows ({bad:,} invalid), {size / 1e6:.0f} MB in "
              f"{time.perf_counter() - start:.1f} s")  # fmt: skip
        results["invalid_rows"] = bad
        results["file_mb"] = round(size / 1e6, 1)
        for backend in args.backends.split(","):
            if backend == "postgresql":
                problem = harness.pg_problem(args.pg_url)
                if problem:
                    print(f"  postgresql skipped: {problem}")
                    results["skipped"]["postgresql"] = problem
                    continue
            results["results"][backend] = bench_backend(
                backend, file, work, args.pg_url, args.repeat
            )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("\nsummary (targets: >= 0.6 x the same rows into the same tables by COPY (PostgreSQL) "
          "or executemany (SQLite); flat memory, < 300 MB)")  # fmt: skip
    for backend, r in results["results"].items():
        imp, same, base = r["import"], r["same_tables"], r["baseline"]
        print(f"{backend:<10} import {imp['rows_per_s']:>9,} rows/s   same tables "
              f"{same['rows_per_s']:>9,} rows/s   ratio {r['ratio_same_tables']:.2f}   "
              f"(one table {base['rows_per_s']:,} rows/s, ratio {r['ratio']:.2f})   peak "
              f"{imp['maxrss_mb']:.0f} MB (worker {imp['worker_maxrss_mb']:.0f} MB)")  # fmt: skip
    line = json.dumps(results)
    if args.json_out:
        args.json_out.write_text(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
