"""What the benchmark scripts share: scratch folders and databases, registries opened on them,
server subprocesses, timing, CPU pinning and the Node verifier.

Importing it puts the repository's root on `sys.path`, so that a script run as
`python benchmarks/x.py` can import `tests.…` helpers. Only the standard library is imported
at module level (SQLAlchemy and the registry are imported where they are used), so a child
process that measures its own memory pays for nothing it does not use.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

    from open_registry.core import Settings
    from open_registry.core.app import Registry

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: the PostgreSQL server of the development machines and CI: trust authentication for `postgres`
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


# -- folders, databases, registries ----------------------------------------------------------


@contextlib.contextmanager
def scratch_folder(prefix: str = "registry-bench-") -> Iterator[Path]:
    """A temporary folder, removed with everything in it at the end."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


def sqlite_url(folder: Path, file: str = "registry.db") -> str:
    """The URL of SQLite database `file` in `folder`."""
    return f"sqlite:///{(folder / file).as_posix()}"


def pg_admin_url(env: str = "REGISTRY_BENCH_PG_URL") -> str:
    """The PostgreSQL server to create scratch databases on: environment variable `env`, else
    `DEFAULT_PG_URL`."""
    return os.environ.get(env, DEFAULT_PG_URL)


def _admin_engine(admin_url: str) -> Any:
    """An AUTOCOMMIT engine on `admin_url` (on database `postgres` when it names none)."""
    import sqlalchemy as sa

    url = sa.engine.make_url(admin_url)
    if not url.database:
        url = url.set(database="postgres")
    return sa.create_engine(url, isolation_level="AUTOCOMMIT")


def pg_problem(admin_url: str) -> str | None:
    """None when the PostgreSQL server of `admin_url` answers, else the first line of why not."""
    import sqlalchemy as sa

    try:
        engine = _admin_engine(admin_url)
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
        return None
    except Exception as exc:  # any failure means "no server"
        return str(exc).splitlines()[0]


@contextlib.contextmanager
def pg_database(
    admin_url: str, prefix: str = "registry_bench", options: Mapping[str, str] | None = None
) -> Iterator[str]:
    """A throwaway database `<prefix>_<random>` on the server of `admin_url`; yields its URL and
    drops it at the end (`WITH (FORCE)`, so connections left open do not stop it). `options`
    are set on it (`ALTER DATABASE … SET name = value`)."""
    import sqlalchemy as sa

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = _admin_engine(admin_url)
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
            for key, value in (options or {}).items():
                conn.execute(sa.text(f'ALTER DATABASE "{name}" SET {key} = {value}'))
        try:
            yield admin.url.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@contextlib.contextmanager
def database(backend: str, folder: Path, pg_url: str = "") -> Iterator[str]:
    """The URL of an empty database for `backend`: `sqlite`, a file in `folder`; `postgresql`,
    a `pg_database` on the server of `pg_url` (default `pg_admin_url()`), dropped at the end.
    `folder` is made when missing (a registry's data folder can go in it)."""
    folder.mkdir(parents=True, exist_ok=True)
    if backend == "sqlite":
        yield sqlite_url(folder)
    elif backend == "postgresql":
        with pg_database(pg_url or pg_admin_url()) as url:
            yield url
    else:
        raise SystemExit(f"unknown backend {backend!r} (sqlite, postgresql)")


def settings(url: str, data_dir: Path | str, **overrides: Any) -> Settings:
    """Registry settings on `url` and `data_dir`; entry-point plugins are not loaded unless
    `load_entrypoints=True` is among `overrides`."""
    from open_registry.core import Settings

    options: dict[str, Any] = {"load_entrypoints": False, **overrides}
    return Settings(database_url=url, data_dir=Path(data_dir), **options)


def open_bench_registry(
    url: str, data_dir: Path | str, *, demo: bool = False, **overrides: Any
) -> Registry:
    """`open_registry(settings(url, data_dir, **overrides))`, with the demo data when `demo`."""
    from open_registry.core import open_registry
    from open_registry.core.demo import load_demo_data

    reg = open_registry(settings(url, data_dir, **overrides))
    if demo:
        load_demo_data(reg.services)
    return reg


def create_all(
    service: Any, records: Iterable[dict[str, Any]], chunk: int = 500
) -> list[dict[str, Any]]:
    """`records` created through `service.create_many` as actor `bench`, `chunk` records per
    transaction; returns them as stored."""
    todo = list(records)
    made: list[dict[str, Any]] = []
    for i in range(0, len(todo), chunk):
        made += service.create_many([(None, r) for r in todo[i : i + chunk]], actor="bench")
    return made


def skip_pending(reg: Registry, keep: str | None = None) -> None:
    """Mark the pending outbox events done, but those of entity `keep`: the set-up writes' own
    events are not the benchmark."""
    t = reg.db.metadata.tables["registry_outbox"]
    where = [t.c.status == "pending"] + ([t.c.entity != keep] if keep else [])
    with reg.db.engine.begin() as conn:
        conn.execute(t.update().where(*where).values(status="done"))


#: a recipient's fields besides name and identity, valid for the shipped schema
PERSON: dict[str, Any] = {
    "dob": "1990-05-17",
    "gender": "Female",
    "nationality": "Examplian",
    "address": {
        "addressLine1": "1 Main Road",
        "district": "Portview",
        "state": "Eastmarch",
        "pincode": "523053",
        "country": "Examplia",
    },
}


