"""Database: the engine, the system tables, and bringing a database up to the loaded schemas.

SQLite (WAL with `synchronous=FULL` unless the `sqlite_synchronous` setting says NORMAL, foreign
keys, a busy timeout, `BEGIN IMMEDIATE` for writes so concurrent writers queue instead of failing)
is the embedded default; PostgreSQL (psycopg 3, JSONB) the production
engine. Creating and changing tables is `registry.migrations`' job.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from open_registry.core.crypto import Keyring, load_keyring
from open_registry.core.schemas.loading import SchemaSet
from open_registry.core.settings import Settings, sqlite_synchronous
from open_registry.generators.tables import UTCDateTime, build_metadata, json_type

log = logging.getLogger("registry")


def system_tables(metadata: sa.MetaData) -> None:
    """The audit log (a hash chain, see `registry.audit.chain`) and the outbox, written in the same
    transaction as every record; the `Idempotency-Key`s of writes (`registry.idempotency`)."""
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
        if db and db != ":memory:" and not db.startswith("file:") and "uri" not in sa_url.query:
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
        _sqlite_setup(engine, sqlite_synchronous(settings.sqlite_synchronous))
        _WRITE_LOCKS[engine] = threading.Lock()
        return engine
    return sa.create_engine(
        url,
        pool_size=settings.pool_size,
        max_overflow=0,
        pool_timeout=60,
        pool_pre_ping=True,
        **_JSON,
    )


def _sqlite_setup(engine: Engine, synchronous: str = "FULL") -> None:
    """Every connection: WAL, `synchronous` (FULL: each commit synced to disk; NORMAL: only at
    checkpoints, see the `sqlite_synchronous` setting), foreign keys, a busy timeout."""

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

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        if mode != "NONE":  # NONE: single statements in autocommit (one-row reads)
            conn.exec_driver_sql(f"BEGIN {mode}")


_OPEN_WRITES = threading.local()  # per thread: engine -> the connection of its open write


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


@contextmanager
def read(engine: Engine, *, snapshot: bool = True) -> Iterator[Connection]:
    """A read-only unit of work; `snapshot=False` for a single statement (no BEGIN on SQLite)."""
    with engine.connect() as conn:
        if not snapshot and engine.dialect.name == "sqlite":
            conn = conn.execution_options(sqlite_begin="NONE")
        with conn.begin():
            yield conn


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
