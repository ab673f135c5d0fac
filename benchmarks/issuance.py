"""Certificates issued per second through the real issuance path: vaccinations recorded in the
registry, then an outbox worker reads them, fills in the template, signs and stores each
certificate (audit + outbox rows included), exactly as in production.

Measured in the same run, on the same kind of data:

- shortcut: the plugin as shipped (canonicalization shortcut for the vaccination shape);
- full:     the same path with full pyld JSON-LD canonicalization (the baseline);
- verify:   our verifier (`POST /api/v1/verify`'s function) on the issued certificates;
- scale-out (PostgreSQL, with --workers K): wall-clock rate of 1..K worker processes sharing
            the outbox (FOR UPDATE SKIP LOCKED).

Issuance rates are per CPU-second of the worker process (the vaccinations are recorded before
timing), so other load on the machine does not count; scale-out rates are wall-clock. A sample
of the issued certificates goes to Digital Bazaar's verifier (tests/node) with --node-check N.
Prints figures and ratios; never asserts timings.

    .venv/bin/python benchmarks/issuance.py --quick
    .venv/bin/python benchmarks/issuance.py -n 5000 --postgres --workers 2 --node-check 20
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

from open_registry.core import Settings, open_registry  # noqa: E402
from open_registry.core.demo import load_demo_data  # noqa: E402
from open_registry.core.outbox.worker import Worker  # noqa: E402
from open_registry.plugins.certificates import suites  # noqa: E402
from open_registry.plugins.certificates.runtime import runtime  # noqa: E402

#: the benchmark records thousands of doses at one facility on one day: the programme plugin's
#: daily rate would refuse them (its rollups stay on, as in production)
PLUGINS = {"programme": {"enforce_activation": False}}

PG_ADMIN = os.environ.get(
    "REGISTRY_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def record_vaccinations(reg: Any, n: int, tag: str) -> None:
    """`n` vaccinations (dose 1 of new recipients), recorded in chunks before any timing."""
    services = reg.services
    first = {
        e: services[e].search(services[e].parser.from_params([])).items[0]
        for e in ("program", "vaccine", "facility", "vaccinator")
    }
    for start in range(0, n, 1000):
        size = min(1000, n - start)
        people = services["recipient"].create_many(
            [
                (
                    None,
                    {
                        "name": f"Person {tag}-{start + i}",
                        "dob": "1990-05-17",
                        "gender": "Female",
                        "identity": f"ID-{tag}-{start + i}",
                        "nationality": "Examplian",
                        "address": {
                            "addressLine1": f"{i} Main Road",
                            "district": "Portview",
                            "state": "Eastmarch",
                            "pincode": "523053",
                            "country": "Examplia",
                        },
                    },
                )
                for i in range(size)
            ],
            actor="bench",
        )
        services["vaccination"].create_many(
            [
                (
                    None,
                    {
                        "recipient": p["id"],
                        "program": first["program"]["code"],
                        "vaccine": first["vaccine"]["code"],
                        "facility": first["facility"]["code"],
                        "vaccinator": first["vaccinator"]["code"],
                        "dose": 1,
                        "totalDoses": 2,
                        "batch": f"B{start // 1000}",
                        "date": "2026-03-01T10:30:00Z",
                    },
                )
                for p in people
            ],
            actor="bench",
        )


def skip_pending(reg: Any, keep: str | None = None) -> None:
    """Mark pending events done, but those of entity `keep` (the set-up writes' own events are
    not the benchmark)."""
    t = reg.db.metadata.tables["registry_outbox"]
    where = [t.c.status == "pending"] + ([t.c.entity != keep] if keep else [])
    with reg.db.engine.begin() as conn:
        conn.execute(t.update().where(*where).values(status="done"))


def pending_vaccination_events(reg: Any) -> int:
    t = reg.db.metadata.tables["registry_outbox"]
    with reg.db.engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.count()).where(t.c.status == "pending", t.c.entity == "vaccination")
        ).scalar_one()


def certificate_count(reg: Any) -> int:
    t = reg.services["certificate"].table
    with reg.db.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()


def issue_timed(reg: Any, n: int, full: bool) -> float:
    """Issue the `n` pending vaccinations' certificates; returns certificates per CPU-second."""
    issuer = runtime(reg).issuer
    original = issuer.sign
    if full:

        def sign_full(unsigned: dict[str, Any], created: str) -> dict[str, Any]:
            key = issuer.keys.current()
            return suites.sign(
                unsigned,
                key.private_key,
                key.verification_method,
                suite=issuer.config.suite,
                created=created,
            )

        issuer.sign = sign_full  # type: ignore[method-assign]
    before = certificate_count(reg)
    worker = Worker(reg, batch_size=issuer.config.batch_size)
    start = time.process_time()
    worker.run_once(limit=n)
    elapsed = time.process_time() - start
    issuer.sign = original  # type: ignore[method-assign]
    made = certificate_count(reg) - before
    if made != n:
        raise SystemExit(f"expected {n} certificates, got {made}")
    return n / max(elapsed, 1e-9)


def open_fresh(url: str, data_dir: Path) -> Any:
    reg = open_registry(
        Settings(database_url=url, data_dir=data_dir, inline_worker=False, plugins=PLUGINS)
    )
    load_demo_data(reg.services)
    skip_pending(reg)
    return reg


def status_lists(reg: Any, credentials: list[dict[str, Any]]) -> dict[str, Any]:
    """Our signed status list credentials the given credentials refer to, by URL."""
    rt = runtime(reg)
    out = {}
    for c in credentials:
        for entry in c.get("credentialStatus", []):
            url = entry["statusListCredential"]
            if url not in out:
                purpose, number = url.rstrip("/").split("/")[-2:]
                out[url] = rt.status_list_credential(purpose, int(number))
    return out


