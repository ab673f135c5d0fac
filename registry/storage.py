"""Database: the engine, the system tables, and bringing a database up to the loaded schemas.

SQLite (WAL with `synchronous=FULL` unless the `sqlite_synchronous` setting says NORMAL, foreign
keys, a busy timeout, `BEGIN IMMEDIATE` for writes so concurrent writers queue instead of failing)
is the embedded default; PostgreSQL (psycopg 3, JSONB) the production
engine. Creating and changing tables is `registry.migrations`' job.

Planner statistics (docs/scaling.md): SQLite tables that were never analysed, or grew tenfold
since, are analysed when an engine opens its first connection (`analyse_stale`), and `analyse`
refreshes the tables a bulk load touched, on both databases. PostgreSQL connections keep their
prepared statements when they go back to the pool, and reads on a caller's behalf
(`replica_reads`) may be served by a read replica (`database_read_url`) once it has replayed
that caller's own writes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread
import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from open_registry.core.crypto import Keyring, load_keyring
from open_registry.core.errors import StartupError
from open_registry.core.schemas.loading import SchemaSet
from open_registry.core.settings import Settings, sqlite_synchronous
from open_registry.generators.tables import UTCDateTime, build_metadata, json_type

log = logging.getLogger("registry")


def system_tables(metadata: sa.MetaData) -> None:
    """The audit log (a hash chain, see `registry.audit.chain`) and the outbox, written in the same
    transaction as every record; the `Idempotency-Key`s of writes (`registry.idempotency`); the
    schema state start-up checks against (`registry.migrations.prepare`)."""
    sa.Table(
        "registry_audit",
        metadata,
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(200)),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("entity", sa.String(100)),
        sa.Column("record_id", sa.String(36)),
        sa.Column("version", sa.Integer),
        sa.Column("fields", json_type()),
        sa.Column("prev_hash", sa.String(64)),
        sa.Column("hash", sa.String(64)),
    )
    sa.Table(  # one row: the end of the audit chain; writers lock it to append in turn
        "registry_audit_head",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("entries", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    outbox = sa.Table(
        "registry_outbox",
        metadata,
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("event", sa.String(40), nullable=False),
        sa.Column("entity", sa.String(100), nullable=False),
        sa.Column("record_id", sa.String(36), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("payload", json_type()),
        sa.Column("status", sa.String(20), nullable=False, default="pending"),
        sa.Column("attempts", sa.Integer, nullable=False, default=0),
        sa.Column("available_at", UTCDateTime(), nullable=False),
        sa.Column("last_error", sa.Text),
    )
    sa.Index("ix_registry_outbox_pending", outbox.c.status, outbox.c.available_at)
    keys = sa.Table(  # `Idempotency-Key`s of writes, one per (caller, key): registry.idempotency
        "registry_idempotency",
        metadata,
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("scope", sa.String(255), nullable=False),  # the caller (`principal.actor`)
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("method", sa.String(10), nullable=False),
        sa.Column("path", sa.Text, nullable=False),  # path and query string
        sa.Column("state", sa.String(20), nullable=False),  # in-progress | done
        sa.Column("fingerprint", sa.String(64)),  # keyed hash of method, path, query, body
        sa.Column("body_bytes", sa.BigInteger),
        sa.Column("status", sa.Integer),
        sa.Column("response", sa.LargeBinary),  # headers and body, sealed with the data key
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("scope", "key", name="uq_registry_idempotency_scope_key"),
    )
    sa.Index("ix_registry_idempotency_expires_at", keys.c.expires_at)
    sa.Table(  # one row: what the tables and schemas were when start-up last found them matching
        "registry_schema_state",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),  # `migrations.fingerprint`
        sa.Column("checked_at", UTCDateTime(), nullable=False),
    )


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


_JSON: dict[str, Any] = {"json_serializer": _dumps, "json_deserializer": orjson.loads}
#: SQLite has one writer; a lock per engine makes this process's writers queue in order instead
#: of sleeping in SQLite's busy handler (which is unfair and gives multi-second tails).
_WRITE_LOCKS: weakref.WeakKeyDictionary[Engine, threading.Lock] = weakref.WeakKeyDictionary()


def private_folder(folder: Path) -> None:
    """Create `folder` (and its missing parents) if missing, itself readable by its owner only
    (0700: it holds the database, the keys, the signing secret). An existing folder is left as
    it is."""
    if folder.is_dir():
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        return
    os.chmod(folder, 0o700)  # whatever the umask


def private_sqlite_file(path: Path) -> None:
    """Create an empty SQLite database file readable by its owner only (0600) unless there is
    one: SQLite gives the files it makes beside it (`-wal`, `-shm`, `-journal`) the database
    file's mode, so they are owner-only too. An existing file is left as it is (a warning
    says when others can read it)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            log.warning(
                "the database file %s can be read by other users (mode %o); run: chmod 600 %s",
                path,
                mode,
                path,
            )
        return
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
    finally:
        os.close(fd)


