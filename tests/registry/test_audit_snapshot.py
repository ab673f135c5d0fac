"""`verify` reads one snapshot of the audit chain (the head and every entry), on SQLite and
PostgreSQL: writers committing while it runs never make an intact chain look broken, and it
reads the entries in batches."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import pytest
import sqlalchemy as sa

from open_registry.core.audit import chain
from open_registry.core.audit.chain import verify
from tests.registry.test_privacy import person


def audit_rows(registry: Any) -> int:
    with registry.db.engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM registry_audit")).scalar_one()


def test_a_write_committed_while_verify_runs_is_not_seen(
    registry: Any, monkeypatch: pytest.MonkeyPatch
):
    """Deterministic: after verify has read the head and its first batch, another thread
    commits records (and their audit entries); the rest of the walk must not see them."""
    svc = registry.services["recipient"]
    for n in range(1, 11):
        svc.create(person(n), actor="setup")
    committed: list[int] = []
    triggered: list[bool] = []
    real_hash = chain.entry_hash
    walker = threading.current_thread()

    def hash_then_write(*args: Any) -> str:
        if not triggered and threading.current_thread() is walker:  # once, inside the walk
            triggered.append(True)

            def write() -> None:
                made = svc.create_many([(None, person(n)) for n in range(20, 25)], actor="late")
                committed.append(len(made))

            t = threading.Thread(target=write)
            t.start()
            t.join(30)
            assert committed == [5], "the concurrent write did not commit"
        return real_hash(*args)

    monkeypatch.setattr(chain, "entry_hash", hash_then_write)
    verdict = verify(registry.db.engine, batch=3)
    monkeypatch.undo()
    assert verdict.ok, verdict
    assert verdict.entries == 10  # the snapshot verify started with
    after = verify(registry.db.engine, batch=3)
    assert after.ok and after.entries == 15 == audit_rows(registry)


def test_verify_stays_ok_while_writer_threads_create_records(registry: Any):
    """Four threads create records through the record service without pause while verify runs
    again and again: every verdict is OK, and the chain it saw grows."""
    svc = registry.services["recipient"]
    for n in range(1, 21):
        svc.create(person(n), actor="setup")
    stop = threading.Event()
    failures: list[BaseException] = []
    written = [0] * 4

    def writer(i: int) -> None:
        try:
            for j in range(1, 900):
                if stop.is_set():
                    return
                n = 10_000 * (i + 1) + 3 * j
                if j % 3:
                    svc.create(person(n), actor=f"writer{i}")
                else:  # a batch: several entries in one transaction
                    svc.create_many([(None, person(n + k)) for k in range(3)], actor=f"writer{i}")
                written[i] += 1
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    verdicts = []
    try:
        while sum(written) < 8 and not failures:  # the writers are under way
            stop.wait(0.01)
        for _ in range(6):
            verdicts.append(verify(registry.db.engine, batch=7))  # many statements per walk
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not failures, failures
    assert sum(written) > 0
    for v in verdicts:
        assert v.ok, v
    counts = [v.entries for v in verdicts]
    assert counts == sorted(counts) and counts[0] >= 20
    final = verify(registry.db.engine)
    assert final.ok and final.entries == audit_rows(registry) >= counts[-1]


def test_verify_reads_the_entries_in_batches(registry: Any):
    svc = registry.services["recipient"]
    svc.create_many([(None, person(n)) for n in range(1, 41)], actor="setup")
    reads: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "registry_audit." in statement:
            reads.append(statement)

    sa.event.listen(registry.db.engine, "before_cursor_execute", count)
    try:
        verdict = verify(registry.db.engine, batch=8)
    finally:
        sa.event.remove(registry.db.engine, "before_cursor_execute", count)
    assert verdict.ok and verdict.entries == 40
    assert len(reads) == 40 // 8 + 1  # five full batches and the empty one that ends the walk
    assert all("LIMIT" in r.upper() for r in reads)


def test_verify_leaves_the_pooled_connections_read_write_read_committed(registry: Any):
    """PostgreSQL: the snapshot's isolation level and read-only mode end with the walk."""
    if registry.db.dialect != "postgresql":
        pytest.skip("PostgreSQL's transaction characteristics")
    engine = registry.db.engine
    registry.services["recipient"].create(person(1), actor="t")
    assert verify(engine).ok
    with contextlib.ExitStack() as stack:  # every connection the pool holds, at once
        conns = [stack.enter_context(engine.connect()) for _ in range(engine.pool.size())]
        for conn in conns:
            assert conn.exec_driver_sql("SHOW transaction_read_only").scalar_one() == "off"
            assert conn.exec_driver_sql("SHOW transaction_isolation").scalar_one() == (
                "read committed"
            )
    registry.services["recipient"].create(person(2), actor="t")
    assert verify(engine).entries == 2
