"""A registry behind PgBouncer in transaction mode (Debian's `pgbouncer`, started here on a
loopback port in front of the test PostgreSQL): migrations, writes from several threads
sharing few server connections, and reads. Skipped when pgbouncer is not installed
(`apt-get install -y pgbouncer`); PgBouncer before 1.21 keeps no prepared statements in
transaction mode, so the registry runs with `database_prepared_statements` off."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa

from open_registry.core import Settings, create_app, storage
from open_registry.core.app import open_registry
from tests.authn import admin_client

pytestmark = pytest.mark.postgres

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres_user(folder: Path) -> dict[str, str]:
    """How to run a server as `postgres` when the tests run as root (PgBouncer refuses root)."""
    if os.geteuid() != 0:
        return {}
    shutil.chown(folder, "postgres")
    return {"user": "postgres", "group": "postgres"}


@pytest.fixture
def bouncer_url(database_url: str) -> Iterator[str]:
    """The test's PostgreSQL database through PgBouncer in transaction mode; the bouncer's
    server connections are gone when it ends (so the database can be reused)."""
    if not os.access(PGBOUNCER, os.X_OK):
        if os.environ.get("CI"):
            pytest.fail("pgbouncer is required in CI: apt-get install -y pgbouncer")
        pytest.skip("pgbouncer is not installed (apt-get install -y pgbouncer)")
    server = sa.engine.make_url(database_url)
    folder = Path(tempfile.mkdtemp(prefix="registry-pgbouncer-"))
    port = free_port()
    (folder / "users.txt").write_text(f'"{server.username}" ""\n')
    (folder / "pgbouncer.ini").write_text(
        f"[databases]\n* = host={server.host} port={server.port or 5432}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {folder / 'users.txt'}\n"
        "pool_mode = transaction\ndefault_pool_size = 2\nmax_client_conn = 50\n"
        f"logfile = {folder / 'pgbouncer.log'}\n"
    )
    as_postgres = _as_postgres_user(folder)
    proc = subprocess.Popen(
        [PGBOUNCER, str(folder / "pgbouncer.ini")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        **as_postgres,  # type: ignore[call-overload]
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                log = folder / "pgbouncer.log"
                pytest.fail(
                    f"pgbouncer did not start:\n{log.read_text()[-2000:] if log.exists() else ''}"
                )
            time.sleep(0.05)
        yield server.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
    finally:
        proc.terminate()
        proc.wait(10)
        _wait_for_no_sessions(database_url)
        shutil.rmtree(folder, ignore_errors=True)


def _wait_for_no_sessions(url: str) -> None:
    """Until the server has no session on the database of `url` but this one (at most 5 s)."""
    engine = sa.create_engine(url)
    try:
        deadline = time.monotonic() + 5
        with engine.connect() as conn:
            while time.monotonic() < deadline:
                others = conn.exec_driver_sql(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid()"
                ).scalar()
                conn.rollback()
                if not others:
                    return
                time.sleep(0.05)
    finally:
        engine.dispose()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_registry_writes_and_reads_through_pgbouncer_in_transaction_mode(
    database_url: str, bouncer_url: str, tmp_path: Path
) -> None:
    # the tables, built directly (a copy of the suite's template database: quick)
    open_registry(
        Settings(database_url=database_url, data_dir=tmp_path / "data", load_entrypoints=False)
    ).close()
    settings = Settings(
        database_url=bouncer_url,
        data_dir=tmp_path / "data",
        load_entrypoints=False,
        inline_worker=False,
        database_prepared_statements=False,
        pool_size=6,  # 6 client connections over PgBouncer's 2 server connections
    )
    reg = open_registry(settings)  # start-up's schema check runs through PgBouncer
    try:
        with reg.db.engine.connect() as conn:  # really through the bouncer, to the server
            assert conn.exec_driver_sql("SELECT inet_server_port()").scalar() != int(
                sa.engine.make_url(bouncer_url).port or 0
            )
        vaccines = reg.services["vaccine"]

        def create(i: int) -> str:
            body = {
                "code": f"V{i}",
                "name": f"Vaccine {i}",
                "manufacturer": "M",
                "status": "Active",
            }
            for _ in range(6):  # each query more than prepare_threshold times
                vaccines.get(vaccines.create(body, actor="t")["id"])
                body = {**body, "code": f"{body['code']}x", "name": f"{body['name']}x"}
            return body["code"]

        with ThreadPoolExecutor(6) as pool:
            codes = list(pool.map(create, range(12)))
        assert len(codes) == 12
        with admin_client(create_app(registry=reg)) as client:
            page = client.get("/api/v1/vaccine", params={"status": "Active", "limit": "100"})
            assert page.status_code == 200, page.text
            assert len(page.json()["items"]) == 72
            some = page.json()["items"][0]
            changed = client.patch(
                f"/api/v1/vaccine/{some['id']}",
                json={"manufacturer": "N"},
                headers={"If-Match": f'"{some["_version"]}"'},
            )
            assert changed.status_code == 200, changed.text
            assert client.get(f"/api/v1/vaccine/{some['id']}").json()["manufacturer"] == "N"
        with storage.read(reg.db.engine) as conn:  # the audit log holds every write
            assert conn.exec_driver_sql("SELECT count(*) FROM registry_audit").scalar() == 73
    finally:
        reg.close()
