"""Certificates issued per second through the real issuance path: vaccinations recorded in the
registry, then an outbox worker reads them, fills in the template, signs and stores each
certificate (audit + outbox rows included), exactly as in production.

Measured in the same run, on the same kind of data:

- shortcut: the plugin as shipped (canonicalization shortcut for the vaccination shape);
- full:     the same path with full pyld JSON-LD canonicalization (the baseline);
- verify:   our verifier (`POST /api/v1/verify`'s function) on the issued certificates;
- scale-out (PostgreSQL, with --workers K): 1..K worker processes sharing the outbox (FOR
            UPDATE SKIP LOCKED), each arm draining the same work to empty (the vaccinations and
            every event they cause: certificates, next-dose appointments, rollups): wall-clock
            certificates per second, and per CPU-second of the worker processes (on a machine
            whose cores the database shares, the per-CPU figure is the one that must not drop).

Issuance rates are per CPU-second of the worker process (the vaccinations are recorded before
timing), so other load on the machine does not count; scale-out rates are wall-clock and per
worker CPU-second. A sample
of the issued certificates goes to Digital Bazaar's verifier (tests/node) with --node-check N.
Prints figures and ratios; never asserts timings.

    .venv/bin/python benchmarks/issuance.py --quick
    .venv/bin/python benchmarks/issuance.py -n 5000 --postgres --workers 2 --node-check 20
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
import uuid
from pathlib import Path
from typing import Any

import harness
import sqlalchemy as sa

from open_registry.core.outbox.worker import Worker
from open_registry.plugins.certificates import suites
from open_registry.plugins.certificates.runtime import runtime

#: the registry's settings besides its database and folder; the benchmark records thousands of
#: doses at one facility on one day: the programme plugin's daily rate would refuse them (its
#: rollups stay on, as in production)
SETTINGS: dict[str, Any] = {
    "inline_worker": False,
    "load_entrypoints": True,
    "plugins": {"programme": {"enforce_activation": False}},
}


def record_vaccinations(reg: Any, n: int, tag: str) -> None:
    """`n` vaccinations (dose 1 of new recipients), recorded in chunks before any timing."""
    services = reg.services
    first = {
        e: services[e].search(services[e].parser.from_params([])).items[0]
        for e in ("program", "vaccine", "facility", "vaccinator")
    }
    people = harness.create_all(
        services["recipient"],
        (
            {
                "name": f"Person {tag}-{i}",
                "dob": "1990-05-17",
                "gender": "Female",
                "identity": f"ID-{tag}-{i}",
                "nationality": "Examplian",
                "address": {
                    "addressLine1": f"{i % 1000} Main Road",
                    "district": "Portview",
                    "state": "Eastmarch",
                    "pincode": "523053",
                    "country": "Examplia",
                },
            }
            for i in range(n)
        ),
        chunk=1000,
    )
    harness.create_all(
        services["vaccination"],
        (
            {
                "recipient": p["id"],
                "program": first["program"]["code"],
                "vaccine": first["vaccine"]["code"],
                "facility": first["facility"]["code"],
                "vaccinator": first["vaccinator"]["code"],
                "dose": 1,
                "totalDoses": 2,
                "batch": f"B{i // 1000}",
                "date": "2026-03-01T10:30:00Z",
            }
            for i, p in enumerate(people)
        ),
        chunk=1000,
    )


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


def pending_events(engine: Any) -> int:
    """Outbox events not done yet (pending, whether claimed by a worker now or not)."""
    with engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT count(*) FROM registry_outbox WHERE status = 'pending'")
        ).scalar_one()


def _worker_process(url: str, data_dir: str, ready: Any, go: Any, results: Any) -> None:
    """Drain the outbox to empty (every event, also those the work itself creates: the
    certificates' and the next-dose appointments'), then report (events, CPU seconds)."""
    reg = harness.open_bench_registry(url, data_dir, **SETTINGS)
    runtime(reg)  # keys and templates loaded before the clock starts
    worker = Worker(reg, name=f"bench-{os.getpid()}", batch_size=100, checkpoint_seconds=0)
    ready.wait()
    go.wait()
    start, done = time.process_time(), 0
    while True:
        n = worker.run_once(limit=10**9)
        done += n
        if n == 0 and pending_events(reg.db.engine) == 0:
            break
        if n == 0:  # the rest is held by another worker's open batch: look again soon
            time.sleep(0.01)
    results.put((done, time.process_time() - start))
    reg.close()


def scale_out(url: str, data_dir: Path, n: int, processes: int) -> dict[str, float]:
    """`processes` worker processes on PostgreSQL draining the same work to empty: `n`
    vaccinations and everything their events cause (certificates, their events, next-dose
    appointments, rollups). Wall-clock from the moment all are ready (started, connected)
    until the last one finds the outbox empty; the workers' own CPU seconds summed."""
    reg = harness.open_bench_registry(url, data_dir, **SETTINGS)
    record_vaccinations(reg, n, f"s{processes}-{uuid.uuid4().hex[:6]}")
    harness.skip_pending(reg, keep="vaccination")
    before = certificate_count(reg)
    ctx = multiprocessing.get_context("spawn")
    ready, go, results = ctx.Barrier(processes + 1), ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=_worker_process, args=(url, str(data_dir), ready, go, results))
        for _ in range(processes)
    ]
    for p in procs:
        p.start()
    ready.wait()
    start = time.perf_counter()
    go.set()
    reports = [results.get() for _ in procs]
    elapsed = time.perf_counter() - start
    for p in procs:
        p.join()
    made = certificate_count(reg) - before
    left = pending_events(reg.db.engine)
    reg.close()
    if made != n or left:
        raise SystemExit(f"scale-out: expected {n} certificates and 0 pending, got {made}, {left}")
    cpu = sum(c for _, c in reports)
    return {
        "rate": n / elapsed,
        "seconds": elapsed,
        "cpu": cpu,
        "per_cpu": n / max(cpu, 1e-9),
        "events": sum(e for e, _ in reports),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=3000, help="certificates per measurement")
    parser.add_argument("--quick", action="store_true", help="small numbers (CI smoke run)")
    parser.add_argument("--postgres", action="store_true", help="also measure on PostgreSQL")
    parser.add_argument("--workers", type=int, default=0, help="scale-out up to K processes (PG)")
    parser.add_argument("--node-check", type=int, default=0, metavar="N")
    harness.add_pin_option(parser)
    args = parser.parse_args()
    n = 300 if args.quick else args.n
    n_full = max(50, n // 10)
    cpus = harness.pin_to_one_cpu(args)
    print(f"issuance through the outbox worker; {n} certificates (full pyld: {n_full}); {cpus}")
    pg_url = harness.pg_admin_url("REGISTRY_TEST_PG_URL")
    with harness.scratch_folder() as tmp:
        for name in ["sqlite", "postgresql"] if args.postgres else ["sqlite"]:
            data_dir = tmp / name
            with harness.database(name, data_dir, pg_url) as url:
                reg = harness.open_bench_registry(url, data_dir, demo=True, **SETTINGS)
                harness.skip_pending(reg)
                record_vaccinations(reg, n_full, "full")
                harness.skip_pending(reg, keep="vaccination")
                full = issue_timed(reg, n_full, full=True)
                record_vaccinations(reg, n, "fast")
                harness.skip_pending(reg, keep="vaccination")
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
                    payload = {"credentials": sample, "statusLists": status_lists(reg, sample)}
                    verdict = harness.node_verify(payload)
                    print(f"Node check of {len(sample)} issued certificates: {verdict}")
                reg.close()
                if name == "postgresql" and args.workers:
                    if hasattr(os, "sched_setaffinity"):
                        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
                    print(
                        "scale-out: K worker processes drain the same work to empty (each arm: "
                        f"{n} vaccinations and the events they cause); baseline: 1 process"
                    )
                    arms = {}
                    for k in range(1, args.workers + 1):
                        arm = arms[k] = scale_out(url, data_dir, n, k)
                        print(
                            f"scale-out, {k} worker process(es): {arm['rate']:>7,.0f} "
                            f"certificates/s wall-clock ({arm['rate'] / arms[1]['rate']:.2f}x "
                            f"of 1), {arm['per_cpu']:>7,.0f} per worker CPU-second "
                            f"({arm['per_cpu'] / arms[1]['per_cpu']:.2f}x of 1); "
                            f"{arm['events']:,.0f} events in {arm['seconds']:.1f} s; "
                            f"load average {os.getloadavg()[0]:.2f}"
                        )

if __name__ == "__main__":
    main()
