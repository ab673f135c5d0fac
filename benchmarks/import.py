"""Bulk import speed: 1,000,000 recipient rows from CSV into SQLite and PostgreSQL.

    python benchmarks/import.py [--rows N | --quick] [--backends sqlite,postgresql]

Generates a realistic recipient CSV (99 % valid rows, 1 % invalid: bad dates, unknown genders,
missing names, duplicate identities), then per database:

- **import**: `registry.imports.importer.import_file` into an empty database, run in a
  subprocess so its peak memory (`ru_maxrss`) is measured alone (the worker process it starts
  is reported apart);
- **baseline**: a raw driver `executemany` (SQLite, and PostgreSQL) of the same valid rows into
  the same table of another empty database, chunks of 5,000, one commit per chunk. The rows are
  prepared by the import's own reader beforehand; only the inserts and commits are timed.

Prints validated rows/s, the ratio import / baseline, peak memory, a summary and one JSON line.
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


def run_child(kind: str, url: str, data_dir: Path, file: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--url", url, "--data-dir", str(data_dir),
           "--file", str(file)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{kind} child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- the run ---------------------------------------------------------------------------------------
def bench_backend(backend: str, file: Path, work: Path, pg_url: str) -> dict:
    with contextlib.ExitStack() as stack:
        urls = {
            kind: stack.enter_context(harness.database(backend, work / f"{backend}-{kind}", pg_url))
            for kind in ("import", "baseline")
        }
        imp = run_child("import", urls["import"], work / f"{backend}-import", file)
        print(f"  {backend:<10} import    {imp['rows']:>9,} rows  {imp['seconds']:>7.1f} s  "
              f"{imp['rows_per_s']:>9,} rows/s  ({imp['inserted']:,} inserted, "
              f"{imp['failed']:,} bad)  peak {imp['maxrss_mb']:.0f} MB, worker "
              f"{imp['worker_maxrss_mb']:.0f} MB", flush=True)  # fmt: skip
        base = run_child("baseline", urls["baseline"], work / f"{backend}-baseline", file)
        print(f"  {backend:<10} baseline  {base['rows']:>9,} rows  {base['seconds']:>7.1f} s  "
              f"{base['rows_per_s']:>9,} rows/s  (raw executemany)", flush=True)  # fmt: skip
        return {
            "import": imp,
            "baseline": base,
            "ratio": round(harness.ratio(imp["rows_per_s"], base["rows_per_s"]), 3),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="50,000 rows")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--pg-url", default=harness.pg_admin_url())
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--child", choices=["import", "baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        func = child_import if args.child == "import" else child_baseline
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
            results["results"][backend] = bench_backend(backend, file, work, args.pg_url)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("\nsummary (targets: >= 100,000 rows/s; SQLite >= 0.30 x raw executemany; < 300 MB)")
    for backend, r in results["results"].items():
        imp, base = r["import"], r["baseline"]
        print(f"{backend:<10} import {imp['rows_per_s']:>9,} rows/s   baseline "
              f"{base['rows_per_s']:>9,} rows/s   ratio {r['ratio']:.2f}   peak "
              f"{imp['maxrss_mb']:.0f} MB (worker {imp['worker_maxrss_mb']:.0f} MB)")  # fmt: skip
    line = json.dumps(results)
    if args.json_out:
        args.json_out.write_text(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
