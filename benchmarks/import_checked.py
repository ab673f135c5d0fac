"""What the plugins' write rules cost a bulk import: a CSV of vaccinations imported with the
programme's and certificates' `before_write` checks run row by row (rates, activation, stock,
dose schedule; `register_write_checks`), against the same file imported by the plain bulk path
with the checks switched off, in the same run, on fresh databases with the same data.

    .venv/bin/python benchmarks/import_checked.py [-n 5000] [--backends sqlite,postgresql]
    .venv/bin/python benchmarks/import_checked.py --quick      # 1,000 rows, SQLite

Each database gets the demo data, `-n` extra recipients (bulk imported, untimed), the facility
activated for the programme with a rate of `-n` and a batch of `-n` doses. Only the
vaccination import is timed. Prints rows/s for both and their ratio; asserts nothing. The
checked import must record every row (none is beyond the rate or the stock): it is checked.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import harness
import sqlalchemy as sa

FACILITY, PROGRAM, VACCINE, VACCINATOR = "NL-RVS-01", "COVID19-2026", "CVX-AV", "VAC-0001"


def prepare(url: str, data_dir: Path, n: int, work: Path):
    """A registry with the demo data, n more recipients, the facility active with a rate of n
    and a batch of n doses; returns (registry, the vaccinations CSV)."""
    from open_registry.core.imports.importer import import_file

    plugins = {"programme": {"facility_programs_fallback": False}}
    reg = harness.open_bench_registry(
        url, data_dir, demo=True, inline_worker=False, plugins=plugins
    )
    people = work / "people.csv"
    with people.open("w") as f:
        f.write("identity,name,dob,gender,nationality,phone\n")
        for i in range(n):
            f.write(
                f"did:in.gov.uidai.aadhaar:{900000000000 + i},Person {i},"
                f"1980-01-{1 + i % 28:02d},Female,Indian,+9198{i:08d}\n"
            )
    result = import_file(reg.services["recipient"], people, actor="user:bench")
    assert result.inserted == n, result.summary()
    when = datetime.now(UTC).replace(microsecond=0)
    reg.services["facility_programme"].create(
        {"facility": FACILITY, "program": PROGRAM, "status": "Active", "rate": n}, actor="user:b"
    )
    reg.services["stock"].create(
        {
            "facility": FACILITY,
            "vaccine": VACCINE,
            "batch": "BENCH-1",
            "quantity": n,
            "expiry": (when + timedelta(days=365)).date().isoformat(),
        },
        actor="user:bench",
    )
    table = reg.services["recipient"].table
    with reg.db.engine.connect() as conn:
        ids = [
            r[0]
            for r in conn.execute(
                sa.select(table.c.id).where(table.c.name.like("Person %")).order_by(table.c.id)
            )
        ]
    file = work / "vaccinations.csv"
    with file.open("w") as f:
        f.write("recipient,program,vaccine,facility,vaccinator,dose,totalDoses,batch,date\n")
        stamp = when.isoformat().replace("+00:00", "Z")
        for rid in ids:
            f.write(f"{rid},{PROGRAM},{VACCINE},{FACILITY},{VACCINATOR},1,2,BENCH-1,{stamp}\n")
    return reg, file


def timed_import(url: str, data_dir: Path, n: int, work: Path, checked: bool) -> dict:
    from open_registry.core.imports.importer import import_file

    reg, file = prepare(url, data_dir, n, work)
    service = reg.services["vaccination"]
    if not checked:
        service.checks_imports = False  # the plain bulk path, the rules not asked
    try:
        start = time.perf_counter()
        result = import_file(service, file, actor="user:bench")
        seconds = time.perf_counter() - start
        assert result.failed == 0 and result.inserted == n, result.summary()
        return {"rows": n, "seconds": round(seconds, 3), "rows_per_s": round(n / seconds)}
    finally:
        reg.close()


def bench(backend: str, n: int, pg_url: str) -> dict:
    out = {}
    for kind in ("bulk", "checked"):
        with harness.scratch_folder() as work, harness.database(backend, work, pg_url) as url:
            out[kind] = timed_import(url, work / "data", n, work, kind == "checked")
        r = out[kind]
        print(f"  {backend:<10} {kind:<8} {r['rows']:>7,} rows  {r['seconds']:>7.2f} s  "
              f"{r['rows_per_s']:>7,} rows/s", flush=True)  # fmt: skip
    out["ratio"] = round(harness.ratio(out["checked"]["rows_per_s"], out["bulk"]["rows_per_s"]), 3)
    print(f"  {backend:<10} checked / bulk: {out['ratio']:.2f}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=5000)
    parser.add_argument("--quick", action="store_true", help="1,000 rows, SQLite only")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--pg-url", default=harness.pg_admin_url())
    args = parser.parse_args()
    n, backends = (1000, ["sqlite"]) if args.quick else (args.n, args.backends.split(","))
    print(f"vaccinations imported with and without the plugins' write checks, {n:,} rows")
    for backend in backends:
        if backend == "postgresql" and (why := harness.pg_problem(args.pg_url)):
            print(f"  postgresql skipped: {why}")
            continue
        bench(backend, n, args.pg_url)


if __name__ == "__main__":
    main()
