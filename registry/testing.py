"""Helpers for testing a registry and its plugins (also a pytest plugin: `registry_template_dbs`).

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.schema import CreateIndex, CreateTable

from registry.schemas import SchemaSet
from registry.storage import Database

Prepare = Callable[[Database, SchemaSet, Path], list[str]]


@dataclass
class _Template:
    created: list[str]
    revisions: dict[str, str]  # file name -> text, of the migrations folder's versions/
    sqlite_file: Path | None = None
    pg_database: str | None = None


def metadata_key(db: Database) -> str:
    """A digest of the DDL `db`'s metadata compiles to on its own dialect."""
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
        self.hits = 0
        self.misses = 0

    # -- the wrapper -------------------------------------------------------------------------

    def wrap(self, prepare: Prepare) -> Prepare:
        """`prepare` made to copy a template when it has one for an empty database."""

        def cached_prepare(db: Database, schemas: SchemaSet, folder: Path) -> list[str]:
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
            db.engine.dispose()  # no session may stay on a database being copied
            with self._pg_admin() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{url.database}"'))
            template.pg_database = name
        self.templates[key] = template

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
            try:
                with self._pg_admin() as conn:
                    # refused (and nothing lost) when another session still uses the database
                    conn.execute(sa.text(f'DROP DATABASE "{name}"'))
                    conn.execute(
                        sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{template.pg_database}"')
                    )
                    for key, value in settings:  # per-database settings are not copied
                        conn.execute(sa.text(f'ALTER DATABASE "{name}" SET {key} = {value}'))
            except sa.exc.DBAPIError:
                return False
        else:
            return False
        versions = folder / "versions"
        versions.mkdir(parents=True, exist_ok=True)
        for name, text in template.revisions.items():
            (versions / name).write_text(text)
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
            return [tuple(r.split("=", 1)) for r in rows]  # type: ignore[misc]

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