def make_engine(settings: Settings) -> Engine:
    """An engine for the configured database. Creates the data folder when missing (0700:
    it holds the keys and the migrations, and SQLite's file), and for SQLite the database
    file's folder (0700) and the file (0600)."""
    private_folder(settings.data_dir)
    url = settings.sqlalchemy_url
    if url.startswith("sqlite"):
        sa_url = sa.engine.make_url(url)
        db = sa_url.database
        if not db or db == ":memory:" or "mode=memory" in url:
            raise StartupError(
                f"setting database_url: {url!r} is an in-memory SQLite database, which each "
                "connection would see empty and which ends with the process; name a file "
                "(sqlite:///path/to/registry.db)"
            )
        if not db.startswith("file:") and "uri" not in sa_url.query:
            private_folder(Path(db).parent)
            private_sqlite_file(Path(db))
        engine = sa.create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=settings.pool_size,
            max_overflow=0,  # requests wait for a pooled connection instead of opening new ones
            pool_timeout=60,
            **_JSON,
        )
        if settings.database_read_url:
            raise StartupError(
                "setting 'database_read_url' needs PostgreSQL: database_url is SQLite, which "
                "has no read replicas"
            )
        _sqlite_setup(engine, sqlite_synchronous(settings.sqlite_synchronous))
        _WRITE_LOCKS[engine] = threading.Lock()
        return engine
    engine = _postgresql_engine(url, settings)
    read_url = settings.sqlalchemy_read_url
    if read_url:
        if sa.engine.make_url(read_url).get_backend_name() != "postgresql":
            raise StartupError(
                "setting 'database_read_url' must name a PostgreSQL server (a streaming standby "
                f"of database_url), got {sa.engine.make_url(read_url).get_backend_name()!r}"
            )
        replica = Replica(_postgresql_engine(read_url, settings))
        _REPLICAS[engine] = replica

        @sa.event.listens_for(replica.engine, "checkin")
        def _server_default_access(dbapi_conn: Any, _record: Any) -> None:
            # SQLAlchemy ends `postgresql_readonly` (exports) by setting READ WRITE, which a
            # standby refuses for every later transaction: back to the server's default
            if dbapi_conn is not None and getattr(dbapi_conn, "read_only", None) is False:
                dbapi_conn.read_only = None

        @sa.event.listens_for(engine, "engine_disposed")
        def _dispose_replica(_engine: Engine) -> None:
            replica.engine.dispose()

    return engine


def _postgresql_engine(url: str, settings: Settings) -> Engine:
    """A PostgreSQL engine whose connections keep their prepared statements (see
    `_keep_prepared`); none are made with `database_prepared_statements` off."""
    connect_args: dict[str, Any] = {}
    if not settings.database_prepared_statements:
        connect_args["prepare_threshold"] = None  # PgBouncer in transaction mode
    engine = sa.create_engine(
        url,
        pool_size=settings.pool_size,
        max_overflow=0,
        pool_timeout=60,
        pool_pre_ping=True,
        connect_args=connect_args,
        **_JSON,
    )
    _keep_prepared(engine)
    _PG_CONNECT_ARGS[engine] = connect_args
    return engine


def _keep_prepared(engine: Engine) -> None:
    """Ending a transaction that had no error with a `ROLLBACK` sent through libpq, so that
    psycopg keeps the connection's prepared statements.

    psycopg forgets every prepared statement, and sends `DEALLOCATE ALL`, whenever its
    `rollback()` is called. SQLAlchemy calls it each time a connection that only read closes
    without a commit (an `engine.connect()` block: the transaction it began is rolled back),
    and when the pool takes back a connection, so statements were prepared again after almost
    every checkout. Prepared statements are not transactional in PostgreSQL: they stay valid
    after the rollback. A transaction in error (a failed statement) is rolled back by psycopg
    as before, which then starts afresh."""
    from psycopg import pq

    dialect = engine.dialect
    psycopg_rollback = dialect.do_rollback

    def do_rollback(dbapi_conn: Any) -> None:
        pgconn = dbapi_conn.pgconn  # also through the pool's proxy of the connection
        if (
            pgconn.transaction_status == pq.TransactionStatus.INTRANS
            and pgconn.exec_(b"ROLLBACK").status == pq.ExecStatus.COMMAND_OK
        ):
            return
        psycopg_rollback(dbapi_conn)

    setattr(dialect, "do_rollback", do_rollback)  # noqa: B010 - this engine's dialect only


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _sqlite_setup(engine: Engine, synchronous: str = "FULL") -> None:
    """Every connection: WAL, `synchronous` (FULL: each commit synced to disk; NORMAL: only at
    checkpoints, see the `sqlite_synchronous` setting), foreign keys, a busy timeout; the
    first connection analyses the tables that need it (`analyse_stale`)."""
    started: list[bool] = []

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA case_sensitive_like=ON")  # LIKE behaves as on PostgreSQL
        cur.close()
        if not started:  # the engine's first connection: statistics of tables that need them
            started.append(True)
            analyse_stale(dbapi_conn)
        # the `icontains` filter's fold (`registry.query.Fold`): every letter, not only ASCII
        dbapi_conn.create_function("registry_lower", 1, _lower, deterministic=True)

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        if mode != "NONE":  # NONE: single statements in autocommit (one-row reads)
            conn.exec_driver_sql(f"BEGIN {mode}")


_OPEN_WRITES = threading.local()  # per thread: engine -> the connection of its open write
#: whose work this is (the caller's actor; the auth middleware sets it for each request): their
#: writes are remembered so that their reads on a replica see them (`Replica`)
_SESSION: ContextVar[str | None] = ContextVar("registry_session", default=None)
#: reads that may be served by the read replica (`replica_reads`)
_REPLICA_READS: ContextVar[bool] = ContextVar("registry_replica_reads", default=False)


class _Set:
    """Sets a context variable for a block (a class rather than a generator-based context
    manager: one is entered for every request and every read of a caller)."""

    __slots__ = ("token", "value", "var")

    def __init__(self, var: ContextVar[Any], value: Any):
        self.var, self.value = var, value

    def __enter__(self) -> None:
        self.token = self.var.set(self.value)

    def __exit__(self, *_exc: object) -> None:
        self.var.reset(self.token)


def session(key: str | None) -> _Set:
    """Work done in this block is on behalf of `key` (a caller's actor; None: nobody's)."""
    return _Set(_SESSION, key)


def replica_reads() -> _Set:
    """`read`s in this block may be served by the read replica, when there is one (reads for
    a caller: records by id, lists, searches). A read inside an open write never is."""
    return _Set(_REPLICA_READS, True)


