"""`registry worker --processes 2` on PostgreSQL: both processes drain one outbox, SIGTERM stops
all; and a worker's batches grow while the queue is deep.

The worker is started as a real command (its own processes, spawned by the supervisor) against
the test's database. A trigger makes settling an event take 10 ms in the database, so a batch
holds its rows for a while and the other process, polling meanwhile, must take the next rows
(FOR UPDATE SKIP LOCKED) instead of one process draining everything alone.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from open_registry.core import Registry
from open_registry.core.codec import utcnow
from open_registry.core.outbox.worker import Worker

EVENTS = 200
STARTED = re.compile(r"worker process (\d+): \d+ thread\(s\) delivering")
STOPPED = re.compile(r"worker process (\d+): stopped; delivered (\d+) event\(s\)")
SLOW_SETTLE = """
CREATE FUNCTION test_slow_settle() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep(0.01); RETURN NEW; END $$;
CREATE TRIGGER test_slow_settle BEFORE UPDATE ON registry_outbox
    FOR EACH ROW EXECUTE FUNCTION test_slow_settle();
"""


def _wait(what: str, ready: Callable[[], bool], log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout:.0f} s; worker output:\n{log.read_text()}")
        time.sleep(0.1)


def _queue(registry: Registry, n: int) -> None:
    """`n` due events no plugin handles (the worker marks them done)."""
    now = utcnow()
    rows = [
        {"created_at": now, "event": "test.ping", "entity": "test", "record_id": f"r{i}",
         "version": 1, "payload": None, "status": "pending", "attempts": 0, "available_at": now}
        for i in range(n)
    ]  # fmt: skip
    with registry.db.engine.begin() as conn:
        conn.execute(registry.db.metadata.tables["registry_outbox"].insert(), rows)


def _pending(registry: Registry) -> int:
    t = registry.db.metadata.tables["registry_outbox"]
    with registry.db.engine.connect() as conn:
        stmt = sa.select(sa.func.count()).select_from(t).where(t.c.status == "pending")
        return int(conn.execute(stmt).scalar_one())


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_worker_processes_share_the_outbox_and_stop_on_sigterm(
    registry: Registry, database_url: str, tmp_path: Path
) -> None:
    t = registry.db.metadata.tables["registry_outbox"]
    with registry.db.engine.begin() as conn:
        conn.execute(t.update().where(t.c.status == "pending").values(status="done"))
        conn.execute(sa.text(SLOW_SETTLE))
    log = tmp_path / "worker.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "REGISTRY_LOAD_ENTRYPOINTS": "false"}
    command = [sys.executable, "-m", "open_registry.cli", "worker", "--processes", "2",
               "--poll", "0.1", "--database-url", database_url,
               "--data-dir", str(registry.settings.data_dir)]  # fmt: skip
    with log.open("wb") as out:
        supervisor = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        _wait("two worker processes did not start",
              lambda: len(set(STARTED.findall(log.read_text()))) == 2, log)  # fmt: skip
        _queue(registry, EVENTS)
        _wait("the outbox was not drained", lambda: _pending(registry) == 0, log)
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=90) == 0
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()
    output = log.read_text()
    started = set(STARTED.findall(output))
    delivered = {pid: int(n) for pid, n in STOPPED.findall(output)}
    assert set(delivered) == started, output  # every process stopped on the SIGTERM
    assert all(n > 0 for n in delivered.values()), output  # both took part
    assert sum(delivered.values()) == EVENTS, output  # each event once
    assert str(supervisor.pid) not in started
    for pid in started:
        assert not Path(f"/proc/{pid}").exists(), f"worker process {pid} still runs"
    with registry.db.engine.connect() as conn:
        stmt = sa.select(t.c.status, sa.func.count()).where(t.c.event == "test.ping")
        assert dict(conn.execute(stmt.group_by(t.c.status)).all()) == {"done": EVENTS}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_batches_double_while_full_and_shrink_when_the_queue_empties(registry: Registry) -> None:
    worker = Worker(registry, batch_size=2, max_batch_size=8, checkpoint_seconds=0)
    sizes: list[int] = []
    deliver = worker.deliver_batch

    def recorded(limit: int = 100) -> int:
        sizes.append(limit)
        return deliver(limit)

    worker.deliver_batch = recorded  # type: ignore[method-assign]
    _queue(registry, 25)
    assert [worker.run_once() for _ in range(6)] == [2, 4, 8, 8, 3, 0]
    # 3 of 8 is not full: back to 2 (that pass looks once more, as every pass does till none)
    assert sizes == [2, 4, 8, 8, 8, 2, 2]
    assert worker.delivered == 25
    _queue(registry, 5)
    assert worker.run_once(limit=100, batch=3) == 5  # a fixed batch size: 3 + 2, then none due
    assert sizes[7:] == [3, 3, 3]
    assert Worker(registry, batch_size=100, max_batch_size=50).max_batch_size == 100
