"""Soak test: mixed API load on a loopback registry while its server and worker are killed with
SIGKILL and started again; then checks that nothing acknowledged was lost or written twice.

Per database (`--db sqlite`, `--db postgresql`, default both), on a fresh registry (a scratch
folder, a throwaway PostgreSQL database) with the demo data and, made before the load (not
part of it): `--facilities` facilities active for the demo programme (a daily rate far above
the run's, so the programme's rate rule never refuses), a pool of recipients to vaccinate, a
bearer token per facility (role `facility-staff`) and one `system-admin` token. Then:

- processes: `registry serve` in a process group of its own; on SQLite it runs the outbox worker
  itself (one writer), on PostgreSQL `--workers 2` with the inline worker off, plus a separate
  `registry worker --processes 2`;
- load: `--clients` threads, each a closed loop over its own keep-alive connection, for
  `--seconds`: vaccinations (a new recipient each, as a facility's staff), new recipients,
  reads by id, list pages, searches; one CSV import of `--import-rows` recipients
  (`POST /api/v1/recipient/imports`) and one export of the vaccinations, from other threads.
  Every write carries a unique marker (the vaccination's `batch`, the recipient's `name`) and
  an `Idempotency-Key`; a write is *acknowledged* when it got its 201 and id;
- faults: at 40 % of the load `kill -9` of the server's process group (uvicorn and its workers)
  and a restart on the same port; at 70 % `kill -9` of one worker process (PostgreSQL: a child
  of `registry worker --processes 2`, which its supervisor must start again; SQLite: the server
  again, since it holds the worker). Clients retry a write that met a connection error with the
  same `Idempotency-Key`; a key whose request died with the server answers 409 for a day, so
  then the client looks its marker up (present: the write committed before the crash) and,
  only when it is absent, sends it again under a new key;
- watching: every `--scrape` seconds one line from `/metrics` (outbox events pending, the
  oldest one's age, deliveries pending, requests so far); `registry audit verify
  --no-checkpoint` at 25 % and 85 % of the load, while the writes go on;
- drain: the load stops; the workers must empty the outbox within `--drain` seconds;
- checks (PASS/FAIL each): every acknowledged write is there (by id, and the import's rows by
  marker); every vaccination of the run has exactly one current certificate (certificates =
  vaccinations); no marker is held by two records (no duplicates from retries); the killed
  worker came back; the lag rose under load and fell to 0; no 500 answer; no dead outbox event;
  `registry audit verify` passed during the load (at least twice) and after.

Exits 1 when any check fails. Timings are printed, never asserted. Loopback only; the folder and
the database are removed at the end (`--keep DIR` copies the processes' logs to DIR first).

    .venv/bin/python benchmarks/soak.py --quick                  # ~30 s of load per database
    .venv/bin/python benchmarks/soak.py                          # ~120 s of load per database
    .venv/bin/python benchmarks/soak.py --db postgresql --seconds 300 --clients 8
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import http.client
import io
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import harness

REGISTRY = str(Path(sys.executable).with_name("registry"))
#: how long one write is retried through an outage before the client gives up on it
RETRY_SECONDS = 180.0
#: the server's start-up on two busy cores (uvicorn's workers import everything again)
START_SECONDS = 240.0


# -- processes ---------------------------------------------------------------------------------
class GroupServer(harness.ServerProcess):
    """`harness.ServerProcess` started in a session of its own (its own process group, so that
    `kill9` takes uvicorn's worker processes with it) on a port chosen by the caller (so that a
    restart listens where the clients already connect)."""

    def __init__(
        self, name: str, command: Callable[[int], Sequence[str]], log_dir: Path, port: int
    ) -> None:
        self.name = name
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.health_url = self.base_url + "/health"
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            list(command(port)), stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def kill9(self) -> None:
        """SIGKILL to the whole process group, then reap the leader."""
        kill_group(self.proc)
        self._log.close()


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL to the process group `proc` leads (started with `start_new_session`)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def stop_group(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM to the leader (it stops its own children), SIGKILL to the group after `timeout`
    or when something of the group is left."""
    if proc.poll() is None:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    kill_group(proc)