@contextmanager
def write(engine: Engine) -> Iterator[Connection]:
    """A write transaction (on SQLite it takes the write lock up front, so writers queue).

    Re-entrant per thread: a write opened while this thread already has one open on the same
    engine joins it as a savepoint, so work done for a write (a plugin creating a record while
    an outbox event is delivered) commits or rolls back together with it."""
    open_writes: dict[int, Connection] = getattr(_OPEN_WRITES, "by_engine", None) or {}
    _OPEN_WRITES.by_engine = open_writes
    outer = open_writes.get(id(engine))
    if outer is not None:
        with outer.begin_nested():
            yield outer
        return
    lock = _WRITE_LOCKS.get(engine)
    with lock if lock is not None else contextlib.nullcontext(), engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn = conn.execution_options(sqlite_begin="IMMEDIATE")
        with conn.begin():
            open_writes[id(engine)] = conn
            try:
                yield conn
            finally:
                del open_writes[id(engine)]
        replica = _REPLICAS.get(engine)
        session_key = _SESSION.get()
        if replica is not None and session_key is not None:
            replica.wrote(conn, session_key)


@contextmanager
def schema_change(engine: Engine, lock_key: int) -> Iterator[Connection]:
    """A transaction of its own (never joined to a write this thread has open: what it creates
    is committed when it ends, for every connection to see) that creates tables, one process
    at a time. On SQLite it takes the write lock first (`BEGIN IMMEDIATE`: a transaction that
    read the catalog and then found another process had written since cannot become a writer,
    and SQLite refuses it at once, without its busy timeout: 'database is locked'); on
    PostgreSQL it runs under the transaction advisory lock `lock_key` (never a session's lock,
    which PgBouncer in transaction mode could leave on a server connection another client
    gets)."""
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            conn = conn.execution_options(sqlite_begin="IMMEDIATE")
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key})
            yield conn


@contextmanager
def read(
    engine: Engine, *, snapshot: bool = True, replica: bool | None = None
) -> Iterator[Connection]:
    """A read-only unit of work; `snapshot=False` for a single statement (no BEGIN on SQLite).

    `replica`: whether the read replica may serve it (see `read_connection`)."""
    with read_connection(engine, replica=replica) as conn:
        if not snapshot and engine.dialect.name == "sqlite":
            conn = conn.execution_options(sqlite_begin="NONE")
        with conn.begin():
            yield conn


def read_connection(engine: Engine, *, replica: bool | None = None) -> Connection:
    """A connection to read with (no transaction begun): the read replica's when `engine` has
    one, `replica` is true (None: inside `replica_reads`), this thread has no write open on
    `engine`, and the replica has replayed the session's own last write (`Replica`); else
    `engine`'s."""
    wanted = _REPLICA_READS.get() if replica is None else replica
    source = _REPLICAS.get(engine) if wanted else None
    if source is None or id(engine) in (getattr(_OPEN_WRITES, "by_engine", None) or {}):
        return engine.connect()
    return source.connection(engine, _SESSION.get())


class ReadConnections:
    """One SQLite connection per thread for one-row reads (`OneRowRead`), kept: taking a
    connection from the pool and giving it back cost more than the read itself (~20 us of a
    ~40 us read). Each is made by the engine (its pragmas and functions) and then detached from
    the pool, so the pool's own connections are as many as before. They are closed when the
    engine is disposed (a test database restored from a copy, a closed registry) and after a
    database error (the next read opens a fresh one), and those of threads that have ended
    when another thread opens one. Reads here are single statements in
    autocommit: each statement is reset once its row is fetched, which ends SQLite's read
    transaction, so no checkpoint waits for them."""

    def __init__(self, engine: Engine):
        # weakly: the engine's listener holds this object, and `_READ_CONNECTIONS` is keyed
        # by the engine weakly, so nothing here keeps a closed registry's engine alive
        self._engine = weakref.ref(engine)
        self._local = threading.local()
        self._lock = threading.Lock()
        #: thread id -> its connection (to close them all when the engine is disposed)
        self._open: dict[int, Any] = {}
        #: bumped when the engine is disposed: a thread's connection of an older one is stale
        self._generation = 0
        sa.event.listen(engine, "engine_disposed", self._disposed)

    def get(self) -> Any:
        """This thread's DBAPI connection (opened on first use)."""
        mine = getattr(self._local, "conn", None)
        if mine is not None and mine[0] == self._generation:
            return mine[1]
        engine = self._engine()
        if engine is None:  # pragma: no cover - a read through an engine keeps it alive
            raise RuntimeError("the engine of these connections is gone")
        fairy = engine.raw_connection()
        fairy.detach()
        conn = fairy.dbapi_connection
        alive = {t.ident for t in threading.enumerate()}
        with self._lock:
            ended = [self._open.pop(i) for i in list(self._open) if i not in alive]
            old = self._open.pop(threading.get_ident(), None)  # of an older engine's life
            self._open[threading.get_ident()] = conn
            self._local.conn = (self._generation, conn)
        for stale in [*ended, *([old] if old is not None else [])]:
            with contextlib.suppress(sqlite3.Error):
                stale.close()
        return conn

    def discard(self, conn: Any) -> None:
        """Close `conn` after an error; this thread opens a fresh one for its next read."""
        self._local.conn = None
        with self._lock:
            if self._open.get(threading.get_ident()) is conn:
                del self._open[threading.get_ident()]
        with contextlib.suppress(sqlite3.Error):
            conn.close()

    def _disposed(self, _engine: Engine) -> None:
        with self._lock:
            self._generation += 1
            conns, self._open = list(self._open.values()), {}
        for conn in conns:
            with contextlib.suppress(sqlite3.Error):
                conn.close()


def pooled_one_row_reads(engine: Engine) -> bool:
    """Whether `OneRowRead` reads through SQLAlchemy and a pooled connection on `engine`: on
    PostgreSQL, and on SQLite while a statement listener (`before_cursor_execute`) is on the
    engine, since it must see every statement; else on its own connection (`ReadConnections`)."""
    return engine.dialect.name != "sqlite" or bool(engine.dispatch.before_cursor_execute)


