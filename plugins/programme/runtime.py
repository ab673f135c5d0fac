"""The programme plugin's state for one registry: its settings, its tables (created on first
use) and the verification counts waiting to be written; kept on the registry object."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from open_registry.core import Registry, StateKey
from open_registry.plugins.programme.config import ProgrammeConfig
from open_registry.plugins.programme.tables import create_tables
from open_registry.plugins.programme.tables import metadata as tables_metadata

_STATE: StateKey[Programme] = StateKey("programme")

FACILITY_PROGRAMME = "facility_programme"
SCHEDULE = "schedule"
APPOINTMENT = "appointment"
STOCK = "stock"
STOCK_THRESHOLD = "stock_threshold"
SIDE_EFFECT = "side_effect"
VACCINATION = "vaccination"
CERTIFICATE = "certificate"
RECIPIENT = "recipient"
FACILITY = "facility"
VACCINE = "vaccine"
ACTOR = "programme"


class Programme:
    """Everything the plugin's hooks and routes share for one registry."""

    def __init__(self, registry: Any):
        self.registry = registry
        self.config = ProgrammeConfig.from_settings(registry.settings)
        self.ready = False
        self._tables_lock = threading.Lock()
        self.verify_counts: dict[tuple[str, str], int] = {}
        self.verify_lock = threading.Lock()
        self.verify_flushed_at = 0.0
        self._one_statements: dict[tuple[Any, ...], Any] = {}

    def create_tables(self) -> None:
        """Create the plugin's tables now (at start-up, outside any transaction)."""
        if not self.ready:
            with self._tables_lock:
                if not self.ready:
                    create_tables(self.registry.db.engine)
                    self.ready = True

    def ensure(self, conn: Connection) -> None:
        """The plugin's tables, for a hook that may run before the app was built (the CLI, a
        worker process, a test of the services): on PostgreSQL created on a connection of their
        own; on SQLite, whose one writer is `conn`, inside its transaction."""
        if self.ready:
            return
        if conn.dialect.name != "sqlite":
            self.create_tables()
            return
        names = [t.name for t in tables_metadata.sorted_tables]
        inspector = sa.inspect(conn)
        if all(inspector.has_table(n) for n in names):
            self.ready = True
            return
        tables_metadata.create_all(conn, checkfirst=True)  # ready once seen committed

    @property
    def services(self) -> dict[str, Any]:
        return self.registry.services

    def has(self, *entities: str) -> bool:
        return all(e in self.registry.services for e in entities)

    def fetch(
        self,
        conn: Connection,
        entity: str,
        field: str,
        values: Iterable[Any],
        *,
        where: Iterable[Any] = (),
        lock: str | None = None,
    ) -> dict[Any, dict[str, Any]]:
        """Live records of `entity` whose `field` is one of `values`, by that value
        (`lock`: "share" or "update" takes row locks on PostgreSQL)."""
        wanted = sorted({v for v in values if v is not None})
        if not wanted or entity not in self.services:
            return {}
        service = self.services[entity]
        table = service.table
        out: dict[Any, dict[str, Any]] = {}
        for i in range(0, len(wanted), 500):
            stmt = sa.select(table).where(
                table.c[field].in_(wanted[i : i + 500]), table.c._deleted_at.is_(None), *where
            )
            if lock and conn.dialect.name == "postgresql":
                stmt = stmt.with_for_update(read=lock == "share")
            for row in conn.execute(stmt).mappings():
                out[row[field]] = service.codec.to_record(row)
        return out

    def fields_of(
        self, conn: Connection, entity: str, key: str, values: Iterable[Any], fields: list[str]
    ) -> dict[Any, dict[str, Any]]:
        """Some fields of the live records of `entity` whose `key` is one of `values`, by that
        value: only those columns are read (and only private ones among them decrypted)."""
        wanted = sorted({v for v in values if v is not None})
        if not wanted or entity not in self.services:
            return {}
        service = self.services[entity]
        table, codec = service.table, service.codec
        names = [f for f in fields if f in table.c]
        cols = [table.c.id, table.c[key], *(table.c[f] for f in names)]
        out: dict[Any, dict[str, Any]] = {}
        for i in range(0, len(wanted), 500):
            stmt = sa.select(*cols).where(
                table.c[key].in_(wanted[i : i + 500]), table.c._deleted_at.is_(None)
            )
            for row in conn.execute(stmt).mappings():
                rec = {}
                for f in names:
                    value = row[f]
                    if value is None:
                        continue
                    if f in codec.private:
                        value = codec.cipher.open(f, row["id"], value)
                    elif f in codec.kinds and codec.kinds[f] in ("date", "datetime"):
                        value = value.isoformat() if codec.kinds[f] == "date" else value
                    rec[f] = value
                out[row[key]] = rec
        return out

    def fetch_all(
        self, conn: Connection, entity: str, field: str, values: Iterable[Any]
    ) -> list[dict[str, Any]]:
        """Every live record of `entity` whose `field` is one of `values`."""
        wanted = sorted({v for v in values if v is not None})
        if not wanted or entity not in self.services:
            return []
        service = self.services[entity]
        table = service.table
        out: list[dict[str, Any]] = []
        for i in range(0, len(wanted), 500):
            stmt = sa.select(table).where(
                table.c[field].in_(wanted[i : i + 500]), table.c._deleted_at.is_(None)
            )
            out.extend(service.codec.to_record(r) for r in conn.execute(stmt).mappings())
        return out

    def one(
        self, conn: Connection, entity: str, lock: str | None = None, **match: Any
    ) -> dict[str, Any] | None:
        """The live record of `entity` matching every `field=value` (None when there is none)."""
        if entity not in self.services:
            return None
        service = self.services[entity]
        table = service.table
        pg_lock = lock if lock and conn.dialect.name == "postgresql" else None
        cache_key = (table, tuple(match), pg_lock)
        stmt = self._one_statements.get(cache_key)
        if stmt is None:  # built once per table, fields and lock (then compiled once)
            stmt = sa.select(table).where(
                table.c._deleted_at.is_(None),
                *(table.c[k] == sa.bindparam(f"m_{k}") for k in match),
            )
            if pg_lock:
                stmt = stmt.with_for_update(read=pg_lock == "share")
            stmt = self._one_statements[cache_key] = stmt.limit(1)
        params = {f"m_{k}": v for k, v in match.items()}
        row = conn.execute(stmt, params).mappings().first()
        return service.codec.to_record(row) if row is not None else None


def runtime(registry: Registry) -> Programme:
    """The plugin state of `registry`, made on first use."""
    return registry.state(_STATE, lambda: Programme(registry))


def enabled(settings: Any) -> bool:
    """Whether the plugin's entities load: its setting, the shipped schemas and the
    certificates plugin (its entities refer to vaccinations and certificates)."""
    mine = ProgrammeConfig.from_settings(settings)
    certs = (getattr(settings, "plugins", None) or {}).get("certificates", {})
    certs_on = str(certs.get("enabled", True)).strip().lower() not in ("0", "false", "no", "off")
    return mine.enabled and bool(settings.default_schemas) and certs_on
