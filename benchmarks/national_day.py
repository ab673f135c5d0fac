"""A national vaccination day: thousands of facilities record vaccinations through the HTTP API
at a target rate and the outbox workers turn them into certificates, all on loopback; does
issuance keep pace with the write rate the API sustains on the same machine?

- `--db postgresql` (the default): N API processes (`registry serve --workers N`, the inline
  worker off) and `registry worker --processes M`;
- `--db sqlite`: `registry serve` as shipped: one process whose inline worker thread issues the
  certificates between the request threads; with `--workers 1`, the inline worker off and one
  `registry worker` process beside the server (two processes writing one SQLite file).

Set-up (not timed): a throwaway PostgreSQL database, the demo data, `--facilities` facilities
each active for the programme (a daily rate far above what the day brings, so every dose is
counted against its facility's rate but none is refused), enough recipients, and a bearer
token per facility (role `facility-staff`, tied to the facility). Then:

1. load: an open-loop generator in this process sends `POST /api/v1/vaccination` at `--rate`
   per second for `--seconds` (round robin over the facilities, a new recipient each), over up
   to `--connections` keep-alive connections; when they are all busy, requests wait (the
   achieved rate then falls below the target), and those still waiting when the time is up
   are not sent (status -1 in the answers);
2. drain: the load stops and the workers finish the backlog (at most `--drain` seconds);
3. figures: sustained vaccinations/s (created during the load), certificates/s during the load
   and their ratio (issuance keeps pace when it is ~1 and the queue does not grow), certificate
   lag (vaccination's `_createdAt` -> its certificate's `_createdAt`) p50/p99/max, the outbox
   queue (sampled every second during the load: pending events, per event, and the oldest due
   one's age, as /metrics shows them) at its peak and at the end of the load, vaccinations
   still without a certificate, request latency, where the CPU went (API processes, worker
   processes, the database's backends of this database, the load generator; from /proc, from
   the start of the load to the end of the drain) per vaccination, the load average, and the
   ratio to India's record day (17 Sep 2021: 25 million doses, 466/s on average).

Never asserts a timing. Loopback only; the database is dropped at the end.

A target `--rate` above what the API takes makes the load closed-loop over `--connections`:
the achieved rate is then the API's (what "keeps pace" is measured against).

    .venv/bin/python benchmarks/national_day.py --quick                 # ~15 s of load
    .venv/bin/python benchmarks/national_day.py --api 1 --workers 2     # ~60 s of load
    .venv/bin/python benchmarks/national_day.py --db sqlite --rate 400 --connections 16
    .venv/bin/python benchmarks/national_day.py --api 2 --workers 2 --rate 400 --connections 16
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import harness

INDIA_RECORD_PER_SECOND = 466  # 25 million doses on 17 Sep 2021, averaged over 24 hours
REGISTRY = str(Path(sys.executable).with_name("registry"))
#: settings of every process (the set-up, the API servers, the workers) via the environment
ENV: dict[str, str] = {}


# -- /proc: CPU seconds ------------------------------------------------------------------------
def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, user + system CPU seconds) of a process, or None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu(root: int) -> float:
    """CPU seconds of `root` and every live descendant (uvicorn's worker processes)."""
    parent, cpu = {}, {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := _stat(int(entry.name))) is not None:
            parent[int(entry.name)], cpu[int(entry.name)] = st
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += cpu.get(pid, 0.0)
        todo += [p for p, pp in parent.items() if pp == pid]
    return total


def backend_cpu(engine: Any) -> dict[int, float]:
    """CPU seconds of each PostgreSQL backend serving this database (but the asking one); none
    on SQLite (it runs in the processes that use it)."""
    import sqlalchemy as sa

    if engine.dialect.name != "postgresql":
        return {}
    with engine.connect() as conn:
        pids = conn.execute(
            sa.text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()"
            )
        ).scalars()
        return {p: st[1] for p in pids if (st := _stat(p)) is not None}