class OneRowRead:
    """A one-row, one-statement read (a record by id) compiled once for an engine: on SQLite it
    runs on a DBAPI connection of its own per thread (`read_one`, `ReadConnections`), without
    SQLAlchemy's pool, connection, transaction and result objects, which cost about 80 us a
    read where the statement costs 8 (`docs/scaling.md`); the columns' result processors (dates)
    are applied as SQLAlchemy would. Elsewhere, and while a statement listener is on the engine
    (`before_cursor_execute`: it sees every statement), it is `read(engine, snapshot=False)` as
    any other read."""

    def __init__(
        self, engine: Engine, statement: sa.Select[Any], batch: ReadBatch | None = None
    ):
        self.engine = engine
        self.statement = statement
        self.direct = engine.dialect.name == "sqlite"
        self.sql, self.params, self.keys = "", [], []
        self.processors: list[tuple[int, Any]] = []
        if self.direct:
            self.connections = read_connections(engine)
            compiled = statement.compile(dialect=engine.dialect)
            self.sql, self.params = str(compiled), list(compiled.positiontup or ())
            self.keys = [str(c.key) for c in statement.selected_columns]
            self.processors = [
                (i, proc)
                for i, c in enumerate(statement.selected_columns)
                if (proc := c.type._cached_result_processor(engine.dialect, None)) is not None
            ]
        #: on PostgreSQL, the statement as psycopg runs it from the event loop (`read_one_async`)
        self.pg: _PgOneRow | None = None
        if engine.dialect.name == "postgresql":
            self.pg = _PgOneRow(engine, statement, batch)

    async def read_one_async(self, params: dict[str, Any]) -> dict[str, Any] | None:
        """`read_one` for a caller in the event loop. On PostgreSQL it is made there, on a
        connection the loop keeps (`AsyncReads`): handing a read to a worker thread and back,
        and SQLAlchemy's pooled connection, cost about ten times the read (`docs/scaling.md`).
        With a `ReadBatch`, the reads made in one round of the loop are one statement.
        It goes to a worker thread as before while a statement listener is on the engine, while
        the caller's read must wait for the replica (`Replica`), and after the database could
        not be reached from the loop."""
        pg = self.pg
        if pg is not None:
            found = await pg.fetch(params)
            if found is not _UNSERVED:
                return found
        return await anyio.to_thread.run_sync(self.read_one, params)

    def read_one(self, params: dict[str, Any]) -> dict[str, Any] | None:
        """The row (column key -> value) the statement finds with `params`, or None."""
        if not self.direct or pooled_one_row_reads(self.engine):
            with read(self.engine, snapshot=False) as conn:
                row = conn.execute(self.statement, params).mappings().first()
            return None if row is None else dict(row)
        values = [params[name] for name in self.params]
        connections = self.connections
        conn = connections.get()
        try:
            # the connection's own cursor, dropped at once (which resets the statement and so
            # ends the read): a cursor made and closed here costs as much again as the read
            found = conn.execute(self.sql, values).fetchone()
        except sqlite3.Error as exc:  # as SQLAlchemy raises it (busy, unreadable: a 503)
            connections.discard(conn)
            raise sa.exc.DBAPIError.instance(self.sql, values, exc, sqlite3.Error) from exc
        if found is None:
            return None
        return _as_record(self.keys, self.processors, found)


def _as_record(
    keys: Sequence[str], processors: Sequence[tuple[int, Any]], row: Sequence[Any]
) -> dict[str, Any]:
    """A DBAPI row as SQLAlchemy's mapping of it would be: the columns' result processors
    (dates, ...) applied, by column key."""
    values = list(row)
    for i, proc in processors:
        values[i] = proc(values[i])
    return dict(zip(keys, values, strict=True))


#: `_PgOneRow.fetch` left the read to a worker thread
_UNSERVED: Any = object()
#: PostgreSQL connections each event loop keeps per engine for one-row reads (`AsyncReads`)
ASYNC_READ_CONNECTIONS = 4
#: after a connection from the event loop failed, its reads go to worker threads this long (s)
ASYNC_READ_RETRY_SECONDS = 5.0


@dataclass(frozen=True)
class ReadBatch:
    """How the one-row reads of one round of the event loop are made as one statement on
    PostgreSQL (`OneRowRead.read_one_async`): `statement` selects the rows of a list of keys
    (its parameter `keys`, e.g. `id = ANY(:keys)`), `param` is the one-row statement's
    parameter holding the key, and `column` the key's column in the rows."""

    statement: sa.Select[Any]
    param: str
    keys: str
    column: str


class _PgStatement:
    """A statement as psycopg runs it (`%(name)s` parameters), with the columns' result
    processors SQLAlchemy would apply."""

    def __init__(self, engine: Engine, statement: sa.Select[Any]):
        self.dialect = engine.dialect
        compiled = statement.compile(dialect=engine.dialect)
        self.sql = str(compiled)
        self.defaults = dict(compiled.params)
        #: a parameter SQLAlchemy converts before sending: such a statement stays in threads
        self.servable = not compiled._bind_processors
        self.keys = [str(c.key) for c in statement.selected_columns]
        self.types = [c.type for c in statement.selected_columns]
        #: worked out from the first result's column types (PostgreSQL's type codes)
        self.processors: list[tuple[int, Any]] | None = None

    async def fetch(self, engine: Engine, params: dict[str, Any], *, many: bool = False) -> Any:
        """The row as a dict (None: no row), or the rows when `many`; or `_UNSERVED`."""
        found = await async_reads(engine).fetch(
            self.sql, {**self.defaults, **params}, describe=self.processors is None, many=many
        )
        if found is _UNSERVED:
            return _UNSERVED
        rows, description = found
        if not many:
            return None if rows is None else self.record(rows, description)
        return [self.record(row, description) for row in rows]

    def record(self, row: Sequence[Any], description: Any) -> dict[str, Any]:
        if self.processors is None:
            self.processors = [
                (i, proc)
                for i, (t, d) in enumerate(zip(self.types, description, strict=True))
                if (proc := t._cached_result_processor(self.dialect, d.type_code)) is not None
            ]
        return _as_record(self.keys, self.processors, row)