def vaccination_day(
    reg: Registry, codes: list[str], people: int, *, label: str, rate: int = 10**6
) -> dict[str, Any]:
    """A registry holding the demo data readied for a day of vaccinations: facilities `codes`
    (copies of the first demo facility, named "`label` <code>") active for the first programme
    at `rate` a day, and `people` recipients ("`label` <i>", identity "<code of label>-<i>");
    the set-up's own outbox events marked done. Returns the programme's, vaccine's and
    vaccinator's codes and the recipients' ids."""
    services = reg.services

    def first(entity: str) -> dict[str, Any]:
        return services[entity].search(services[entity].parser.from_params([])).items[0]

    program, vaccine, vaccinator = first("program"), first("vaccine"), first("vaccinator")
    model = {k: v for k, v in first("facility").items() if not k.startswith("_") and k != "id"}
    create_all(
        services["facility"],
        ({**model, "code": code, "name": f"{label} {code}"} for code in codes),
    )
    create_all(
        services["facility_programme"],
        ({"facility": c, "program": program["code"], "status": "Active", "rate": rate}
         for c in codes),
    )  # fmt: skip
    key = "".join(ch for ch in label.upper() if ch.isalnum())
    recipients = create_all(
        services["recipient"],
        ({**PERSON, "name": f"{label} {i}", "identity": f"{key}-{i}"} for i in range(people)),
        chunk=1000,
    )
    skip_pending(reg)
    return {
        "program": program["code"],
        "vaccine": vaccine["code"],
        "vaccinator": vaccinator["code"],
        "recipients": [r["id"] for r in recipients],
    }


# -- servers ----------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (the system's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A child process serving HTTP on 127.0.0.1 at a free port, its output in a log file.

    `command(port)` is its command line. It starts at once and is not waited for, so several
    can start together: `wait_ready()` polls `health` until it answers 200. `stop()` terminates
    it (and kills it when it has not ended after 15 s).
    """

    def __init__(
        self,
        name: str,
        command: Callable[[int], Sequence[str]],
        log_dir: Path,
        health: str = "/health",
    ) -> None:
        self.name = name
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.health_url = self.base_url + health
        self.log_path = log_dir / f"server-{name}-{self.port}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            list(command(self.port)), stdout=self._log, stderr=subprocess.STDOUT
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = 60) -> None:
        """Return once the health URL answers 200; stop it and raise with its log's tail when
        it exits or `timeout` seconds pass first."""
        import http.client
        import urllib.request

        no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with no_proxy.open(self.health_url, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.2)
        self.stop()
        tail = self.log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"server {self.name} did not start:\n{tail}")

    def cpu_seconds(self) -> float | None:
        """User + system CPU time the process has used so far (Linux /proc), or None."""
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


# -- timing and figures -----------------------------------------------------------------------


def seconds_per_item(
    fn: Callable[[Any], Any],
    items: Sequence[Any],
    rounds: int,
    clock: Callable[[], float] = time.process_time,
) -> list[float]:
    """`rounds` passes of `fn` over `items`; per pass, `clock` seconds per item (CPU time of
    this process by default, so other load on the machine counts little)."""
    out = []
    for _ in range(rounds):
        start = clock()
        for item in items:
            fn(item)
        out.append(max(clock() - start, 1e-9) / len(items))
    return out


def median_seconds(fn: Callable[[], Any], repeat: int) -> float:
    """Median wall-clock seconds of `repeat` calls of `fn`, after one untimed warm-up call."""
    fn()
    return statistics.median(seconds_per_item(lambda _: fn(), [None], repeat, time.perf_counter))


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile `q` (0-100) of an already sorted list; 0.0 when it is empty."""
    if not sorted_values:
        return 0.0
    k = max(0, min(len(sorted_values) - 1, math.ceil(q / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


def ratio(value: float, baseline: float) -> float:
    """`value / baseline`, 0.0 when there is no baseline figure."""
    return value / baseline if baseline else 0.0


def add_pin_option(parser: argparse.ArgumentParser) -> None:
    """`--no-pin`, read by `pin_to_one_cpu`."""
    parser.add_argument("--no-pin", action="store_true", help="do not pin to one CPU")


def pin_to_one_cpu(args: argparse.Namespace) -> str:
    """Pin this process to one CPU unless `--no-pin`; says so: `<n> CPUs, pinned to one: <b>`."""
    if not args.no_pin and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    return f"{os.cpu_count()} CPUs, pinned to one: {not args.no_pin}"


def node_verify(payload: Any, verified: str = "verified") -> str:
    """Digital Bazaar's verifier (tests/node/verify.mjs) on `payload`, what it reads as JSON on
    stdin: `<ok>/<n> <verified>`, or why it did not run."""
    node_dir = ROOT / "tests" / "node"
    if shutil.which("node") is None or not (node_dir / "node_modules").is_dir():
        return "skipped (needs node and `cd tests/node && npm ci`)"
    done = subprocess.run(
        ["node", "verify.mjs"],
        cwd=node_dir,
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        return f"node failed: {done.stderr.strip()[:300]}"
    results = json.loads(done.stdout)
    return f"{sum(1 for r in results if r['verified'])}/{len(results)} {verified}"