def children(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of the live child processes of `pid` (Linux /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(stat[1]) == pid and stat[0] != "Z":
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                out.append((int(entry.name), cmd))
        except (OSError, IndexError, ValueError):
            continue
    return out


def worker_children(pid: int) -> list[int]:
    """The worker processes of `registry worker --processes N` (spawned children; not
    multiprocessing's resource tracker)."""
    return sorted(p for p, cmd in children(pid) if "spawn_main" in cmd)


def audit_verify(url: str, data_dir: Path) -> tuple[int, str]:
    """`registry audit verify --no-checkpoint`: (exit code, its first line)."""
    try:
        done = subprocess.run(
            [REGISTRY, "audit", "verify", "--no-checkpoint", "--database-url", url,
             "--data-dir", str(data_dir)],
            capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return -1, "timed out after 600 s"
    text = (done.stdout.strip() or done.stderr.strip() or "(no output)").splitlines()
    return done.returncode, text[0] if done.returncode == 0 else " | ".join(text[-3:])


# -- set-up ------------------------------------------------------------------------------------
PERSON = harness.PERSON


def set_up(reg: Any, tag: str, facilities: int, people: int) -> dict[str, Any]:
    """Facilities active for the programme, recipients to vaccinate, tokens; the set-up's own
    outbox events marked done (they are not the soak's)."""
    from open_registry.core.testing import token_for
    from open_registry.plugins.certificates.runtime import runtime

    codes = [f"SOAK{tag}{i:02d}" for i in range(facilities)]
    day = harness.vaccination_day(reg, codes, people, label=f"Soak pool {tag}")
    runtime(reg)  # the certificates' signing key made now, not by two worker processes at once
    return {
        "codes": codes,
        "staff": {
            c: token_for(reg, "facility-staff", facility=c, subject=f"soak-staff-{c}")
            for c in codes
        },
        "admin": token_for(reg, "system-admin", subject="soak-admin"),
        "pool": day["recipients"],
        "program": day["program"],
        "vaccine": day["vaccine"],
        "vaccinator": day["vaccinator"],
    }


# -- the shared state of one run ---------------------------------------------------------------
class Run:
    """What the load threads, the scraper and the controller share (under `lock`)."""

    def __init__(self, tag: str, day: dict[str, Any], port: int) -> None:
        self.tag, self.day, self.port = tag, day, port
        self.lock = threading.Lock()
        self.t0 = time.monotonic()
        self.stop = threading.Event()  # the load is over
        self.done = threading.Event()  # the run is over (the scraper stops)
        self.epoch = 0  # server kills so far: a key sent before one may have died with it
        self.requests: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.acked: dict[str, dict[str, str]] = {"vaccination": {}, "recipient": {}}  # id -> mark
        self.recovered: dict[str, dict[str, str]] = {"vaccination": {}, "recipient": {}}
        self.replayed = 0
        self.resent = 0  # writes whose key died with a server and which were not stored
        self.to_vaccinate: collections.deque[str] = collections.deque(day["pool"])
        self.samples: list[dict[str, Any]] = []
        self.events: list[str] = []
        self.verifies: list[tuple[float, int, str]] = []
        self.restarts: list[tuple[str, bool]] = []  # (what happened, came back)
        self.serial = 0

    def now(self) -> float:
        return time.monotonic() - self.t0

    def say(self, text: str) -> None:
        line = f"  t={self.now():6.1f}s  {text}"
        with self.lock:
            self.events.append(line)
            print(line, flush=True)

    def count(self, kind: str, error: str | None = None) -> None:
        with self.lock:
            self.requests[kind] += 1
            if error:
                self.errors[error] += 1

    def marker(self, prefix: str) -> str:
        with self.lock:
            self.serial += 1
            return f"{prefix}-{self.tag}-{self.serial:06d}-{uuid.uuid4().hex[:6]}"


class Client:
    """One keep-alive HTTP/1.1 connection to the server, opened again after any failure."""

    def __init__(self, port: int, timeout: float = 120) -> None:
        self.port, self.timeout = port, timeout
        self.conn: http.client.HTTPConnection | None = None

    def request(
        self, method: str, path: str, token: str, body: Any = None,
        headers: dict[str, str] | None = None, raw: bytes | None = None,
    ) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
        """(status, headers in lower case, body); raises OSError / HTTPException when the
        connection fails (and drops it)."""
        head = {"Authorization": f"Bearer {token}", **(headers or {})}
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            head["Content-Type"] = "application/json"
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            self.conn.request(method, path, body=data, headers=head)
            resp = self.conn.getresponse()
            content = resp.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        if resp.getheader("connection", "").lower() == "close":
            self.close()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, content

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _problem(content: bytes) -> str:
    """A problem+json answer's type slug or title, for counting errors by kind."""
    try:
        doc = json.loads(content)
        return str(doc.get("type") or doc.get("title") or "").rsplit("/", 1)[-1]
    except ValueError:
        return ""


def lookup(run: Run, client: Client, entity: str, field: str, mark: str) -> str | None:
    """The id of the record holding marker `mark` (as the admin), None when there is none;
    retried through an outage."""
    from urllib.parse import quote

    deadline = time.monotonic() + RETRY_SECONDS
    while time.monotonic() < deadline:
        try:
            status, _, content = client.request(
                "GET", f"/api/v1/{entity}?{field}={quote(mark)}&limit=5", run.day["admin"]
            )
        except (OSError, http.client.HTTPException):
            time.sleep(0.5)
            continue
        run.count("lookup", None if status == 200 else f"lookup {status}")
        if status == 200:
            items = json.loads(content)["items"]
            return str(items[0]["id"]) if items else None
        time.sleep(0.5)
    return None


def write(
    run: Run, client: Client, entity: str, body: dict[str, Any], token: str, field: str,
    path: str | None = None,
) -> str | None:  # fmt: skip
    """POST `body` with an Idempotency-Key, retried with the same key through connection errors
    and 5xx; returns the id once it is known to be stored, None when refused or given up."""
    mark = str(body[field])
    key, epoch = uuid.uuid4().hex, run.epoch
    deadline = time.monotonic() + RETRY_SECONDS
    kind = f"create {entity}"
    while time.monotonic() < deadline:
        try:
            status, headers, content = client.request(
                "POST", path or f"/api/v1/{entity}", token, body, {"Idempotency-Key": key}
            )
        except (OSError, http.client.HTTPException) as exc:
            run.count(kind, f"connection ({type(exc).__name__})")
            time.sleep(0.5)
            continue
        if status == 201:
            run.count(kind)
            new_id = str(json.loads(content)["id"])
            with run.lock:
                run.acked[entity][new_id] = mark
                run.replayed += headers.get("idempotent-replayed") == "true"
            return new_id
        slug = _problem(content)
        run.count(kind, f"{status} {slug}".strip())
        if status == 409 and "retry-after" in headers:  # the key's first request still runs
            if run.epoch != epoch:  # ... or died with a killed server: did it commit?
                found = lookup(run, client, entity, field, mark)
                if found is not None:
                    with run.lock:
                        run.recovered[entity][found] = mark
                    return found
                key, epoch = uuid.uuid4().hex, run.epoch  # never committed: send it again
                with run.lock:
                    run.resent += 1
            time.sleep(float(headers.get("retry-after", "1")))
            continue
        if status >= 500:  # not kept with the key: the same key runs the write again
            time.sleep(float(headers.get("retry-after", "1")))
            continue
        return None  # refused (4xx): not a write
    run.count(kind, "gave up (outage longer than the retry window)")
    return None


def reads(run: Run, client: Client, rng: random.Random) -> None:
    """One read: a record by id, a list page or a search."""
    day, choice = run.day, rng.random()
    with run.lock:
        known = list(run.acked["vaccination"])[-200:] + list(run.acked["recipient"])[-200:]
    if choice < 0.35 and known:
        rid = rng.choice(known)
        entity = "vaccination" if rid in run.acked["vaccination"] else "recipient"
        op, args = "read by id", ("GET", f"/api/v1/{entity}/{rid}", day["admin"])
    elif choice < 0.7:
        code = rng.choice(day["codes"])
        op, args = "list", ("GET", f"/api/v1/vaccination?facility={code}&limit=20",
                            day["staff"][code])  # fmt: skip
    else:
        filters = {"name": {"startsWith": f"Soak api {run.tag}"}}
        op = "search"
        args = ("POST", "/api/v1/recipient/search", day["admin"])
        try:
            status, _, _ = client.request(*args, body={"filters": filters, "limit": 20})
        except (OSError, http.client.HTTPException) as exc:
            run.count(op, f"connection ({type(exc).__name__})")
            time.sleep(0.5)
            return
        run.count(op, None if status == 200 else f"{op} {status}")
        return
    try:
        status, _, _ = client.request(*args)
    except (OSError, http.client.HTTPException) as exc:
        run.count(op, f"connection ({type(exc).__name__})")
        time.sleep(0.5)
        return
    run.count(op, None if status == 200 else f"{op} {status}")


def load_thread(run: Run, seed: int) -> None:
    """A closed loop of mixed requests until the load stops (a write in progress is finished)."""
    rng = random.Random(seed)
    client = Client(run.port)
    day = run.day
    when = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    while not run.stop.is_set():
        choice = rng.random()
        code = rng.choice(day["codes"])
        if choice < 0.45:
            with run.lock:
                person = run.to_vaccinate.popleft() if run.to_vaccinate else None
            if person is not None:
                body = {
                    "recipient": person, "program": day["program"], "vaccine": day["vaccine"],
                    "facility": code, "vaccinator": day["vaccinator"], "dose": 1,
                    "totalDoses": 2, "batch": run.marker("SOAK"), "date": when,
                }  # fmt: skip
                write(run, client, "vaccination", body, day["staff"][code], "batch")
                continue
        if choice < 0.6:
            n = run.marker("R")
            body = {**PERSON, "name": f"Soak api {n}", "identity": f"SOAK-{n}"}
            made = write(run, client, "recipient", body, day["staff"][code], "name")
            if made is not None:
                with run.lock:
                    run.to_vaccinate.appendleft(made)
            continue
        reads(run, client, rng)
    client.close()


def scrape_thread(run: Run, every: float) -> None:
    """One line from /metrics every `every` seconds until the run is over."""
    from prometheus_client.parser import text_string_to_metric_families

    client = Client(run.port, timeout=20)
    first = True
    while not run.done.wait(0 if first else every):
        first = False
        sample: dict[str, Any] = {"t": run.now(), "load": not run.stop.is_set()}
        with run.lock:
            sample["requests"] = sum(run.requests.values())
        try:
            status, _, content = client.request("GET", "/metrics", run.day["admin"])
            if status != 200:
                raise http.client.HTTPException(f"status {status}")
        except (OSError, http.client.HTTPException) as exc:
            run.say(f"/metrics: down ({type(exc).__name__})  requests {sample['requests']}")
            continue
        values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(content.decode()):
            for s in family.samples:
                values[(s.name, tuple(sorted(s.labels.items())))] = s.value
        sample["pending"] = values.get(
            ("registry_outbox_queue_depth", (("status", "pending"),)), 0.0
        )
        sample["oldest"] = values.get(("registry_outbox_oldest_pending_age_seconds", ()), 0.0)
        sample["deliveries"] = values.get(
            ("registry_delivery_queue_depth", (("status", "pending"),)), 0.0
        )
        sample["vacc_pending"] = values.get(
            ("registry_outbox_pending_by_event", (("event", "vaccination.created"),)), 0.0
        )
        with run.lock:
            run.samples.append(sample)
        run.say(
            f"/metrics: outbox pending {sample['pending']:6.0f} (vaccination.created "
            f"{sample['vacc_pending']:5.0f})  oldest {sample['oldest']:6.1f}s  deliveries "
            f"pending {sample['deliveries']:4.0f}  requests {sample['requests']:6d}"
            + ("" if sample["load"] else "  [drain]")
        )
    client.close()


def import_thread(run: Run, rows: int, out: dict[str, Any]) -> None:
    """One CSV import of `rows` recipients through the API; waits for its job to end."""
    import csv

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["identity", "name", "dob", "gender", "address.district", "address.state",
                "address.pincode"])  # fmt: skip
    for i in range(rows):
        w.writerow([f"SOAK-{run.tag}-I{i}", f"Soak import {run.tag} {i}", "1985-02-03",
                    "Male", "Riverside", "Northland", "411056"])  # fmt: skip
    raw = buf.getvalue().encode()
    client = Client(run.port)
    key, epoch = uuid.uuid4().hex, run.epoch
    deadline = time.monotonic() + RETRY_SECONDS
    job: str | None = None
    while job is None and time.monotonic() < deadline:
        try:
            status, headers, content = client.request(
                "POST", "/api/v1/recipient/imports", run.day["admin"],
                headers={"Idempotency-Key": key, "Content-Type": "text/csv"}, raw=raw,
            )  # fmt: skip
        except (OSError, http.client.HTTPException) as exc:
            run.count("import", f"connection ({type(exc).__name__})")
            time.sleep(0.5)
            continue
        run.count("import", None if status == 202 else f"import {status} {_problem(content)}")
        if status == 202:
            job = headers["location"]
        elif status == 409 and run.epoch != epoch:
            out["error"] = "the import's key died with the server before its job started"
            return
        elif status in (409, 503) or status >= 500:
            time.sleep(1)
        else:
            out["error"] = f"import refused: {status} {content[:200]!r}"
            return
    run.say(f"import of {rows} recipients started: {job}")
    while job is not None and time.monotonic() < deadline:
        try:
            status, _, content = client.request("GET", job, run.day["admin"])
        except (OSError, http.client.HTTPException):
            time.sleep(1)
            continue
        state = json.loads(content) if status == 200 else {}
        if state.get("status") in ("done", "failed"):
            out.update(state)
            run.say(
                f"import {state['status']}: {state['inserted']} inserted, {state['failed']} "
                f"failed of {state['rows']} rows"
            )
            break
        time.sleep(1)
    client.close()


def export_thread(run: Run, out: dict[str, Any]) -> None:
    """One CSV export of the vaccinations, read to its end."""
    client = Client(run.port, timeout=300)
    started = time.monotonic()
    try:
        status, _, content = client.request("GET", "/api/v1/vaccination/export", run.day["admin"])
    except (OSError, http.client.HTTPException) as exc:
        run.count("export", f"connection ({type(exc).__name__})")
        out["error"] = repr(exc)
        return
    finally:
        client.close()
    run.count("export", None if status == 200 else f"export {status}")
    out.update(status=status, lines=content.count(b"\n"), seconds=time.monotonic() - started)
    run.say(f"export: {status}, {out['lines']} lines in {out['seconds']:.1f} s")


# -- one database --------------------------------------------------------------------------
class Processes:
    """The server (and on PostgreSQL the worker supervisor) of one run, each in its own
    process group, logs in `folder`."""

    def __init__(self, backend: str, url: str, data_dir: Path, folder: Path) -> None:
        self.backend, self.url, self.data_dir, self.folder = backend, url, data_dir, folder
        self.port = harness.free_port()
        self.common = ["--database-url", url, "--data-dir", str(data_dir)]
        self.server: GroupServer | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start_server(self) -> float:
        """Start `registry serve` and wait for /health; returns the seconds it took."""
        self.starts += 1
        extra = ["--workers", "2"] if self.backend == "postgresql" else []
        started = time.monotonic()
        self.server = GroupServer(
            f"server-{self.starts}",
            lambda port: [REGISTRY, "serve", "--port", str(port), *extra, *self.common],
            self.folder, self.port,
        )  # fmt: skip
        self.server.wait_ready(timeout=START_SECONDS)
        return time.monotonic() - started

    def start_worker(self) -> None:
        """`registry worker --processes 2` (PostgreSQL only)."""
        log = (self.folder / "worker.log").open("ab")
        self.worker = subprocess.Popen(
            [REGISTRY, "worker", "--processes", "2", "--poll", "0.5", *self.common],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        log.close()

    def stop(self) -> None:
        if self.server is not None:
            stop_group(self.server.proc)
            self.server.stop()  # closes its log
        if self.worker is not None:
            stop_group(self.worker)

    def tracebacks(self) -> int:
        """Tracebacks in the processes' logs (a crash's own are none: SIGKILL writes nothing)."""
        return sum(
            p.read_text(errors="replace").count("Traceback") for p in self.folder.glob("*.log")
        )


@contextlib.contextmanager
def env(values: dict[str, str]) -> Iterator[None]:
    """Environment variables set for the child processes started inside."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def pending_events(engine: Any) -> tuple[int, int]:
    """(pending, dead) outbox events, from the database."""
    import sqlalchemy as sa

    with engine.connect() as conn:
        rows = dict(
            conn.execute(
                sa.text(
                    "SELECT status, count(*) FROM registry_outbox "
                    "WHERE status IN ('pending', 'dead') GROUP BY status"
                )
            ).all()
        )
    return int(rows.get("pending", 0)), int(rows.get("dead", 0))


def kill_server(run: Run, procs: Processes, why: str) -> None:
    """kill -9 of the server's process group, then a restart on the same port."""
    assert procs.server is not None
    pids = [procs.server.pid] + [p for p, _ in children(procs.server.pid)]
    with run.lock:
        run.epoch += 1
    procs.server.kill9()
    run.say(f"kill -9 of the server's process group ({why}): pids {pids}")
    try:
        took = procs.start_server()
    except RuntimeError as exc:
        run.say(f"server did NOT start again: {str(exc).splitlines()[-1]}")
        run.restarts.append((f"server ({why}): did not start", False))
        return
    run.say(f"server answers /health again after {took:.1f} s")
    run.restarts.append((f"server ({why}): back in {took:.1f} s", True))


def kill_worker(run: Run, procs: Processes) -> None:
    """kill -9 of one process of `registry worker --processes 2`; its supervisor must start
    another within 60 s (else it is started again here and the check fails)."""
    assert procs.worker is not None
    before = worker_children(procs.worker.pid)
    if not before:
        run.say("no worker process to kill")
        run.restarts.append(("worker: none found", False))
        return
    victim = before[0]
    os.kill(victim, signal.SIGKILL)
    run.say(f"kill -9 of worker process {victim} (of {before})")
    start = time.monotonic()
    while time.monotonic() - start < 60:
        now = worker_children(procs.worker.pid)
        if victim not in now and len(now) >= len(before):
            took = time.monotonic() - start
            run.say(f"worker processes {now}: the supervisor started one again in {took:.1f} s")
            run.restarts.append(
                (f"worker process: replaced by its supervisor in {took:.1f} s", True)
            )
            return
        time.sleep(0.5)
    run.say("the worker supervisor did NOT start the killed process again; restarting it")
    run.restarts.append(("worker process: NOT replaced by its supervisor", False))
    stop_group(procs.worker)
    procs.start_worker()


def at(run: Run, fraction: float, seconds: float) -> None:
    """Wait until `fraction` of the load's `seconds` has passed."""
    time.sleep(max(0.0, run.t0 + fraction * seconds - time.monotonic()))


def run_backend(backend: str, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """Set up, load with faults, drain and check one database; returns its figures."""
    data_dir = folder / "data"
    tag = uuid.uuid4().hex[:4]
    with harness.database(backend, data_dir, args.pg_url) as url:
        print(f"\n=== {backend}: set-up (database, demo data, {args.facilities} facilities, "
              f"{args.people:,} recipients to vaccinate)", flush=True)  # fmt: skip
        reg = harness.open_bench_registry(
            url, data_dir, demo=True, load_entrypoints=True, token_ttl_seconds=86_400,
            inline_worker=False,
        )  # fmt: skip
        try:
            day = set_up(reg, tag, args.facilities, args.people)
            values = {"REGISTRY_TOKEN_TTL_SECONDS": "86400"}
            if backend == "postgresql":
                values.update(REGISTRY_INLINE_WORKER="false", REGISTRY_POOL_SIZE="10")
            with env(values):
                procs = Processes(backend, url, data_dir, folder)
                try:
                    procs.start_server()
                    if backend == "postgresql":
                        procs.start_worker()
                    return soak(backend, args, url, data_dir, reg, day, tag, procs)
                finally:
                    procs.stop()
        finally:
            reg.close()


def soak(
    backend: str, args: argparse.Namespace, url: str, data_dir: Path, reg: Any,
    day: dict[str, Any], tag: str, procs: Processes,
) -> dict[str, Any]:  # fmt: skip
    """The load, the faults, the drain and the checks, with the processes running."""
    run = Run(tag, day, procs.port)
    seconds = args.seconds
    shape = ("serve --workers 2 (inline worker off) + worker --processes 2"
             if backend == "postgresql" else "serve (inline worker)")  # fmt: skip
    print(f"=== {backend}: {args.clients} clients for {seconds:.0f} s against {shape}, "
          f"port {procs.port}", flush=True)  # fmt: skip
    threads = [
        threading.Thread(target=load_thread, args=(run, i), daemon=True)
        for i in range(args.clients)
    ]
    scraper = threading.Thread(target=scrape_thread, args=(run, args.scrape), daemon=True)
    imported: dict[str, Any] = {}
    exported: dict[str, Any] = {}
    side: list[threading.Thread] = []

    def verify(label: str) -> None:
        rc, line = audit_verify(url, data_dir)
        with run.lock:
            run.verifies.append((run.now(), rc, label))
        run.say(f"audit verify ({label}): exit {rc}: {line}")

    def background(target: Callable[..., None], *a: Any) -> None:
        t = threading.Thread(target=target, args=a, daemon=True)
        t.start()
        side.append(t)

    for t in [*threads, scraper]:
        t.start()
    at(run, 0.1, seconds)
    background(import_thread, run, args.import_rows, imported)
    at(run, 0.25, seconds)
    background(verify, "during load, 1")
    at(run, 0.4, seconds)
    kill_server(run, procs, "midway")
    at(run, 0.55, seconds)
    background(export_thread, run, exported)
    at(run, 0.7, seconds)
    if backend == "postgresql":
        kill_worker(run, procs)
    else:
        kill_server(run, procs, "it holds the worker")
    at(run, 0.85, seconds)
    background(verify, "during load, 2")
    at(run, 1.0, seconds)
    run.stop.set()
    drain_start = time.monotonic()  # the time to drain counts from here
    run.say("load stops; waiting for the clients' writes in progress")
    for t in threads:
        t.join(RETRY_SECONDS + 60)
    load_seconds = run.now()
    # drain: the workers empty the outbox (an audit verify may still run meanwhile)
    pending, dead = pending_events(reg.db.engine)
    while pending and time.monotonic() - drain_start < args.drain:
        time.sleep(0.5)
        pending, dead = pending_events(reg.db.engine)
    drained = time.monotonic() - drain_start
    run.say(f"drain: {pending} outbox events pending, {dead} dead after {drained:.1f} s")
    for t in side:
        t.join(RETRY_SECONDS + 600)
    pending, dead = pending_events(reg.db.engine)  # the import's events too, should it be late
    time.sleep(args.scrape + 0.5)  # one more /metrics line, after the drain
    run.done.set()
    scraper.join(30)
    procs.stop()
    rc, line = audit_verify(url, data_dir)
    run.verifies.append((run.now(), rc, "after"))
    run.say(f"audit verify (after): exit {rc}: {line}")
    checks = end_checks(run, reg, tag, imported, procs, pending, dead)
    requests = sum(run.requests.values())
    return {
        "backend": backend,
        "load_seconds": load_seconds,
        "requests": requests,
        "requests_by_kind": dict(run.requests),
        "errors": dict(run.errors),
        "acknowledged": {e: len(ids) for e, ids in run.acked.items()},
        "recovered": {e: len(ids) for e, ids in run.recovered.items()},
        "replayed": run.replayed,
        "resent": run.resent,
        "imported": imported.get("inserted"),
        "exported_lines": exported.get("lines"),
        "restarts": [text for text, _ in run.restarts],
        "peak_pending": max((s["pending"] for s in run.samples if "pending" in s), default=0),
        "peak_oldest": max((s["oldest"] for s in run.samples if "oldest" in s), default=0),
        "drain_seconds": drained,
        "pending_after_drain": pending,
        "tracebacks": procs.tracebacks(),
        "checks": checks,
    }


def end_checks(
    run: Run, reg: Any, tag: str, imported: dict[str, Any], procs: Processes, pending: int,
    dead: int,
) -> list[tuple[str, bool, str]]:  # fmt: skip
    """(name, passed, detail) of every end check."""
    import sqlalchemy as sa

    vt = reg.services["vaccination"].table
    rt = reg.services["recipient"].table
    ct = reg.services["certificate"].table
    checks: list[tuple[str, bool, str]] = []
    with reg.db.engine.connect() as conn:

        def missing(table: Any, ids: list[str]) -> int:
            found = 0
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                found += conn.execute(
                    sa.select(sa.func.count()).select_from(table)
                    .where(table.c.id.in_(chunk), table.c._deleted_at.is_(None))
                ).scalar_one()  # fmt: skip
            return len(ids) - found

        gone = {e: missing(t, list(run.acked[e]) + list(run.recovered[e]))
                for e, t in (("vaccination", vt), ("recipient", rt))}  # fmt: skip
        acked = {e: len(run.acked[e]) + len(run.recovered[e]) for e in gone}
        in_import = conn.execute(
            sa.select(sa.func.count()).select_from(rt)
            .where(rt.c.name.like(f"Soak import {tag} %"), rt.c._deleted_at.is_(None))
        ).scalar_one()  # fmt: skip
        want = imported.get("inserted")
        checks.append((
            "acknowledged writes present",
            not any(gone.values()) and want is not None and in_import == want,
            f"vaccinations {acked['vaccination'] - gone['vaccination']}/{acked['vaccination']}, "
            f"recipients {acked['recipient'] - gone['recipient']}/{acked['recipient']}, "
            f"imported rows {in_import}/{want if want is not None else 'job did not finish'}",
        ))  # fmt: skip
        ours = vt.c.batch.like(f"SOAK-{tag}-%")
        n_vacc = conn.execute(sa.select(sa.func.count()).select_from(vt).where(ours)).scalar_one()
        current = (
            sa.select(ct.c.vaccination, sa.func.count().label("n"))
            .where(ct.c.replacedBy.is_(None), ct.c._deleted_at.is_(None))
            .group_by(ct.c.vaccination).subquery()
        )  # fmt: skip
        n_current = sa.func.coalesce(current.c.n, sa.literal_column("0"))
        per = conn.execute(
            sa.select(n_current, sa.func.count())
            .select_from(vt.outerjoin(current, current.c.vaccination == vt.c.id))
            .where(ours, vt.c._deleted_at.is_(None)).group_by(n_current)
        ).all()  # fmt: skip
        spread = {int(n): int(c) for n, c in per}
        n_cert = conn.execute(
            sa.select(sa.func.count()).select_from(ct.join(vt, ct.c.vaccination == vt.c.id))
            .where(ours, ct.c.replacedBy.is_(None), ct.c._deleted_at.is_(None))
        ).scalar_one()  # fmt: skip
        checks.append((
            "certificates = vaccinations",
            n_vacc > 0 and n_cert == n_vacc and set(spread) == {1},
            f"{n_cert} current certificates for {n_vacc} vaccinations; vaccinations by number "
            f"of current certificates {spread}",
        ))  # fmt: skip
        dup_v = conn.execute(
            sa.select(sa.func.count()).select_from(
                sa.select(vt.c.batch).where(ours).group_by(vt.c.batch)
                .having(sa.func.count() > 1).subquery()
            )
        ).scalar_one()  # fmt: skip
        dup_r = conn.execute(
            sa.select(sa.func.count()).select_from(
                sa.select(rt.c.name).where(rt.c.name.like(f"Soak %{tag}%"))
                .group_by(rt.c.name).having(sa.func.count() > 1).subquery()
            )
        ).scalar_one()  # fmt: skip
        checks.append((
            "no duplicates from retries",
            dup_v == 0 and dup_r == 0,
            f"vaccination markers held twice: {dup_v}, recipient markers held twice: {dup_r}; "
            f"{run.replayed} answers replayed, {sum(map(len, run.recovered.values()))} writes "
            f"found by marker after a crash, {run.resent} not found and sent again",
        ))  # fmt: skip
    during = [(t, rc) for t, rc, label in run.verifies if label.startswith("during")]
    after = [rc for _, rc, label in run.verifies if label == "after"]
    checks.append((
        "audit verify during the load and after",
        len(during) >= 2 and all(rc == 0 for _, rc in during) and after == [0],
        f"during: {', '.join(f'exit {rc} at {t:.0f}s' for t, rc in during)}; after: exit "
        f"{after[0] if after else '-'}",
    ))  # fmt: skip
    checks.append((
        "server and worker came back after kill -9",
        len(run.restarts) == 2 and all(back for _, back in run.restarts),
        "; ".join(text for text, _ in run.restarts),
    ))  # fmt: skip
    loaded = [s["pending"] for s in run.samples if s.get("load") and "pending" in s]
    last = [s["pending"] for s in run.samples if "pending" in s][-1:]
    checks.append((
        "outbox lag rose under load and drained",
        bool(loaded) and max(loaded) > 0 and pending == 0 and last == [0],
        f"peak {max(loaded, default=0):.0f} pending during the load, {pending} after the drain "
        f"(last /metrics: {last[0] if last else '-'})",
    ))  # fmt: skip
    server_errors = {k: v for k, v in run.errors.items() if k.startswith("500")}
    checks.append(("no 500 answers", not server_errors, str(server_errors or "none")))
    checks.append(("no dead outbox events", dead == 0, f"{dead} dead"))
    return checks


# -- report ------------------------------------------------------------------------------------
def report(r: dict[str, Any]) -> bool:
    """Print one database's checks and summary; True when every check passed."""
    name = r["backend"]
    print(f"\n--- {name}: checks")
    ok = True
    for check, passed, detail in r["checks"]:
        ok &= passed
        print(f"  {'PASS' if passed else 'FAIL'}  {check}: {detail}")
    print(f"--- {name}: summary")
    rows = [
        ("load", f"{r['load_seconds']:.0f} s"),
        ("requests", f"{r['requests']:,} ({r['requests'] / max(r['load_seconds'], 1):.1f}/s); "
         + ", ".join(f"{k} {v}" for k, v in sorted(r["requests_by_kind"].items()))),
        ("writes acknowledged", f"vaccinations {r['acknowledged']['vaccination']:,}, recipients "
         f"{r['acknowledged']['recipient']:,}, imported rows {r['imported']}; found by marker "
         f"after a crash {r['recovered']}; replayed answers {r['replayed']}; sent again "
         f"under a new key {r['resent']}"),
        ("errors by kind", ", ".join(f"{k}: {v}" for k, v in sorted(r["errors"].items()))
         or "none"),
        ("restarts", "; ".join(r["restarts"])),
        ("peak lag", f"{r['peak_pending']:.0f} outbox events pending, oldest "
         f"{r['peak_oldest']:.1f} s"),
        ("time to drain", f"{r['drain_seconds']:.1f} s after the load "
         f"({r['pending_after_drain']} left)"),
        ("export", f"{r['exported_lines']} lines"),
        ("tracebacks in logs", str(r["tracebacks"])),
        ("checks", f"{sum(p for _, p, _ in r['checks'])}/{len(r['checks'])} passed"),
    ]  # fmt: skip
    for label, value in rows:
        print(f"  {label:<20} {value}")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", action="append", choices=("sqlite", "postgresql"),
                        help="database to soak (repeatable; default both)")  # fmt: skip
    parser.add_argument("--seconds", type=float, default=120, help="seconds of load")
    parser.add_argument("--quick", action="store_true", help="30 s of load, a smaller import")
    parser.add_argument("--clients", type=int, default=4, help="client threads")
    parser.add_argument("--facilities", type=int, default=4)
    parser.add_argument(
        "--people", type=int, default=0,
        help="recipients made before the load (default 60 per second of load)",
    )  # fmt: skip
    parser.add_argument("--import-rows", type=int, default=500)
    parser.add_argument("--scrape", type=float, default=3.0, help="seconds between /metrics")
    parser.add_argument("--drain", type=float, default=600, help="at most this long to drain")
    parser.add_argument("--pg-url", default=harness.pg_admin_url("REGISTRY_TEST_PG_URL"))
    parser.add_argument("--keep", type=Path, help="copy the processes' logs to this folder")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.import_rows = 30, min(args.import_rows, 200)
    args.people = args.people or int(60 * args.seconds) + 200
    backends = args.db or ["sqlite", "postgresql"]
    print(f"soak: {', '.join(backends)}; {args.seconds:.0f} s of load, {args.clients} clients; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip
    results = []
    for backend in backends:
        if backend == "postgresql" and (problem := harness.pg_problem(args.pg_url)):
            print(f"postgresql: skipped ({problem})")
            continue
        with harness.scratch_folder("registry-soak-") as folder:
            try:
                results.append(run_backend(backend, args, folder))
            finally:
                if args.keep:
                    target = args.keep / backend
                    target.mkdir(parents=True, exist_ok=True)
                    for log in folder.glob("*.log"):
                        (target / log.name).write_bytes(log.read_bytes())
    ok = all([report(r) for r in results])
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")
    print(json.dumps({"ok": ok, "results": results}, default=str))
    sys.exit(0 if ok and results else 1)


if __name__ == "__main__":
    main()