class _PgOneRow:
    """A `OneRowRead` made from the event loop on PostgreSQL. With a `ReadBatch`, the reads
    made in one round of the loop (to one engine) wait for the end of the round and are then
    one statement: on its own, a read's round trip through psycopg costs it about as much CPU
    as the rest of the request (`docs/scaling.md`); a round with one read runs the one-row
    statement, as without."""

    def __init__(self, engine: Engine, statement: sa.Select[Any], batch: ReadBatch | None):
        self.engine = engine
        self.one = _PgStatement(engine, statement)
        self.batch = batch
        self.many = _PgStatement(engine, batch.statement) if batch is not None else None
        #: per event loop and engine: this round's reads
        self._rounds: weakref.WeakKeyDictionary[Any, dict[Engine, _Round]]
        self._rounds = weakref.WeakKeyDictionary()
        self._tasks: set[asyncio.Task[None]] = set()  # the statements under way (kept alive)

    async def fetch(self, params: dict[str, Any]) -> dict[str, Any] | None:
        """The row, None when there is none, or `_UNSERVED` (for a worker thread to read)."""
        if not self.one.servable:
            return _UNSERVED
        source = _async_source(self.engine)
        if source is None:
            return _UNSERVED
        engine, replica = source
        batch, many = self.batch, self.many
        if batch is None or many is None or not many.servable or params.keys() != {batch.param}:
            found = await self.one.fetch(engine, params)
        else:
            found = await self._in_round(engine, params[batch.param])
            if found is not None and found is not _UNSERVED:
                found = dict(found)  # each caller's own (a key read twice in a round)
        if found is not _UNSERVED and replica is not None:
            replica.reads["replica"] += 1
        return found

    async def _in_round(self, engine: Engine, key: Any) -> Any:
        loop = asyncio.get_running_loop()
        rounds = self._rounds.get(loop)
        if rounds is None:
            rounds = self._rounds[loop] = {}
        this = rounds.get(engine)
        if this is None:
            this = rounds[engine] = _Round()
            loop.call_soon(self._end_round, loop, engine)
        future = this.futures.get(key)
        if future is None:
            future = this.futures[key] = loop.create_future()
        this.callers += 1
        try:  # shielded: a caller that goes away leaves the others' read alone
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            this.callers -= 1
            if this.callers == 0 and this.task is not None:
                this.task.cancel()  # nobody waits for it any more: its connection is closed
            raise

    def _end_round(self, loop: asyncio.AbstractEventLoop, engine: Engine) -> None:
        this = self._rounds[loop].pop(engine)
        if this.callers == 0:  # every caller went away within the round
            return
        this.task = task = loop.create_task(self._read_round(engine, this.futures))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read_round(self, engine: Engine, waiting: dict[Any, asyncio.Future[Any]]) -> None:
        batch, many = self.batch, self.many
        assert batch is not None and many is not None
        keys = list(waiting)
        try:
            if len(keys) == 1:
                found = await self.one.fetch(engine, {batch.param: keys[0]})
                rows = found if found is _UNSERVED else [] if found is None else [found]
            else:
                rows = await many.fetch(engine, {batch.keys: keys}, many=True)
        except asyncio.CancelledError:
            for future in waiting.values():
                future.cancel()
            raise
        except BaseException as exc:  # each caller raises it
            for future in waiting.values():
                if not future.done():
                    future.set_exception(exc)
            return
        if rows is _UNSERVED:
            for future in waiting.values():
                if not future.done():
                    future.set_result(_UNSERVED)
            return
        by_key = {row[batch.column]: row for row in rows}
        for key, future in waiting.items():
            if not future.done():
                future.set_result(by_key.get(key))


class _Round:
    """The reads by key of one round of the event loop: each key's future, how many callers
    wait, and the statement's task once the round has ended."""

    __slots__ = ("callers", "futures", "task")

    def __init__(self) -> None:
        self.futures: dict[Any, asyncio.Future[Any]] = {}
        self.callers = 0
        self.task: asyncio.Task[None] | None = None


def _async_source(engine: Engine) -> tuple[Engine, Replica | None] | None:
    """The engine a caller's one-row read from the event loop goes to (as `read_connection`
    chooses: the replica inside `replica_reads`) and the replica when it is one; or None when
    the read must be made in a thread: a statement listener is on the engine, this thread has
    a write open, or the caller's read must first learn whether the replica has replayed
    their last write (`Replica.connection`)."""
    if id(engine) in (getattr(_OPEN_WRITES, "by_engine", None) or {}):
        return None
    replica = _REPLICAS.get(engine) if _REPLICA_READS.get() else None
    if replica is not None:
        if time.monotonic() < replica._down_until or replica.waits_for(_SESSION.get()):
            return None
        engine = replica.engine
    if engine.dispatch.before_cursor_execute:
        return None
    return engine, replica