# -- set-up ------------------------------------------------------------------------------------
def set_up(reg: Any, facilities: int, people: int, tag: str) -> dict[str, Any]:
    """Facilities (active for the programme), recipients and per-facility tokens."""
    from open_registry.core.testing import token_for

    codes = [f"ND{tag}{i:05d}" for i in range(facilities)]
    day = harness.vaccination_day(reg, codes, people, label=f"Centre {tag}", rate=100_000)
    return {
        "codes": codes,
        "tokens": {c: token_for(reg, "facility-staff", facility=c) for c in codes},
        **day,
    }


# -- load --------------------------------------------------------------------------------------
class Connection:
    """One keep-alive HTTP/1.1 connection to the API."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    async def post(self, host: str, path: str, body: bytes, token: str) -> int:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        await self.writer.drain()
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return status


async def load(
    port: int, day: dict[str, Any], rate: float, seconds: float, connections: int
) -> dict[str, Any]:
    """Open-loop load: request i is due at start + i/rate; returns statuses and latencies."""
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    opened = 0
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    codes, tokens, people = day["codes"], day["tokens"], day["recipients"]
    total = min(int(rate * seconds), len(people))
    when = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    async def one(i: int, due: float) -> None:
        nonlocal opened
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        if pool.empty() and opened < connections:
            opened += 1
            conn = Connection(*await asyncio.open_connection("127.0.0.1", port))
        else:
            conn = await pool.get()
        if time.perf_counter() > end:  # the load is over: what is still waiting is not sent
            statuses[-1] += 1
            pool.put_nowait(conn)
            return
        code = codes[i % len(codes)]
        body = {
            "recipient": people[i],
            "program": day["program"],
            "vaccine": day["vaccine"],
            "facility": code,
            "vaccinator": day["vaccinator"],
            "dose": 1,
            "totalDoses": 2,
            "batch": f"B-{code}",
            "date": when,
        }
        try:
            statuses[await conn.post(f"127.0.0.1:{port}", "/api/v1/vaccination",
                                     json.dumps(body).encode(), tokens[code])] += 1  # fmt: skip
            latencies.append(time.perf_counter() - due)
            pool.put_nowait(conn)
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
            statuses[0] += 1
            opened -= 1

    start = time.perf_counter()
    end = start + seconds
    await asyncio.gather(*(one(i, start + i / rate) for i in range(total)))
    elapsed = min(time.perf_counter(), end) - start
    while not pool.empty():
        pool.get_nowait().writer.close()
    sent = total - statuses[-1]
    return {"sent": sent, "seconds": elapsed, "statuses": statuses, "latencies": latencies}


# -- the day -----------------------------------------------------------------------------------
@contextlib.contextmanager
def processes(
    url: str, data_dir: Path, api: int, workers: int, log_dir: Path
) -> Iterator[tuple[harness.ServerProcess, list[subprocess.Popen[bytes]]]]:
    """`registry serve --workers api` and `registry worker --processes workers` (none when
    `workers` is 0), stopped at the end."""
    common = ["--database-url", url, "--data-dir", str(data_dir)]
    server = harness.ServerProcess(
        "api",
        lambda port: [REGISTRY, "serve", "--port", str(port), "--workers", str(api), *common],
        log_dir,
    )
    logs = [(log_dir / "worker.log").open("wb")] if workers else []
    procs = [
        subprocess.Popen([REGISTRY, "worker", "--poll", "0.2", "--processes", str(workers),
                          *common], stdout=log, stderr=subprocess.STDOUT)
        for log in logs
    ]  # fmt: skip
    try:
        server.wait_ready(timeout=120)
        yield server, procs
    finally:
        server.stop()
        for p in procs:
            p.terminate()  # the supervisor stops its worker processes
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        for log in logs:
            log.close()


def lag(reg: Any, since: datetime) -> tuple[list[float], int, int]:
    """Certificate lag in seconds of the vaccinations created since `since`, how many there
    are and how many have no certificate yet."""
    import sqlalchemy as sa

    v = reg.services["vaccination"].table
    c = reg.services["certificate"].table
    stmt = (
        sa.select(v.c._created_at, c.c._created_at)
        .select_from(v.outerjoin(c, sa.and_(c.c.vaccination == v.c.id, c.c.revision == 1)))
        .where(v.c._created_at >= since)
    )
    with reg.db.engine.connect() as conn:
        rows = conn.execute(stmt).all()
    lags = sorted((b - a).total_seconds() for a, b in rows if b is not None)
    return lags, len(rows), sum(1 for _, b in rows if b is None)


class QueueSampler:
    """Samples the outbox every `every` seconds from a thread of its own, as `/metrics` reads
    it: pending events (all, and per event: what each hook has still to handle) and how long
    the earliest due one has waited."""

    def __init__(self, reg: Any, every: float = 1.0):
        self.reg, self.every = reg, every
        self.samples: list[tuple[float, int, float, dict[str, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="queue-sampler", daemon=True)

    def _sample(self) -> tuple[float, int, float, dict[str, int]]:
        import sqlalchemy as sa

        t = self.reg.db.metadata.tables["registry_outbox"]
        now = datetime.now(UTC)
        with self.reg.db.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.c.event, sa.func.count(), sa.func.min(t.c.available_at))
                .where(t.c.status == "pending")
                .group_by(t.c.event)
            ).all()
        by_event = {str(e): int(n) for e, n, _ in rows}
        firsts = [f if isinstance(f, datetime) else datetime.fromisoformat(str(f))
                  for _, _, f in rows if f is not None]  # fmt: skip
        first = min((f if f.tzinfo else f.replace(tzinfo=UTC) for f in firsts), default=None)
        age = max(0.0, (now - first).total_seconds()) if first else 0.0
        return time.perf_counter(), sum(by_event.values()), age, by_event

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # a busy moment costs a sample, not the run
                self.samples.append(self._sample())
            self._stop.wait(self.every)

    def __enter__(self) -> QueueSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def figures(self) -> dict[str, Any]:
        """Peak depth (all, per event), peak oldest age, the depth at the last sample and its
        growth per second over the second half of the load (> 0: issuance falls behind)."""
        if not self.samples:
            return {"peak_depth": 0, "peak_oldest_age": 0.0, "end_depth": 0,
                    "growth_per_s": 0.0, "peak_by_event": {}}  # fmt: skip
        peak_by: dict[str, int] = {}
        for *_, by_event in self.samples:
            for e, n in by_event.items():
                peak_by[e] = max(peak_by.get(e, 0), n)
        half = self.samples[len(self.samples) // 2 :]
        (t0, d0, *_), (t1, d1, *_) = half[0], half[-1]
        return {
            "peak_depth": max(s[1] for s in self.samples),
            "peak_oldest_age": max(s[2] for s in self.samples),
            "end_depth": self.samples[-1][1],
            "growth_per_s": (d1 - d0) / (t1 - t0) if t1 > t0 else 0.0,
            "peak_by_event": dict(sorted(peak_by.items(), key=lambda kv: -kv[1])),
        }


def certificates_since(reg: Any, since: datetime) -> int:
    import sqlalchemy as sa

    c = reg.services["certificate"].table
    with reg.db.engine.connect() as conn:
        stmt = sa.select(sa.func.count()).select_from(c).where(c.c._created_at >= since)
        return conn.execute(stmt).scalar_one()


def run_day(args: argparse.Namespace, url: str, folder: Path) -> dict[str, Any]:
    data_dir = folder / "data"
    # the server's inline worker issues the certificates when no worker process runs
    ENV["REGISTRY_INLINE_WORKER"] = "false" if args.workers else "true"
    os.environ.update(ENV)
    reg = harness.open_bench_registry(url, data_dir, demo=True, load_entrypoints=True,
                                      inline_worker=False)  # fmt: skip
    people = int(args.rate * args.seconds) + 10
    t = time.perf_counter()
    day = set_up(reg, args.facilities, people, uuid.uuid4().hex[:4])
    print(f"set-up: {args.facilities:,} facilities, {people:,} recipients in "
          f"{time.perf_counter() - t:.0f} s")  # fmt: skip
    with processes(url, data_dir, args.api, args.workers, folder) as (server, workers):
        load_before = os.getloadavg()
        since = datetime.now(UTC)
        cpu0 = {
            "api": tree_cpu(server.pid),
            "workers": sum(tree_cpu(p.pid) for p in workers),
            "db": backend_cpu(reg.db.engine),
            "load generator": time.process_time(),
        }
        wall0 = time.perf_counter()
        with QueueSampler(reg) as sampler:
            done = asyncio.run(load(server.port, day, args.rate, args.seconds, args.connections))
        load_after = os.getloadavg()
        made_during = certificates_since(reg, since)
        drain_start = time.perf_counter()
        created = done["statuses"].get(201, 0)
        while time.perf_counter() - drain_start < args.drain:
            if lag(reg, since)[2] == 0:
                break
            time.sleep(0.5)
        drained = time.perf_counter() - drain_start
        db_end = backend_cpu(reg.db.engine)
        cpu = {
            "api": tree_cpu(server.pid) - cpu0["api"],
            "workers": sum(tree_cpu(p.pid) for p in workers) - cpu0["workers"],
            "db": sum(s - cpu0["db"].get(p, 0.0) for p, s in db_end.items()),
            "load generator": time.process_time() - cpu0["load generator"],
        }
        wall = time.perf_counter() - wall0
    lags, vaccinations, missing = lag(reg, since)
    reg.close()
    latencies = sorted(done["latencies"])
    queue = sampler.figures()
    vaccinations_per_s = vaccinations / done["seconds"]
    certificates_per_s = made_during / done["seconds"]
    return {
        "db": args.db,
        "api": args.api,
        "workers": args.workers,
        "target_rate": args.rate,
        "sent": done["sent"],
        "statuses": dict(done["statuses"]),
        "load_seconds": done["seconds"],
        "vaccinations": vaccinations,
        "created": created,
        "vaccinations_per_s": vaccinations_per_s,
        "certificates_per_s_during_load": certificates_per_s,
        "pace_ratio": harness.ratio(certificates_per_s, vaccinations_per_s),
        "queue": queue,
        "drain_seconds": drained,
        "without_certificate": missing,
        "lag_p50": harness.percentile(lags, 50),
        "lag_p99": harness.percentile(lags, 99),
        "lag_max": lags[-1] if lags else 0.0,
        "request_p50_ms": 1000 * harness.percentile(latencies, 50),
        "request_p99_ms": 1000 * harness.percentile(latencies, 99),
        "cpu_seconds": cpu,
        "wall_seconds": wall,
        "cpus": os.cpu_count(),
        "load_average_before": load_before[0],
        "load_average_after": load_after[0],
    }


def report(r: dict[str, Any]) -> None:
    n = max(r["vaccinations"], 1)
    workers = (f"M={r['workers']} worker process(es)" if r["workers"]
               else "the server's inline worker thread")  # fmt: skip
    print(
        f"\n{r['db']}, worker_max_batch {r.get('max_batch', 0)}: N={r['api']} API process(es), "
        f"{workers}; target "
        f"{r['target_rate']:,.0f}/s for {r['load_seconds']:.1f} s; answers {r['statuses']}"
    )
    print(
        f"  sustained {r['vaccinations_per_s']:7.1f} vaccinations/s "
        f"({r['vaccinations_per_s'] / INDIA_RECORD_PER_SECOND:.2f}x India's record day, 466/s); "
        f"certificates during the load {r['certificates_per_s_during_load']:.1f}/s"
    )
    q = r["queue"]
    print(
        f"  issuance / API write rate {r['pace_ratio']:.2f}x; outbox queue peak "
        f"{q['peak_depth']:,} events, {q['end_depth']:,} at the end of the load "
        f"({q['growth_per_s']:+.1f}/s over its second half), oldest due event waited at most "
        f"{q['peak_oldest_age']:.1f} s"
    )
    print("  peak pending by event: " + ", ".join(
        f"{e} {n:,}" for e, n in list(q["peak_by_event"].items())[:5]))  # fmt: skip
    print(
        f"  certificate lag p50 {r['lag_p50']:.1f} s, p99 {r['lag_p99']:.1f} s, max "
        f"{r['lag_max']:.1f} s; {r['without_certificate']} of {r['vaccinations']:,} without a "
        f"certificate after a drain of {r['drain_seconds']:.1f} s"
    )
    print(f"  request latency from its due time p50 {r['request_p50_ms']:.0f} ms, "
          f"p99 {r['request_p99_ms']:.0f} ms")  # fmt: skip
    total = sum(r["cpu_seconds"].values())
    parts = ", ".join(
        f"{kind} {s:.1f} s ({1000 * s / n:.2f} ms/vaccination)"
        for kind, s in r["cpu_seconds"].items()
    )
    print(f"  CPU over {r['wall_seconds']:.1f} s on {r['cpus']} cores: {parts}; "
          f"total {total:.1f} s = {total / r['wall_seconds']:.2f} cores busy")  # fmt: skip
    print(f"  load average {r['load_average_before']:.2f} before, "
          f"{r['load_average_after']:.2f} at the end of the load")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--api", type=int, default=1, help="API processes (N; 1 on SQLite)")
    parser.add_argument(
        "--workers",
        type=int,
        help="outbox worker processes (M; 0: the server's inline thread; default 1 on "
        "PostgreSQL, 0 on SQLite, where it is at most 1)",
    )
    parser.add_argument("--rate", type=float, default=500, help="target vaccinations/s")
    parser.add_argument("--seconds", type=float, default=60, help="seconds of load")
    parser.add_argument("--drain", type=float, default=60, help="at most this long to catch up")
    parser.add_argument("--facilities", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=64, help="at most this many")
    parser.add_argument("--quick", action="store_true", help="15 s of load, 500 facilities")
    parser.add_argument(
        "--max-batch",
        default="0",
        help="the workers' worker_max_batch, or several comma-separated: one day each, on a "
        "fresh database, in this order (100,0: batches fixed at 100 as before, then as shipped)",
    )
    parser.add_argument("--json-out", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.drain, args.facilities = 15, 30, 500
    if args.workers is None:
        args.workers = 0 if args.db == "sqlite" else 1
    results = []
    for max_batch in (int(v) for v in args.max_batch.split(",")):
        ENV["REGISTRY_WORKER_MAX_BATCH"] = str(max_batch)
        result = {"max_batch": max_batch, **one_day(args)}
        report(result)
        results.append(result)
    if len(results) > 1:
        first = results[0]
        for r in results[1:]:
            api = harness.ratio(r["vaccinations_per_s"], first["vaccinations_per_s"])
            certs = harness.ratio(
                r["certificates_per_s_during_load"], first["certificates_per_s_during_load"]
            )
            print(
                f"\nworker_max_batch {r['max_batch']} against {first['max_batch']}: issuance / "
                f"write rate {r['pace_ratio']:.2f}x vs {first['pace_ratio']:.2f}x; API "
                f"vaccinations/s {api:.2f}x, certificates/s {certs:.2f}x; queue peak "
                f"{r['queue']['peak_depth']:,} vs {first['queue']['peak_depth']:,}"
            )
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=1))
    print(json.dumps(results))


def one_day(args: argparse.Namespace) -> dict[str, Any]:
    """`run_day` on a fresh database of `args.db` (a throwaway PostgreSQL database, dropped)."""
    if args.db == "sqlite":
        if args.api != 1 or args.workers > 1:
            raise SystemExit("SQLite: one API process and at most one worker process (--workers 1)")
        with harness.scratch_folder() as folder:
            return run_day(args, harness.sqlite_url(folder), folder)
    pg_url = harness.pg_admin_url("REGISTRY_TEST_PG_URL")
    problem = harness.pg_problem(pg_url)
    if problem:
        raise SystemExit(f"PostgreSQL does not answer at {pg_url}: {problem}")
    with harness.scratch_folder() as folder, harness.pg_database(pg_url) as url:
        return run_day(args, url, folder)


if __name__ == "__main__":
    main()