def node_check(credentials: list[dict[str, Any]], lists: dict[str, Any]) -> str:
    node_dir = ROOT / "tests" / "node"
    if shutil.which("node") is None or not (node_dir / "node_modules").is_dir():
        return "skipped (needs node and `cd tests/node && npm ci`)"
    done = subprocess.run(
        ["node", "verify.mjs"],
        cwd=node_dir,
        input=json.dumps({"credentials": credentials, "statusLists": lists}),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        return f"node failed: {done.stderr.strip()[:300]}"
    results = json.loads(done.stdout)
    ok = sum(1 for r in results if r["verified"])
    return f"{ok}/{len(results)} verified"


def _worker_process(url: str, data_dir: str, n: int, ready: Any, go: Any) -> None:
    reg = open_registry(
        Settings(database_url=url, data_dir=Path(data_dir), inline_worker=False, plugins=PLUGINS)
    )
    runtime(reg)  # keys and templates loaded before the clock starts
    worker = Worker(reg, name=f"bench-{os.getpid()}", batch_size=100)
    ready.wait()
    go.wait()
    worker.run_once(limit=n)
    reg.close()


def scale_out(url: str, data_dir: Path, n: int, processes: int) -> float:
    """Wall-clock certificates per second of `processes` worker processes on PostgreSQL, from
    the moment all of them are ready (started, connected) until the last one is done."""
    reg = open_registry(
        Settings(database_url=url, data_dir=data_dir, inline_worker=False, plugins=PLUGINS)
    )
    record_vaccinations(reg, n, f"s{processes}-{uuid.uuid4().hex[:6]}")
    skip_pending(reg, keep="vaccination")
    before = certificate_count(reg)
    ctx = multiprocessing.get_context("spawn")
    ready, go = ctx.Barrier(processes + 1), ctx.Event()
    procs = [
        ctx.Process(target=_worker_process, args=(url, str(data_dir), n, ready, go))
        for _ in range(processes)
    ]
    for p in procs:
        p.start()
    ready.wait()
    start = time.perf_counter()
    go.set()
    for p in procs:
        p.join()
    elapsed = time.perf_counter() - start
    made = certificate_count(reg) - before
    reg.close()
    if made != n:
        raise SystemExit(f"scale-out: expected {n} certificates, got {made}")
    return n / elapsed


def pg_database() -> tuple[str, Any]:
    name = f"registry_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return url, drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=3000, help="certificates per measurement")
    parser.add_argument("--quick", action="store_true", help="small numbers (CI smoke run)")
    parser.add_argument("--postgres", action="store_true", help="also measure on PostgreSQL")
    parser.add_argument("--workers", type=int, default=0, help="scale-out up to K processes (PG)")
    parser.add_argument("--node-check", type=int, default=0, metavar="N")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to one CPU")
    args = parser.parse_args()
    n = 300 if args.quick else args.n
    n_full = max(50, n // 10)
    if not args.no_pin and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    print(
        f"issuance through the outbox worker; {n} certificates (full pyld: {n_full}); "
        f"{os.cpu_count()} CPUs, pinned to one: {not args.no_pin}"
    )
    backends = [("sqlite", None)]
    drops = []
    if args.postgres:
        url, drop = pg_database()
        backends.append(("postgresql", url))
        drops.append(drop)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name, url in backends:
                data_dir = Path(tmp) / name
                reg = open_fresh(url or f"sqlite:///{data_dir / 'bench.db'}", data_dir)
                record_vaccinations(reg, n_full, "full")
                skip_pending(reg, keep="vaccination")
                full = issue_timed(reg, n_full, full=True)
                record_vaccinations(reg, n, "fast")
                skip_pending(reg, keep="vaccination")
                fast = issue_timed(reg, n, full=False)
                creds = [
                    c["credential"]
                    for c in reg.services["certificate"]
                    .search(reg.services["certificate"].parser.from_params([("limit", "1000")]))
                    .items
                ]
                verifier = runtime(reg).verifier
                start = time.process_time()
                verdicts = [verifier.verify(c).status for c in creds]
                verify_rate = len(creds) / max(time.process_time() - start, 1e-9)
                valid = sum(1 for v in verdicts if v == "VALID")
                print(f"\n[{name}]")
                print(f"issue, full pyld       {full:>9,.0f} certificates / CPU-second")
                print(f"issue, as shipped      {fast:>9,.0f} certificates / CPU-second")
                print(f"ratio as shipped / full pyld: {fast / full:.1f}x")
                print(
                    f"verify (our verifier)  {verify_rate:>9,.0f} credentials / CPU-second "
                    f"({valid}/{len(creds)} VALID)"
                )
                if args.node_check and name == "sqlite":
                    sample = creds[: args.node_check]
                    verdict = node_check(sample, status_lists(reg, sample))
                    print(f"Node check of {len(sample)} issued certificates: {verdict}")
                reg.close()
                if name == "postgresql" and args.workers:
                    if hasattr(os, "sched_setaffinity"):
                        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
                    rates = {}
                    for k in range(1, args.workers + 1):
                        rates[k] = scale_out(url, data_dir, n, k)
                        print(
                            f"scale-out, {k} worker process(es): {rates[k]:>9,.0f} "
                            f"certificates / s wall-clock ({rates[k] / rates[1]:.2f}x of 1)"
                        )
    finally:
        for drop in drops:
            drop()


if __name__ == "__main__":
    main()