class AsyncReads:
    """PostgreSQL connections (psycopg's `AsyncConnection`, autocommit) that each event loop
    keeps for one-row reads made in it: at most `ASYNC_READ_CONNECTIONS` per loop, opened when
    needed and kept; a read finding them all busy waits in the loop for the first one given
    back (a worker thread would cost more than the wait). Made with the engine's own connection
    arguments (its JSON loaders, `prepare_threshold`), so a statement is prepared once per
    connection, or never with `database_prepared_statements` off (PgBouncer). A connection is
    closed after any error (and the loop's reads go to worker threads for
    `ASYNC_READ_RETRY_SECONDS` when it could not be reached or broke: the pool there checks its
    connections before use), when its read was cancelled, and when the engine is disposed
    (idle ones at once, busy ones when their read ends)."""

    def __init__(self, engine: Engine):
        cargs, cparams = engine.dialect.create_connect_args(engine.url)
        self._args = (tuple(cargs), {**cparams, **_PG_CONNECT_ARGS.get(engine, {})})
        self._lock = threading.Lock()
        #: per event loop: its idle connections, how many it has open, the reads waiting
        self._loops: weakref.WeakKeyDictionary[Any, _LoopConnections] = weakref.WeakKeyDictionary()
        self._generation = 0  # bumped when the engine is disposed
        self._down_until = 0.0
        sa.event.listen(engine, "engine_disposed", self._disposed)

    async def fetch(
        self, sql: str, params: dict[str, Any], *, describe: bool = False, many: bool = False
    ) -> Any:
        """The first row `sql` finds (a tuple, or None; every row when `many`) and, when
        `describe`, the result's description (psycopg makes it anew each time it is asked
        for); or `_UNSERVED`."""
        import psycopg

        loop = asyncio.get_running_loop()
        waiter = None
        with self._lock:
            if time.monotonic() < self._down_until:
                return _UNSERVED
            mine = self._loops.get(loop)
            if mine is None:
                mine = self._loops[loop] = _LoopConnections()
                # a loop that has ended (a test client's) closes its connections when it goes
                weakref.finalize(loop, mine.close_idle)
            # a connection is kept as its one cursor, used for every read on it
            cursor = mine.idle.pop() if mine.idle else None
            if cursor is None:
                if mine.open < ASYNC_READ_CONNECTIONS:
                    mine.open += 1  # this read opens one
                else:
                    waiter = loop.create_future()
                    mine.waiters.append(waiter)
            generation = self._generation
        if waiter is not None:
            try:  # a connection given back, or None: its place, to open one in
                cursor = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():  # given, then cancelled: pass it on
                    self._give_back(mine, waiter.result(), generation)
                else:  # not left in the queue, where it would keep its loop alive
                    with self._lock, contextlib.suppress(ValueError):
                        mine.waiters.remove(waiter)
                raise
            if cursor is None and time.monotonic() < self._down_until:
                self._give_back(mine, None, generation)
                return _UNSERVED
        try:
            if cursor is None:
                cargs, cparams = self._args
                conn = await psycopg.AsyncConnection.connect(*cargs, autocommit=True, **cparams)
                cursor = conn.cursor()
            await cursor.execute(sql, params)
            row = await (cursor.fetchall() if many else cursor.fetchone())
            description = cursor.description if describe else None
        except BaseException as exc:
            if cursor is not None:  # in an unknown state (a cancelled read): not reused
                cursor.connection.pgconn.finish()
            if isinstance(exc, psycopg.OperationalError):
                self._down_until = time.monotonic() + ASYNC_READ_RETRY_SECONDS
            self._give_back(mine, None, generation)
            if isinstance(exc, psycopg.OperationalError):
                log.warning("a read from the event loop failed, reading in threads: %s", exc)
                return _UNSERVED
            if isinstance(exc, psycopg.Error):
                raise sa.exc.DBAPIError.instance(sql, params, exc, psycopg.Error) from exc
            raise
        self._give_back(mine, cursor, generation)
        return row, description

    def _give_back(self, mine: _LoopConnections, cursor: Any, generation: int) -> None:
        """A read is done with `cursor`'s connection (None: it was closed): to the first read
        waiting (which opens one in its place when None), else kept idle (or its place
        freed)."""
        with self._lock:
            if cursor is not None and generation != self._generation:  # of a disposed engine
                cursor.connection.pgconn.finish()
                cursor = None
            while mine.waiters:
                waiter = mine.waiters.popleft()
                if not waiter.done():  # not cancelled
                    waiter.set_result(cursor)
                    return
            if cursor is None:
                mine.open -= 1
            else:
                mine.idle.append(cursor)

    def _disposed(self, _engine: Engine) -> None:
        with self._lock:  # none of the idle ones is in use: closing it is safe from any thread
            self._generation += 1
            for mine in list(self._loops.values()):
                mine.close_idle()


@dataclass
class _LoopConnections:
    idle: list[Any] = field(default_factory=list)
    open: int = 0
    #: reads waiting for a connection (futures of this loop)
    waiters: deque[asyncio.Future[Any]] = field(default_factory=deque)

    def close_idle(self) -> None:
        idle, self.idle = self.idle, []
        self.open -= len(idle)
        for cursor in idle:
            cursor.connection.pgconn.finish()


#: per PostgreSQL engine: the `connect_args` it was made with (`AsyncReads` uses them too)
_PG_CONNECT_ARGS: weakref.WeakKeyDictionary[Engine, dict[str, Any]] = weakref.WeakKeyDictionary()
#: per PostgreSQL engine, its `AsyncReads`
_ASYNC_READS: weakref.WeakKeyDictionary[Engine, AsyncReads] = weakref.WeakKeyDictionary()


def async_reads(engine: Engine) -> AsyncReads:
    """The `AsyncReads` of a PostgreSQL engine (one per engine)."""
    return _one_per_engine(_ASYNC_READS, AsyncReads, engine)


#: per SQLite engine, its `ReadConnections`
_READ_CONNECTIONS: weakref.WeakKeyDictionary[Engine, ReadConnections] = weakref.WeakKeyDictionary()
_PER_ENGINE_LOCK = threading.Lock()
_Kept = TypeVar("_Kept")


def read_connections(engine: Engine) -> ReadConnections:
    """The `ReadConnections` of a SQLite engine (one per engine)."""
    return _one_per_engine(_READ_CONNECTIONS, ReadConnections, engine)


def _one_per_engine(
    kept: weakref.WeakKeyDictionary[Engine, _Kept], make: Callable[[Engine], _Kept], engine: Engine
) -> _Kept:
    """`kept[engine]`, made by `make` on first use (once, whichever thread asks first)."""
    found = kept.get(engine)
    if found is None:
        with _PER_ENGINE_LOCK:
            found = kept.get(engine)
            if found is None:
                found = kept[engine] = make(engine)
    return found


# -- read replicas ------------------------------------------------------------------------------
#: sessions whose last write's position is remembered, per process (the oldest are forgotten)
REPLICA_SESSIONS = 10_000
#: after the replica could not be reached, reads go to the primary for this long (seconds)
REPLICA_RETRY_SECONDS = 5.0


