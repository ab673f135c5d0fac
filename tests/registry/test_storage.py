"""storage: nested writes on one thread join the open transaction (as a savepoint); PostgreSQL
connections keep their prepared statements across checkouts (or make none, for PgBouncer)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from open_registry.core import Settings, storage
from open_registry.core.app import Registry
from open_registry.core.errors import NotFound, StartupError
from tests.samples import sample_value


def _names(registry: Registry) -> list[str]:
    page = registry.services["vaccine"].search(registry.services["vaccine"].parser.from_params([]))
    return sorted(r["name"] for r in page.items)


VACCINE = {"code": "V1", "name": "Alpha", "manufacturer": "M", "status": "Active"}


def test_nested_write_commits_with_the_outer_one(registry: Registry) -> None:
    vaccines = registry.services["vaccine"]
    with storage.write(registry.db.engine) as outer:
        created = vaccines.create(VACCINE, actor="t")  # joins `outer`, does not deadlock
        assert outer.in_transaction()
    assert _names(registry) == ["Alpha"]
    assert vaccines.get(created["id"])["code"] == "V1"


def test_outer_rollback_undoes_the_nested_write(registry: Registry) -> None:
    vaccines = registry.services["vaccine"]
    with pytest.raises(RuntimeError), storage.write(registry.db.engine):
        vaccines.create(VACCINE, actor="t")
        raise RuntimeError("the outer work fails")
    assert _names(registry) == []


def test_failed_nested_write_leaves_the_outer_one_usable(registry: Registry) -> None:
    vaccines = registry.services["vaccine"]
    with storage.write(registry.db.engine):
        vaccines.create(VACCINE, actor="t")
        with pytest.raises(Exception, match="already has this"):
            vaccines.create({**VACCINE, "name": "Beta"}, actor="t")  # code V1 taken
        vaccines.create({**VACCINE, "code": "V2", "name": "Gamma"}, actor="t")
    assert _names(registry) == ["Alpha", "Gamma"]


# -- a record read by id -----------------------------------------------------------------------


def test_a_read_by_id_on_its_own_connection_is_the_sqlalchemy_read(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite a read by id runs on a DBAPI connection (`storage.OneRowRead`): the
    record is the same as read through SQLAlchemy (dates, nested values, versions), an unknown
    id is not found either way; on PostgreSQL it is the ordinary read."""
    facilities = registry.services["facility"]
    body = sample_value(facilities.entity.json_schema, full=True)  # every field, nested too
    body.pop("programs")  # references a programme this registry does not have
    created = facilities.create(body, actor="t")
    direct = facilities.get(created["id"])
    assert direct == created

    seen: list[str] = []

    def listener(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    sa.event.listen(registry.db.engine, "before_cursor_execute", listener)
    try:  # a statement listener sees every statement: the read goes through SQLAlchemy
        assert facilities.get(created["id"]) == direct
        with pytest.raises(NotFound):
            facilities.get("no-such-id")
    finally:
        sa.event.remove(registry.db.engine, "before_cursor_execute", listener)
    assert len(seen) == 2

    def no_sqlalchemy_read(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("read through SQLAlchemy")

    monkeypatch.setattr(storage, "read", no_sqlalchemy_read)
    if registry.db.dialect == "sqlite":
        assert facilities.get(created["id"]) == direct
        with pytest.raises(NotFound):
            facilities.get("no-such-id")
        # a database error is SQLAlchemy's, as on the other path (the API answers 503)
        monkeypatch.setattr(facilities._read_by_id, "sql", "SELECT * FROM no_such_table")
        with pytest.raises(sa.exc.OperationalError, match="no such table"):
            facilities.get(created["id"])
    else:
        with pytest.raises(AssertionError, match="through SQLAlchemy"):
            facilities.get(created["id"])


def test_reads_by_id_keep_a_connection_per_thread_outside_the_pool(tmp_path: Path) -> None:
    """SQLite's reads by id use one connection per thread (`storage.ReadConnections`), not one
    of the pool's: the pool's connections and check-outs do not change; a write is seen by
    the next read; the connection of a thread that ended is closed when another opens one;
    disposing of the engine (a test database restored from a copy) closes them and the next
    read opens a fresh one; a database error discards the thread's connection."""
    import threading

    from open_registry.core.app import open_registry

    reg = open_registry(Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/r.db"))
    try:
        vaccines, engine = reg.services["vaccine"], reg.db.engine
        created = vaccines.create(VACCINE, actor="t")
        vaccines.get(created["id"])
        pool = engine.pool
        before = (pool.checkedin(), pool.checkedout())  # type: ignore[attr-defined]
        connections = storage.read_connections(engine)
        mine = connections.get()
        for _ in range(5):
            assert vaccines.get(created["id"])["name"] == "Alpha"
        assert connections.get() is mine
        assert (pool.checkedin(), pool.checkedout()) == before  # type: ignore[attr-defined]
        vaccines.update(created["id"], {**VACCINE, "name": "Beta"}, actor="t")
        assert vaccines.get(created["id"])["name"] == "Beta"  # no stale snapshot
        with engine.connect() as conn:  # the read ended: nothing holds the WAL back
            busy, _, _ = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
        assert busy == 0

        other: list[Any] = []
        thread = threading.Thread(target=lambda: other.append(connections.get()))
        thread.start()
        thread.join()
        assert other[0] is not mine  # a connection per thread
        later = threading.Thread(target=connections.get)  # the first thread has ended:
        later.start()
        later.join()
        with pytest.raises(Exception, match="closed"):  # its connection is closed
            other[0].execute("SELECT 1")

        engine.dispose()
        with pytest.raises(Exception, match="closed"):
            mine.execute("SELECT 1")
        assert vaccines.get(created["id"])["name"] == "Beta"
        fresh = connections.get()
        assert fresh is not mine

        read = vaccines._read_by_id
        sql = read.sql
        read.sql = "SELECT * FROM no_such_table"
        try:
            with pytest.raises(sa.exc.OperationalError, match="no such table"):
                vaccines.get(created["id"])
        finally:
            read.sql = sql
        assert connections.get() is not fresh  # the one that failed was discarded
        assert vaccines.get(created["id"])["name"] == "Beta"
    finally:
        reg.close()


# -- PostgreSQL connections keep their prepared statements --------------------------------------


def _prepared_after_checkouts(url: str, tmp_path: Path, **settings: Any) -> int:
    """Statements prepared on the server after 8 checkouts of the one pooled connection, each
    running the same query and closing without a commit (psycopg's own rollback would send
    `DEALLOCATE ALL` each time)."""
    engine = storage.make_engine(
        Settings(database_url=url, data_dir=tmp_path / "data", pool_size=1, **settings)
    )
    query = sa.text("SELECT count(*) FROM pg_class WHERE relname = :n")
    try:
        for _ in range(8):
            with engine.connect() as conn:
                conn.execute(query, {"n": "x"})
        with engine.connect() as conn:
            return int(conn.exec_driver_sql("SELECT count(*) FROM pg_prepared_statements").scalar())
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_prepared_statements_survive_checkouts(pg_database: str, tmp_path: Path) -> None:
    prepared = _prepared_after_checkouts(pg_database, tmp_path)
    assert prepared >= 1  # prepared on the 5th use, still there 3 checkouts later


@pytest.mark.postgres
def test_prepared_statements_can_be_turned_off_for_pgbouncer(
    pg_database: str, tmp_path: Path
) -> None:
    prepared = _prepared_after_checkouts(pg_database, tmp_path, database_prepared_statements=False)
    assert prepared == 0


def test_database_read_url_needs_postgresql(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'r.db'}",
        data_dir=tmp_path,
        database_read_url="postgresql://postgres@127.0.0.1:5432/x",
    )
    with pytest.raises(StartupError, match="database_read_url' needs PostgreSQL"):
        storage.make_engine(settings)


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_an_in_memory_sqlite_database_is_refused_by_name(tmp_path: Path, url: str) -> None:
    """Each pooled connection would see its own empty in-memory database: refused at start-up
    naming the setting, not a TypeError from SQLAlchemy's pool."""
    with pytest.raises(StartupError, match=r"database_url: .* in-memory SQLite database"):
        storage.make_engine(Settings(database_url=url, data_dir=tmp_path))


# -- tables created at start-up, while another process writes ----------------------------------


@pytest.mark.parametrize("creator", ["programme", "audit checkpoints"])
def test_start_up_tables_wait_for_another_writer_on_sqlite(tmp_path: Path, creator: str) -> None:
    """A process creating its tables while another one writes to the same SQLite file waits
    for it (busy timeout), rather than failing with 'database is locked': a transaction that
    read the catalog before the other's commit cannot become a writer (SQLite refuses at once),
    so creating tables takes the write lock first (`storage.schema_change`). Two servers started
    together on one file failed this way."""
    import threading

    from open_registry.core.audit import checkpoint
    from open_registry.plugins.programme import tables

    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/r.db")
    other, ours = storage.make_engine(settings), storage.make_engine(settings)
    create = {
        "programme": lambda: tables.create_tables(ours),
        "audit checkpoints": lambda: checkpoint.ensure_table(ours),
    }[creator]
    failed: list[BaseException] = []

    def run() -> None:
        try:
            create()
        except BaseException as exc:  # reported by the assert below
            failed.append(exc)

    try:
        with storage.write(other) as writer:
            writer.exec_driver_sql("CREATE TABLE other_process (n INTEGER)")
        with storage.write(other) as writer:  # the other process writes...
            writer.exec_driver_sql("INSERT INTO other_process VALUES (1)")
            thread = threading.Thread(target=run)
            thread.start()
            thread.join(0.5)  # ...while this one starts to create its tables
            assert thread.is_alive(), f"it did not wait for the other writer: {failed}"
        thread.join(30)
        assert failed == []
        names = set(sa.inspect(ours).get_table_names())
        wanted = {
            "programme": "programme_counter",
            "audit checkpoints": "registry_audit_checkpoint",
        }
        assert wanted[creator] in names, names
    finally:
        other.dispose()
        ours.dispose()


# -- PostgreSQL: reads by id from the event loop ------------------------------------------------


def _pg_only(registry: Registry) -> None:
    if registry.db.dialect != "postgresql":
        pytest.skip("reads from the event loop are PostgreSQL's (SQLite reads inline)")


def _threaded_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the reads by id that go to a worker thread (`storage.read`, as before)."""
    calls: list[int] = []
    original = storage.read

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(storage, "read", counted)
    return calls


def test_a_read_by_id_from_the_event_loop_is_the_sqlalchemy_read(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL a read by id made from the event loop runs there, on a connection the
    loop keeps (`storage.AsyncReads`): the record is the one read through SQLAlchemy (dates,
    nested values, versions); an unknown id is not found; the loop opens one connection for
    reads made one after another, and its statement is prepared once; a statement listener on
    the engine sends the read to a thread (it must see every statement)."""
    import asyncio

    _pg_only(registry)
    facilities = registry.services["facility"]
    body = sample_value(facilities.entity.json_schema, full=True)
    body.pop("programs")
    created = facilities.create(body, actor="t")
    expected = facilities.get(created["id"])
    threaded = _threaded_reads(monkeypatch)
    reads = storage.async_reads(registry.db.engine)

    async def reads_in_a_loop() -> tuple[list[dict[str, Any]], int, int]:
        got = [await facilities.get_async(created["id"]) for _ in range(8)]
        with pytest.raises(NotFound):
            await facilities.get_async("no-such-id")
        mine = reads._loops[asyncio.get_running_loop()]
        cursor = mine.idle[0]  # the connection's cursor
        await cursor.execute("SELECT count(*) FROM pg_prepared_statements")
        prepared = (await cursor.fetchone())[0]
        return got, mine.open, prepared

    got, opened, prepared = asyncio.run(reads_in_a_loop())
    assert got == [expected] * 8
    assert threaded == []  # none went to a thread
    assert opened == 1
    assert prepared >= 1  # psycopg prepares a statement on its 5th use

    seen: list[str] = []

    def listener(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    sa.event.listen(registry.db.engine, "before_cursor_execute", listener)
    try:
        assert asyncio.run(facilities.get_async(created["id"])) == expected
    finally:
        sa.event.remove(registry.db.engine, "before_cursor_execute", listener)
    assert len(threaded) == 1 and len(seen) == 1


def test_reads_from_the_event_loop_beyond_its_connections_wait_for_one(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reads made at once beyond the loop's connections wait for one (none goes to a thread),
    also past a waiting read that was cancelled; a database error is SQLAlchemy's (the API's
    handlers answer it) and its connection is closed; a cancelled read's connection is closed;
    disposing of the engine closes the idle ones."""
    import asyncio

    _pg_only(registry)
    vaccines = registry.services["vaccine"]
    created = vaccines.create(VACCINE, actor="t")
    threaded = _threaded_reads(monkeypatch)
    monkeypatch.setattr(storage, "ASYNC_READ_CONNECTIONS", 2)
    reads = storage.async_reads(registry.db.engine)
    pg = vaccines._read_by_id.pg.one if vaccines._read_by_id.pg else None
    assert pg is not None

    async def scenario() -> list[Any]:
        loop = asyncio.get_running_loop()
        names = await asyncio.gather(*(vaccines.get_async(created["id"]) for _ in range(5)))
        mine = reads._loops[loop]
        opened = mine.open

        # both connections busy: a waiting read is cancelled, the one after it is served
        slow = [asyncio.ensure_future(reads.fetch("SELECT pg_sleep(0.3)", {})) for _ in range(2)]
        await asyncio.sleep(0.05)
        gone = asyncio.ensure_future(vaccines.get_async(created["id"]))
        after = asyncio.ensure_future(vaccines.get_async(created["id"]))
        await asyncio.sleep(0.05)
        gone.cancel()
        await asyncio.gather(*slow)
        served = (await asyncio.wait_for(after, 5))["name"]  # not left waiting
        assert gone.cancelled() and not mine.waiters
        assert (mine.open, len(mine.idle)) == (2, 2)
        kept = list(mine.idle)

        sql = pg.sql
        pg.sql = "SELECT * FROM no_such_table"
        try:
            with pytest.raises(sa.exc.ProgrammingError, match="no_such_table"):
                await vaccines.get_async(created["id"])
        finally:
            pg.sql = sql
        after_error = (mine.open, any(c.connection.closed for c in kept))

        pg.sql = "SELECT pg_sleep(30)"
        try:
            task = asyncio.ensure_future(vaccines.get_async(created["id"]))
            await asyncio.sleep(0.3)
            busy = mine.open - len(mine.idle)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            pg.sql = sql
        await asyncio.sleep(0.05)  # the read, left by its only caller, is cancelled too
        after_cancel = mine.open - len(mine.idle)
        await vaccines.get_async(created["id"])  # opens a fresh one
        idle = list(mine.idle)
        registry.db.engine.dispose()
        return [
            [n["name"] for n in names],
            served,
            opened,
            after_error,
            busy,
            after_cancel,
            idle,
            mine.open,
        ]

    names, served, opened, after_error, busy, after_cancel, idle, left = asyncio.run(scenario())
    assert names == ["Alpha"] * 5 and served == "Alpha"
    assert opened == 1 and threaded == []  # the five reads of one round: one statement
    assert after_error == (1, True)  # the failed read's connection was closed
    assert (busy, after_cancel) == (1, 0)  # the cancelled read's connection was closed
    assert idle and all(c.connection.closed for c in idle) and left == 0  # closed by dispose
    assert vaccines.get(created["id"])["name"] == "Alpha"  # the engine works on


def test_reads_from_the_event_loop_fall_back_to_threads_when_the_server_is_unreachable(
    tmp_path: Path,
) -> None:
    """A loop that cannot reach the server leaves its reads to worker threads (whose pool
    checks its connections and answers the error) for `ASYNC_READ_RETRY_SECONDS`."""
    import asyncio
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    engine = storage.make_engine(
        Settings(database_url=f"postgresql://postgres@127.0.0.1:{port}/x", data_dir=tmp_path)
    )
    try:
        reads = storage.async_reads(engine)
        assert asyncio.run(reads.fetch("SELECT 1", {})) is storage._UNSERVED
        assert reads._down_until > 0
    finally:
        engine.dispose()


def test_reads_by_id_in_one_round_of_the_event_loop_are_one_statement(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL the reads by id made in one round of the event loop are one statement
    (`storage.ReadBatch`): each caller gets its own record (an id read twice: equal records,
    not the same object), an unknown or deleted id is not found; a read alone in its round
    runs the one-row statement; a database error reaches every caller of the round; a caller
    that goes away leaves the others' read alone."""
    import asyncio

    _pg_only(registry)
    vaccines = registry.services["vaccine"]
    made = [
        vaccines.create({**VACCINE, "code": f"V{i}", "name": f"N{i}"}, actor="t") for i in range(4)
    ]
    vaccines.delete(made[3]["id"], actor="t")
    reads = storage.async_reads(registry.db.engine)
    statements: list[str] = []
    fetch = reads.fetch

    async def counted(sql: str, params: dict[str, Any], **kw: Any) -> Any:
        statements.append(sql)
        return await fetch(sql, params, **kw)

    monkeypatch.setattr(reads, "fetch", counted)
    threaded = _threaded_reads(monkeypatch)
    read = vaccines._read_by_id
    assert read.pg is not None and read.pg.many is not None

    async def get(rid: str) -> Any:
        try:
            return await vaccines.get_async(rid)
        except NotFound:
            return None

    async def scenario() -> list[Any]:
        ids = [made[0]["id"], made[1]["id"], made[2]["id"], made[0]["id"], "nope", made[3]["id"]]
        together = await asyncio.gather(*(get(i) for i in ids))
        in_round = list(statements)
        alone = await get(made[1]["id"])

        statements.clear()
        sql = read.pg.many.sql
        read.pg.many.sql = "SELECT * FROM no_such_table WHERE id = ANY(%(rids)s)"
        try:
            failed = await asyncio.gather(
                *(vaccines.get_async(m["id"]) for m in made[:3]), return_exceptions=True
            )
        finally:
            read.pg.many.sql = sql

        # one caller cancelled: the other of its round still gets its record
        first = asyncio.ensure_future(vaccines.get_async(made[0]["id"]))
        second = asyncio.ensure_future(vaccines.get_async(made[1]["id"]))
        await asyncio.sleep(0)  # both are waiting for the round's statement
        first.cancel()
        kept = await asyncio.wait_for(second, 5)
        return [together, in_round, alone, failed, first.cancelled(), kept]

    together, in_round, alone, failed, cancelled, kept = asyncio.run(scenario())
    assert threaded == []  # every read made in the loop
    names = [r and r["name"] for r in together]
    assert names == ["N0", "N1", "N2", "N0", None, None]
    assert together[0] == together[3] and together[0] is not together[3]
    assert together[0] == vaccines.get(made[0]["id"])  # as the thread's read has it
    assert len(in_round) == 1 and "ANY" in in_round[0]  # the six reads: one statement
    assert alone["name"] == "N1"
    assert all(isinstance(e, sa.exc.ProgrammingError) for e in failed)
    assert cancelled and kept["name"] == "N1"
