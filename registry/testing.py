"""A testing kit for plugin authors and for this project's own tests; also a pytest plugin.

Installed with the package, pytest loads it (entry point `pytest11`) and gives every test suite:

- `make_registry(**settings)`: a fixture that opens a registry on a SQLite file in the test's
  temporary folder (plugins found through entry points, as in production; any setting can be
  given) and closes it after the test;
- `notifications`: a `Messages` plugin instance that keeps what the registry would send (one-time
  codes, notices) instead of sending it; pass it as `make_registry(register=[notifications])`.

And as plain functions: `token_for` / `auth_headers` (a bearer token for any roles, facility or
recipient), `client_for` (an HTTP client of the app signed in so), `Messages`.

`TemplateDatabases` makes opening a registry on an empty database cheap in a test suite: the first
time a given set of tables is built on a backend, the database it produced (a SQLite file, or a
PostgreSQL template database) and the baseline revision written for it are kept; every later
build of the same tables on an empty database copies them instead of running Alembic's
autogenerate, reflection and DDL again. What a test then sees is byte for byte what a fresh
start makes, because it is a copy of one. Migration tests that need the real from-scratch path
opt out with the `fresh_migrations` marker.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import sqlite3
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.schema import CreateIndex, CreateTable

from open_registry.core.app import Registry, create_app, open_registry
from open_registry.core.auth import Principal
from open_registry.core.hookspecs import hookimpl
from open_registry.core.migrations import structure_digest
from open_registry.core.schemas.loading import SchemaSet
from open_registry.core.settings import Settings
from open_registry.core.storage import Database

# -- callers -------------------------------------------------------------------------------------


def token_for(
    registry: Registry,
    *roles: str,
    facility: str | None = None,
    recipient: str | None = None,
    subject: str = "test-admin",
    kind: str = "user",
) -> str:
    """A bearer token of the registry's own, for a caller with `roles` (system-admin if none),
    tied to `facility` (staff) or `recipient` (a person's own records) when given."""
    p = Principal(
        kind,
        subject,
        frozenset(roles or ("system-admin",)),
        facility=facility,
        recipient=recipient,
    )
    return str(registry.auth.tokens.issue(p).token)


def auth_headers(registry: Registry, *roles: str, **kw: Any) -> dict[str, str]:
    """`Authorization: Bearer ...` for a caller with `roles` (system-admin if none)."""
    return {"Authorization": f"Bearer {token_for(registry, *roles, **kw)}"}


def client_for(registry: Registry, *roles: str, **kw: Any) -> TestClient:
    """An HTTP client of `registry`'s app (in process, real ASGI) signed in with `roles`;
    no roles and no `anonymous=True` is a system-admin. Use it in a `with` block."""
    anonymous = kw.pop("anonymous", False)
    headers = {} if anonymous else auth_headers(registry, *roles, **kw)
    return TestClient(create_app(registry=registry), headers=headers)


class Messages:
    """A plugin whose `send_notification` keeps the messages (one-time codes, notices) instead
    of sending them; answers a message id."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    @hookimpl
    def send_notification(
        self, channel: str, to: str, template: str, context: dict[str, Any], registry: Any
    ) -> str:
        self.sent.append({"channel": channel, "to": to, "template": template, **context})
        return f"m{len(self.sent)}"

    def last_code(self, to: str) -> str:
        """The last one-time code sent to `to` (as normalised: `+` and digits)."""
        return str(next(m["code"] for m in reversed(self.sent) if m["to"] == to))


# -- pytest fixtures -----------------------------------------------------------------------------


@pytest.fixture
def make_registry(tmp_path: Path) -> Iterator[Callable[..., Registry]]:
    """Open registries for a test: `make_registry(register=[plugin objects], **settings)`
    (`plugins=` is the setting of that name: plugins' own settings); each gets its own
    SQLite file and data folder under the test's `tmp_path` unless `database_url`/`data_dir`
    are given; all are closed after the test."""
    opened: list[Registry] = []

    def make(*, register: Iterable[Any] = (), **settings: Any) -> Registry:
        n = len(opened)
        settings.setdefault("database_url", f"sqlite:///{tmp_path / f'registry-{n}.db'}")
        settings.setdefault("data_dir", tmp_path / f"data-{n}")
        settings.setdefault("inline_worker", False)
        reg = open_registry(Settings(**settings), plugins=register)
        opened.append(reg)
        return reg

    yield make
    for reg in opened:
        reg.close()


@pytest.fixture
def notifications() -> Messages:
    """A notification catcher: register it with `make_registry(register=[notifications])`."""
    return Messages()

Prepare = Callable[[Database, SchemaSet, Path], list[str]]


@dataclass
class _Template:
    created: list[str]
    revisions: dict[str, str]  # file name -> text, of the migrations folder's versions/
    sqlite_file: Path | None = None
    pg_database: str | None = None
    #: PostgreSQL: the catalog's fingerprint, and the rows and sequence values the build left
    pg_fingerprint: str | None = None
    pg_tables: frozenset[str] = frozenset()
    pg_rows: dict[str, bytes] | None = None
    pg_sequences: dict[str, int] | None = None


#: (table, descriptor) of every column, index and constraint of the current schema (PostgreSQL)
_PG_CATALOG = """
SELECT c.relname, a.attname || ':' || format_type(a.atttypid, a.atttypmod) || ':'
    || a.attnotnull::text || ':' || coalesce(pg_get_expr(d.adbin, d.adrelid), '')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')
UNION ALL
SELECT tablename, indexdef FROM pg_indexes WHERE schemaname = current_schema()
UNION ALL
SELECT o.conrelid::regclass::text, o.conname || ' ' || pg_get_constraintdef(o.oid)
FROM pg_constraint o JOIN pg_namespace n ON n.oid = o.connamespace
WHERE n.nspname = current_schema() AND o.conrelid <> 0
"""


def _pg_fingerprint(conn: Any, tables: frozenset[str] | None) -> tuple[str, frozenset[str]]:
    """A digest of the catalog rows of `tables` (all when None), and the tables present."""
    rows = [(t.strip('"'), d) for t, d in conn.execute(sa.text(_PG_CATALOG))]
    present = frozenset(t for t, _ in rows)
    chosen = sorted(r for r in rows if tables is None or r[0] in tables)
    return hashlib.sha256(repr(chosen).encode()).hexdigest(), present


#: `metadata_key` by `structure_digest`: compiling the DDL costs ~10 ms on PostgreSQL per registry
_KEYS: dict[str, str] = {}


def metadata_key(db: Database) -> str:
    """A digest of the DDL `db`'s metadata compiles to on its own dialect."""
    structure = structure_digest(db)
    if structure not in _KEYS:
        _KEYS[structure] = _compiled_key(db)
    return _KEYS[structure]


def _compiled_key(db: Database) -> str:
    dialect = db.engine.dialect
    parts = [dialect.name]
    for table in sorted(db.metadata.tables.values(), key=lambda t: t.name):
        parts.append(str(CreateTable(table).compile(dialect=dialect)))
        for index in sorted(table.indexes, key=lambda i: i.name or ""):
            parts.append(str(CreateIndex(index).compile(dialect=dialect)))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _versions(folder: Path) -> list[Path]:
    versions = folder / "versions"
    return sorted(versions.glob("*.py")) if versions.is_dir() else []


class TemplateDatabases:
    """Copies of databases built by `prepare` on empty databases, reused for the same tables."""

    def __init__(self, workdir: Path, *, pg_admin_url: str | None = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pg_admin_url = pg_admin_url
        self.templates: dict[str, _Template] = {}
        self.enabled = True
        #: PostgreSQL databases that still hold the previous test's tables and rows
        self.inherited: set[str] = set()
        self.hits = 0
        self.misses = 0

    # -- the wrapper -------------------------------------------------------------------------

    def wrap(self, prepare: Prepare) -> Prepare:
        """`prepare` made to copy a template when it has one for an empty database."""

        def cached_prepare(db: Database, schemas: SchemaSet, folder: Path) -> list[str]:
            name = db.engine.url.database
            if db.engine.url.get_backend_name() == "postgresql" and name in self.inherited:
                self.inherited.discard(name)
                recycled = self._recycle(db, folder)
                if recycled is not None:
                    self.hits += 1
                    return list(recycled.created)
            if not self.enabled or _versions(folder) or not self._empty(db):
                return prepare(db, schemas, folder)
            key = metadata_key(db)
            template = self.templates.get(key)
            if template is not None and self._restore(template, db, folder):
                self.hits += 1
                return list(template.created)
            created = prepare(db, schemas, folder)
            self.misses += 1
            if template is None:
                with contextlib.suppress(Exception):  # a template is an optimisation only
                    self._keep(key, created, db, folder)
            return created

        return cached_prepare

    # -- per backend -------------------------------------------------------------------------

    def _empty(self, db: Database) -> bool:
        url = db.engine.url
        if url.get_backend_name() == "sqlite":
            path = url.database
            if not path or path == ":memory:":
                return False
            file = Path(path)
            return not file.exists() or file.stat().st_size == 0
        if url.get_backend_name() == "postgresql" and self.pg_admin_url:
            with db.engine.connect() as conn:
                n = conn.execute(
                    sa.text(
                        "SELECT count(*) FROM pg_class c JOIN pg_namespace n "
                        "ON n.oid = c.relnamespace WHERE n.nspname = current_schema()"
                    )
                ).scalar_one()
            return n == 0
        return False

    def _keep(self, key: str, created: list[str], db: Database, folder: Path) -> None:
        revisions = {p.name: p.read_text() for p in _versions(folder)}
        template = _Template(created=list(created), revisions=revisions)
        url = db.engine.url
        if url.get_backend_name() == "sqlite":
            target = self.workdir / f"{key[:16]}.db"
            src = sqlite3.connect(str(url.database))
            dst = sqlite3.connect(str(target))
            try:
                src.backup(dst)
            finally:
                dst.close()
                src.close()
            template.sqlite_file = target
        else:
            name = f"registry_tmpl_{uuid.uuid4().hex[:12]}"
            with db.engine.connect() as conn:
                template.pg_fingerprint, template.pg_tables = _pg_fingerprint(conn, None)
                template.pg_rows, template.pg_sequences = _pg_contents(conn)
            db.engine.dispose()  # no session may stay on a database being copied
            with self._pg_admin() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{url.database}"'))
            template.pg_database = name
        self.templates[key] = template

    def inherit(self, url: str) -> None:
        """The PostgreSQL database of `url` holds what the previous test left: the next registry
        opened on it gets its tables emptied (when they are a template's) or dropped."""
        name = sa.engine.make_url(url).database
        if name:
            self.inherited.add(name)

    def _recycle(self, db: Database, folder: Path) -> _Template | None:
        """Empty an inherited PostgreSQL database: back to a template's rows when its tables
        are that template's (which is returned), else drop every table (None: prepare as
        usual)."""
        with db.engine.begin() as conn:
            match = None
            if self.enabled and not _versions(folder):
                t = self.templates.get(metadata_key(db))
                if t is not None and t.pg_fingerprint is not None:
                    fingerprint, present = _pg_fingerprint(conn, t.pg_tables)
                    if fingerprint == t.pg_fingerprint and t.pg_tables <= present:
                        match = t
            if match is None:
                conn.execute(sa.text("DROP SCHEMA public CASCADE"))
                conn.execute(sa.text("CREATE SCHEMA public"))
                return None
            _pg_reset(conn, match)
        _write_revisions(folder, match.revisions)
        return match

    def _restore(self, template: _Template, db: Database, folder: Path) -> bool:
        url = db.engine.url
        db.engine.dispose()
        if template.sqlite_file is not None:
            target = Path(str(url.database))
            for suffix in ("-wal", "-shm", "-journal"):
                Path(f"{target}{suffix}").unlink(missing_ok=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(template.sqlite_file, target)
        elif template.pg_database is not None:
            settings = self._pg_settings(str(url.database))
            name = url.database
            with self._pg_admin() as conn:
                try:  # refused (and nothing lost) when another session still uses the database
                    conn.execute(sa.text(f'DROP DATABASE "{name}"'))
                except sa.exc.DBAPIError:
                    return False
                try:
                    conn.execute(
                        sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{template.pg_database}"')
                    )
                    copied = True
                except sa.exc.DBAPIError:  # the test still gets its (empty) database
                    conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
                    copied = False
                for key, value in settings:  # per-database settings are not copied
                    conn.execute(sa.text(f'ALTER DATABASE "{name}" SET {key} = {value}'))
            if not copied:
                return False
        else:
            return False
        _write_revisions(folder, template.revisions)
        return True

    def _pg_settings(self, database: str) -> list[tuple[str, str]]:
        """The `ALTER DATABASE ... SET` settings of `database`."""
        with self._pg_admin() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT unnest(s.setconfig) FROM pg_db_role_setting s "
                    "JOIN pg_database d ON d.oid = s.setdatabase "
                    "WHERE d.datname = :name AND s.setrole = 0"
                ),
                {"name": database},
            ).scalars()
            return [tuple(r.split("=", 1)) for r in rows]

    @contextlib.contextmanager
    def _pg_admin(self) -> Iterator[Any]:
        assert self.pg_admin_url, "PostgreSQL templates need the admin URL"
        engine = sa.create_engine(self.pg_admin_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                yield conn
        finally:
            engine.dispose()

    def close(self) -> None:
        """Drop the PostgreSQL template databases."""
        names = [t.pg_database for t in self.templates.values() if t.pg_database]
        self.templates.clear()
        if names and self.pg_admin_url:
            with self._pg_admin() as conn:
                for name in names:
                    conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _write_revisions(folder: Path, revisions: dict[str, str]) -> None:
    versions = folder / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    for name, text in revisions.items():
        (versions / name).write_text(text)


def _pg_tables(conn: Any) -> list[str]:
    return list(
        conn.execute(
            sa.text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        ).scalars()
    )


def _pg_contents(conn: Any) -> tuple[dict[str, bytes], dict[str, int]]:
    """The rows of every non-empty table (COPY text) and the value of every sequence."""
    rows: dict[str, bytes] = {}
    cursor = conn.connection.driver_connection.cursor()
    for table in _pg_tables(conn):
        data = bytearray()
        with cursor.copy(f'COPY "{table}" TO STDOUT') as copy:
            for block in copy:
                data += block
        if data:
            rows[table] = bytes(data)
    sequences = {
        name: value
        for name, value in conn.execute(
            sa.text(
                "SELECT sequencename, last_value FROM pg_sequences "
                "WHERE schemaname = current_schema() AND last_value IS NOT NULL"
            )
        )
    }
    return rows, sequences


def _entity_tables(conn: Any, names: list[str]) -> list[str]:
    """Those of `names` that have the record columns (`_deleted_at`, `_version`) of an entity."""
    rows = conn.execute(
        sa.text(
            "SELECT table_name FROM information_schema.columns WHERE table_schema = "
            "current_schema() AND table_name = ANY(:names) AND column_name IN "
            "('_deleted_at', '_version') GROUP BY table_name HAVING count(*) = 2"
        ),
        {"names": names},
    )
    return [r[0] for r in rows]


def _pg_reset(conn: Any, template: _Template) -> None:
    """Entity tables the template lacks dropped, the others emptied, then the template's rows
    and sequence values put back: only the tables holding rows are truncated (one query finds
    them), only moved sequences reset."""
    tables = _pg_tables(conn)
    extra = [t for t in tables if t not in template.pg_tables]
    # made after start-up: an entity added in a test is not in a fresh database (dropped); a
    # plugin's own table (one the migrations leave alone: no `_deleted_at`/`_version`) is what
    # the plugin makes again at start-up, so it is kept, emptied, saving its DDL every test
    entities = _entity_tables(conn, extra) if extra else []
    if entities:
        conn.execute(sa.text("DROP TABLE " + ", ".join(f'"{t}"' for t in entities) + " CASCADE"))
        tables = [t for t in tables if t not in entities]
    if tables:
        probe = " UNION ALL ".join(
            f"SELECT '{t}' WHERE EXISTS (SELECT 1 FROM \"{t}\")" for t in tables
        )
        full = list(conn.execute(sa.text(probe)).scalars())
        if full:
            names = ", ".join(f'"{t}"' for t in full)
            conn.execute(sa.text(f"TRUNCATE {names} CASCADE"))
    cursor = conn.connection.driver_connection.cursor()
    for table, data in (template.pg_rows or {}).items():
        with cursor.copy(f'COPY "{table}" FROM STDIN') as copy:
            copy.write(data)
    wanted = template.pg_sequences or {}
    moved = conn.execute(
        sa.text(
            "SELECT sequencename, last_value FROM pg_sequences "
            "WHERE schemaname = current_schema() AND last_value IS NOT NULL"
        )
    ).all()
    for name, value in moved:
        if wanted.get(name) != value:
            if name in wanted:
                conn.execute(sa.text("SELECT setval(:n, :v)"), {"n": name, "v": wanted[name]})
            else:
                conn.execute(sa.text(f'ALTER SEQUENCE "{name}" RESTART'))