def _lsn(text: str | None) -> int | None:
    """A PostgreSQL WAL position (`16/B374D848`) as a number; None stays None."""
    if text is None:
        return None
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) + int(low, 16)


class Replica:
    """The read replica of one primary engine (`database_read_url`), and read-your-writes.

    After a write commits in a session (`session`), the primary's WAL position then
    (`pg_current_wal_lsn()`, which is past the commit) is kept for that session. A read of the
    session goes to the replica once the replica has replayed that far
    (`pg_last_wal_replay_lsn()`; asked only while the session has a write the replica was not
    yet seen to have replayed), else to the primary. Reads of sessions with no such write go to
    the replica directly. A server that is not a standby (no replay position) counts as caught
    up. When the replica cannot be reached, reads go to the primary for
    `REPLICA_RETRY_SECONDS`."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._lock = threading.Lock()
        self._pending: OrderedDict[str, int] = OrderedDict()  # session -> LSN to wait for
        self._replayed = 0  # the furthest replay position seen
        self._down_until = 0.0
        #: reads served: `replica`, `primary` (the session's writes not replayed yet), `down`
        self.reads = {"replica": 0, "primary": 0, "down": 0}

    def wrote(self, conn: Connection, session_key: str) -> None:
        """Remember where the primary's WAL was after `session_key`'s write on `conn` commits."""
        lsn = _lsn(conn.exec_driver_sql("SELECT pg_current_wal_lsn()::text").scalar())
        if lsn is None:
            return
        with self._lock:
            self._pending[session_key] = lsn
            self._pending.move_to_end(session_key)
            while len(self._pending) > REPLICA_SESSIONS:
                self._pending.popitem(last=False)

    def waits_for(self, session_key: str | None) -> int | None:
        """The WAL position the replica must have replayed for this session's reads."""
        if session_key is None:
            return None
        with self._lock:
            needed = self._pending.get(session_key)
            if needed is not None and needed <= self._replayed:
                del self._pending[session_key]
                return None
            return needed

    def _seen(self, replayed: int) -> None:
        with self._lock:
            self._replayed = max(self._replayed, replayed)

    def connection(self, primary: Engine, session_key: str | None) -> Connection:
        """A connection for a read of `session_key`: the replica's, or `primary`'s when the
        replica has not replayed the session's last write or cannot be reached."""
        if time.monotonic() < self._down_until:
            self.reads["down"] += 1
            return primary.connect()
        needed = self.waits_for(session_key)
        try:
            conn = self.engine.connect()
        except sa.exc.DBAPIError as exc:
            self._down_until = time.monotonic() + REPLICA_RETRY_SECONDS
            log.warning("the read replica cannot be reached, reading the primary: %s", exc.orig)
            self.reads["down"] += 1
            return primary.connect()
        if needed is not None:
            try:
                text = conn.exec_driver_sql("SELECT pg_last_wal_replay_lsn()::text").scalar()
                conn.commit()
            except BaseException:
                conn.close()
                raise
            replayed = _lsn(text)
            if replayed is None:  # not a standby: nothing to wait for
                replayed = needed
            self._seen(replayed)
            if replayed < needed:
                conn.close()
                self.reads["primary"] += 1
                return primary.connect()
        self.reads["replica"] += 1
        return conn


#: the read replica of each primary engine that has one
_REPLICAS: weakref.WeakKeyDictionary[Engine, Replica] = weakref.WeakKeyDictionary()


def replica_of(engine: Engine) -> Replica | None:
    """The read replica of `engine` (`database_read_url`), or None."""
    return _REPLICAS.get(engine)


# -- planner statistics -------------------------------------------------------------------------
# SQLite's ANALYZE reads whole indexes (no `analysis_limit`): a sample reads the first entries
# of each index only, so it takes a low-cardinality column (`status`) for a selective one, and
# `status=Active&sort=-_createdAt` then sorts every active row (741 ms instead of 1 ms at 1M
# rows, benchmarks/lists.py). A full ANALYZE of a 1M-row table takes well under a second.
#: a SQLite table is analysed again at start-up when it has grown this many times since
SQLITE_REANALYSE_GROWTH = 10


def analyse_stale(dbapi_conn: Any) -> list[str]:
    """ANALYZE the SQLite tables (with indexes) that hold rows and have no statistics, or have
    grown `SQLITE_REANALYSE_GROWTH`-fold since their last analysis (rows estimated by the
    largest rowid); returns their names. What SQLite 3.46's `PRAGMA optimize=0x10002` does at
    a connection's opening, for any SQLite version. Waits at most 2 s for the write lock, else
    leaves them to the next start (logged)."""
    cur = dbapi_conn.cursor()
    try:
        tables = [
            r[0]
            for r in cur.execute(
                "SELECT DISTINCT tbl_name FROM sqlite_master WHERE type = 'index' "
                "AND tbl_name NOT LIKE 'sqlite_%'"
            )
        ]
        if not tables:
            return []
        known: dict[str, int] = {}
        if cur.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'").fetchone():
            for tbl, stat in cur.execute("SELECT tbl, stat FROM sqlite_stat1"):
                head = str(stat or "").split(" ", 1)[0]
                known[tbl] = max(known.get(tbl, 0), int(head) if head.isdigit() else 0)
        stale = []
        for name in tables:
            try:
                top = cur.execute(f'SELECT max(rowid) FROM "{name}"').fetchone()[0]
            except sqlite3.OperationalError:  # a WITHOUT ROWID table
                continue
            if top and (name not in known or top >= SQLITE_REANALYSE_GROWTH * max(known[name], 1)):
                stale.append(name)
        if stale:
            cur.execute("PRAGMA busy_timeout=2000")
            try:
                for name in stale:
                    cur.execute(f'ANALYZE "{name}"')
            except sqlite3.OperationalError as exc:  # locked by a writer, or read-only
                log.info("planner statistics left for later (%s): %s", ", ".join(stale), exc)
            finally:
                cur.execute("PRAGMA busy_timeout=30000")
        return stale
    finally:
        cur.close()


