"""Reads on a PostgreSQL streaming replica (`database_read_url`), with read-your-writes.

A primary and its streaming standby are started here, on loopback ports, in a temporary folder
(`initdb`, `pg_basebackup -R`, `pg_ctl`, run as the `postgres` user when the tests run as
root): the test server on 5432 is left alone. Replay on the standby is paused to make it lag,
which shows where each read went. Skipped when the PostgreSQL server programs are missing
(an error in CI)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from open_registry.core import Settings, create_app, storage
from open_registry.core.app import open_registry
from open_registry.core.testing import auth_headers
from tests.authn import admin_client

pytestmark = [pytest.mark.postgres, pytest.mark.fresh_migrations]


def _bin() -> Path | None:
    """The folder of the newest installed PostgreSQL's server programs."""
    root = Path("/usr/lib/postgresql")
    versions = sorted(
        (p for p in root.glob("*/bin") if (p / "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    return versions[-1] if versions else None


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(args: list[str], **kw: Any) -> None:
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, **kw)
    if done.returncode:
        raise RuntimeError(f"{' '.join(args)} failed: {done.stderr[-2000:]}")


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[str, str]]:
    """(primary URL, standby URL) of a database `registry` on a fresh primary and its
    streaming standby."""
    bin_dir = _bin()
    if bin_dir is None:
        if os.environ.get("CI"):
            pytest.fail("the PostgreSQL server programs are required in CI")
        pytest.skip("no PostgreSQL server programs (initdb, pg_ctl, pg_basebackup)")
    as_postgres: dict[str, Any] = {}
    base = Path(tempfile.mkdtemp(prefix="registry-replica-"))
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        shutil.chown(base, "postgres")
        as_postgres = {"user": "postgres", "group": "postgres"}
    primary, standby = base / "primary", base / "standby"
    p1, p2 = _port(), _port()
    started: list[Path] = []
    try:
        _run([str(bin_dir / "initdb"), "-D", str(primary), "-U", "postgres", "-A", "trust",
              "-N"], **as_postgres)  # fmt: skip
        with (primary / "postgresql.conf").open("a") as fh:  # small and quick
            fh.write(
                f"listen_addresses = '127.0.0.1'\nunix_socket_directories = '{base}'\n"
                "shared_buffers = 16MB\nmax_connections = 40\nfsync = off\n"
                "max_wal_senders = 4\nwal_level = replica\n"
            )
        shutil.chown(primary / "postgresql.conf", "postgres") if as_postgres else None
        for data, port in ((primary, p1), (standby, p2)):
            if data is standby:  # initdb's pg_hba.conf lets 127.0.0.1 replicate (trust)
                _run([str(bin_dir / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(p1),
                      "-U", "postgres", "-D", str(standby), "-R", "-X", "stream", "-c", "fast"],
                     **as_postgres)  # fmt: skip
            _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(base / f"{data.name}.log"),
                  "-o", f"-p {port}", "-w", "start"], **as_postgres)  # fmt: skip
            started.append(data)
        admin = sa.create_engine(
            f"postgresql+psycopg://postgres@127.0.0.1:{p1}/postgres", isolation_level="AUTOCOMMIT"
        )
        with admin.connect() as conn:
            conn.exec_driver_sql("CREATE DATABASE registry")
        admin.dispose()
        urls = tuple(f"postgresql://postgres@127.0.0.1:{p}/registry" for p in (p1, p2))
        _caught_up(urls[1], urls[0])
        yield urls[0], urls[1]
    finally:
        for data in reversed(started):
            subprocess.run([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                           capture_output=True, timeout=60, **as_postgres)  # fmt: skip
        shutil.rmtree(base, ignore_errors=True)


def _caught_up(standby_url: str, primary_url: str, timeout: float = 15) -> None:
    """Wait (bounded) until the standby has replayed what the primary has written."""
    primary = sa.create_engine(primary_url.replace("postgresql:", "postgresql+psycopg:"))
    standby = sa.create_engine(standby_url.replace("postgresql:", "postgresql+psycopg:"))
    deadline = time.monotonic() + timeout
    try:
        with primary.connect() as conn:
            target = conn.exec_driver_sql("SELECT pg_current_wal_lsn()::text").scalar()
        while True:
            try:
                with standby.connect() as conn:
                    behind = conn.execute(
                        sa.text("SELECT pg_last_wal_replay_lsn() < CAST(:t AS pg_lsn)"),
                        {"t": target},
                    ).scalar()
            except sa.exc.OperationalError:  # the database is not there yet
                behind = True
            if not behind:
                return
            if time.monotonic() > deadline:
                raise AssertionError("the standby did not catch up")
            time.sleep(0.05)
    finally:
        primary.dispose()
        standby.dispose()


def _replay(standby_url: str, paused: bool) -> None:
    engine = sa.create_engine(standby_url.replace("postgresql:", "postgresql+psycopg:"))
    with engine.connect() as conn:
        conn.exec_driver_sql(f"SELECT pg_wal_replay_{'pause' if paused else 'resume'}()")
    engine.dispose()


VACCINE = {"code": "V1", "name": "Alpha", "manufacturer": "M", "status": "Active"}


def test_reads_go_to_the_replica_and_see_the_writers_own_writes(
    servers: tuple[str, str], tmp_path: Path
) -> None:
    primary, standby = servers
    reg = open_registry(
        Settings(
            database_url=primary,
            database_read_url=standby,
            data_dir=tmp_path / "data",
            load_entrypoints=False,
            inline_worker=False,
        )
    )
    replica = storage.replica_of(reg.db.engine)
    assert replica is not None
    app = create_app(registry=reg)
    try:
        with (
            admin_client(app) as writer,
            admin_client(app, headers=auth_headers(reg, subject="another-admin")) as other,
        ):
            _caught_up(standby, primary)
            _replay(standby, paused=True)  # the standby lags from here on
            made = writer.post("/api/v1/vaccine", json=VACCINE)
            assert made.status_code == 201, made.text  # writes go to the primary
            rid = made.json()["id"]
            before = dict(replica.reads)
            # the writer reads their own write at once: the primary serves it
            assert writer.get(f"/api/v1/vaccine/{rid}").status_code == 200
            assert [r["id"] for r in writer.get("/api/v1/vaccine").json()["items"]] == [rid]
            assert replica.reads["primary"] == before["primary"] + 2
            # another caller reads the lagging replica: not there yet
            assert other.get(f"/api/v1/vaccine/{rid}").status_code == 404
            assert other.get("/api/v1/vaccine").json()["items"] == []
            export = other.get("/api/v1/vaccine/export", params={"format": "jsonl"})
            assert export.status_code == 200 and rid not in export.text
            assert replica.reads["replica"] >= before["replica"] + 3
            _replay(standby, paused=False)
            _caught_up(standby, primary)
            # replayed: everybody reads it on the replica, the writer included
            assert other.get(f"/api/v1/vaccine/{rid}").status_code == 200
            served = replica.reads["replica"]
            assert writer.get(f"/api/v1/vaccine/{rid}").status_code == 200
            assert replica.reads["replica"] == served + 1
    finally:
        _replay(standby, paused=False)
        reg.close()


def test_reads_fall_back_to_the_primary_when_the_replica_is_unreachable(
    servers: tuple[str, str], tmp_path: Path
) -> None:
    primary, _ = servers
    reg = open_registry(
        Settings(
            database_url=primary,
            database_read_url=f"postgresql://postgres@127.0.0.1:{_port()}/registry",
            data_dir=tmp_path / "data",
            load_entrypoints=False,
            inline_worker=False,
        )
    )
    try:
        with admin_client(create_app(registry=reg)) as client:
            assert client.get("/api/v1/vaccine").status_code == 200
        replica = storage.replica_of(reg.db.engine)
        assert replica is not None and replica.reads["down"] == 1
    finally:
        reg.close()