def planner_columns(table: sa.Table, private: Iterable[str] = ()) -> list[str]:
    """The columns of `table` whose statistics plans use: not JSON (a filter inside a JSON
    value is estimated without them) and not the ciphertext of a private field (`private`:
    searched through its blind index). PostgreSQL's `ANALYZE` of the rest is a third of the
    whole table's (50,000 recipients: 0.7 -> 0.3 s, `docs/scaling.md`)."""
    hidden = set(private)
    return [
        c.name
        for c in table.columns
        if c.name not in hidden and not isinstance(c.type, sa.JSON)
        and not isinstance(getattr(c.type, "impl", None), sa.JSON)
    ]  # fmt: skip


def analyse(
    engine: Engine, tables: Iterable[str], columns: Mapping[str, Sequence[str]] | None = None
) -> None:
    """Refresh the planner statistics of `tables` (after a bulk load wrote them). SQLite: an
    `ANALYZE` of each in one write transaction (of its indexes). PostgreSQL: of the columns
    given for it in `columns` (`planner_columns`; every column when none are), each table on
    a connection of its own, at once (each server process samples its table on a core of its
    own); the first error is raised once all have ended."""
    names = sorted(set(tables))
    if not names:
        return
    quote = engine.dialect.identifier_preparer.quote
    if engine.dialect.name != "postgresql":
        with write(engine) as conn:
            for name in names:
                conn.exec_driver_sql(f"ANALYZE {quote(name)}")
        return

    def one(name: str) -> None:
        listed = (columns or {}).get(name)
        which = f" ({', '.join(quote(c) for c in listed)})" if listed else ""
        with engine.connect() as conn:
            conn.exec_driver_sql(f"ANALYZE {quote(name)}{which}")
            conn.commit()

    with concurrent.futures.ThreadPoolExecutor(len(names), "registry-analyse") as pool:
        done = [pool.submit(one, name) for name in names]
    for future in done:
        future.result()


@dataclass
class Database:
    """The engine plus the tables of the loaded schemas (and the keys of their private fields)."""

    engine: Engine
    metadata: sa.MetaData
    tables: dict[str, sa.Table]  # by entity name
    settings: Settings | None = None
    _keyring: Keyring | None = field(default=None, repr=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def keyring(self) -> Keyring:
        """The data keys, loaded on first use (a key file is created then if there is none)."""
        if self._keyring is None:
            settings = self.settings or Settings()
            self._keyring, _ = load_keyring(settings.data_keys, settings.data_key_path)
        return self._keyring


def build_database(
    settings: Settings, schemas: SchemaSet, engine: Engine | None = None
) -> Database:
    """The engine and table objects; touches no database."""
    metadata = sa.MetaData()
    system_tables(metadata)
    build_metadata(schemas, metadata=metadata)
    tables = {e.name: metadata.tables[e.table_name] for e in schemas}
    return Database(
        engine=engine or make_engine(settings), metadata=metadata, tables=tables, settings=settings
    )


# -- SQLite backups -------------------------------------------------------------------------------
#: the first bytes of every SQLite database file
SQLITE_MAGIC = b"SQLite format 3\x00"


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL; None for another database, or SQLite in memory."""
    sa_url = sa.engine.make_url(url)
    if sa_url.get_backend_name() != "sqlite":
        return None
    db = sa_url.database
    return Path(db) if db and db != ":memory:" and not db.startswith("file:") else None


def sqlite_tables(path: Path) -> list[str]:
    """The tables of the SQLite database `path` ([] when there is no such file or it is empty;
    never creates one)."""
    if not path.exists() or path.stat().st_size == 0:
        return []
    conn = sqlite3.connect(str(path), timeout=30)
    try:
        rows = conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name"
        ).fetchall()
    finally:
        conn.close()
    return [r[0] for r in rows]


def backup_sqlite(source: Path, target: Path) -> None:
    """Copy the SQLite database `source` into a new file `target` with SQLite's online backup
    API, safe while servers use it: the copy is of one moment (one read transaction, which in
    WAL mode does not stop writers), checked (`quick_check`), one self-contained file (rollback
    journal, no `-wal` beside it) readable by its owner only (0600), written beside `target`
    and renamed into place only when complete. Raises `ValueError` when `source` is missing or
    the copy does not check out."""
    if not source.is_file():
        raise ValueError(f"there is no SQLite database at {source}")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    partial.unlink(missing_ok=True)
    private_sqlite_file(partial)
    try:
        src = sqlite3.connect(str(source), timeout=30)
        try:
            dst = sqlite3.connect(str(partial))
            try:
                src.backup(dst)  # all pages in one step: one snapshot of the source
                dst.execute("PRAGMA journal_mode=DELETE")
                check = dst.execute("PRAGMA quick_check").fetchone()[0]
            finally:
                dst.close()
        finally:
            src.close()
        if check != "ok":
            raise ValueError(f"the copy of {source} does not check out: {check}")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def restore_sqlite(source: Path, target: Path) -> None:
    """Replace the whole content of the SQLite database `target` (created, 0600, when missing)
    with the backup `source` (opened read-only), through SQLite's online backup API: one
    transaction under the database's own locks, so no reader ever sees half of it; then WAL
    mode, as the registry runs it. Raises `ValueError` when `source` is not a SQLite database
    or does not check out."""
    with source.open("rb") as fh:
        if fh.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC:
            raise ValueError(f"{source} is not a SQLite database")
    uri = source.resolve().as_uri() + "?mode=ro"
    src = sqlite3.connect(uri, uri=True)
    try:
        check = src.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise ValueError(f"the backup {source} does not check out: {check}")
        private_folder(target.parent)
        private_sqlite_file(target)
        dst = sqlite3.connect(str(target), timeout=30)
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=WAL")
        finally:
            dst.close()
    finally:
        src.close()
