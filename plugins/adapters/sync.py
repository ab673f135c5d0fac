"""Master-data sync: records pulled from an external registry (`pull_master_data`) upserted into
one of our entities by a natural key.

- a record whose key is new is created; one whose key exists is merged into the stored record
  (JSON merge patch: the fields the source maps are the source's, the others stay ours), and only
  when that changes something: re-running a sync changes nothing, not even a version number;
- each record is written in its own transaction through the entity's service (validation,
  references, `before_write`, audit, outbox): a record that fails is reported with its row and
  reasons and writes nothing, the others go on;
- records are never deleted because the source no longer lists them (reported as `missing`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from open_registry.core import Invalid, RegistryError

#: the actor written in the audit log for synced records
ACTOR_PREFIX = "sync:"
CHUNK = 500


class SyncError(Exception):
    """The sync could not run (unknown source, the source unreachable); nothing was written
    after the failure, what was written before it stays (each record is its own transaction)."""


@dataclass
class RowFailure:
    row: int
    ref: str
    errors: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {"row": self.row, "ref": self.ref, "errors": self.errors}


@dataclass
class SyncReport:
    source: str
    entity: str = ""
    key: str = ""
    pulled: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    missing: int = 0
    failed: list[RowFailure] = field(default_factory=list)
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        verb = "would create" if self.dry_run else "created"
        return (
            f"{self.source} -> {self.entity}: {self.pulled} pulled, {verb} {self.created}, "
            f"updated {self.updated}, unchanged {self.unchanged}, failed {len(self.failed)}, "
            f"not in the source {self.missing}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "entity": self.entity,
            "key": self.key,
            "pulled": self.pulled,
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "missing": self.missing,
            "failed": [f.as_dict() for f in self.failed],
            "dryRun": self.dry_run,
        }


def merge(target: Any, patch: Any) -> Any:
    """JSON merge patch without deletions (a source that omits a field leaves ours alone)."""
    if not isinstance(patch, Mapping) or not isinstance(target, Mapping):
        return patch
    out = dict(target)
    for key, value in patch.items():
        out[key] = merge(out.get(key), value)
    return out


def sources(registry: Any) -> list[str]:
    """Every source name the installed plugins can pull."""
    names: set[str] = set()
    for found in registry.pm.hook.register_sync_sources(registry=registry):
        names.update(found or [])
    return sorted(names)


def _existing(service: Any, key: str, values: list[Any]) -> dict[Any, tuple[str, int, dict]]:
    """Stored live records by key value: (id, version, data fields). The key may be a private
    field with a blind index."""
    table = service.table
    column = table.c[service.codec.blind.get(key, key)]
    keys = service.lookup_keys(key, values)
    out: dict[Any, tuple[str, int, dict[str, Any]]] = {}
    with service.db.engine.connect() as conn:
        wanted = list(keys)
        for i in range(0, len(wanted), CHUNK):
            stmt = sa.select(table).where(
                column.in_(wanted[i : i + CHUNK]), table.c._deleted_at.is_(None)
            )
            for row in conn.execute(stmt).mappings():
                data = service.codec.data(row)
                out[data[key]] = (row["id"], row["_version"], data)
    return out


def _live_count(service: Any) -> int:
    table = service.table
    with service.db.engine.connect() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count()).select_from(table).where(table.c._deleted_at.is_(None))
            ).scalar_one()
        )


def _errors_of(exc: RegistryError) -> list[dict[str, Any]]:
    if exc.errors:
        return list(exc.errors)
    return [{"pointer": "", "message": exc.detail, "keyword": exc.slug}]


def run(registry: Any, source: str, *, dry_run: bool = False) -> SyncReport:
    """Pull `source` and upsert its records; raises `SyncError` when it cannot run."""
    report = SyncReport(source=source, dry_run=dry_run)
    try:
        pulled = registry.pm.hook.pull_master_data(source=source, registry=registry)
    except SyncError:
        raise
    except Exception as exc:
        raise SyncError(f"{source}: {exc}") from None
    if pulled is None:
        known = ", ".join(sources(registry)) or "none are configured"
        raise SyncError(f"no plugin serves the source {source!r} (sources: {known})")
    entity, key = pulled.get("entity"), pulled.get("key")
    if entity not in registry.services:
        raise SyncError(f"{source}: the entity {entity!r} is not served by this registry")
    service = registry.services[entity]
    if key not in service.entity.json_schema.get("properties", {}):
        raise SyncError(f"{source}: {entity} has no field {key!r} to use as the natural key")
    report.entity, report.key = entity, key
    try:
        records = list(pulled.get("records") or [])
    except Exception as exc:  # a generator that pages through the source
        raise SyncError(f"{source}: {exc}") from None
    report.pulled = len(records)
    upsert(registry, service, key, records, report, actor=ACTOR_PREFIX + source)
    return report


def upsert(
    registry: Any,
    service: Any,
    key: str,
    records: Iterable[Mapping[str, Any]],
    report: SyncReport,
    *,
    actor: str,
) -> None:
    """Create or merge each record by `key`; per-row failures go into `report.failed`."""
    rows = list(records)
    seen: dict[Any, int] = {}
    todo: list[tuple[int, str, dict[str, Any]]] = []
    for n, raw in enumerate(rows, start=1):
        record = {k: v for k, v in raw.items() if not k.startswith("_")}
        ref = str(raw.get("_source") or record.get(key) or f"row {n}")
        if raw.get("_error"):
            report.failed.append(
                RowFailure(n, ref, [{"pointer": "", "message": raw["_error"], "keyword": "source"}])
            )
            continue
        value = record.get(key)
        if value in (None, ""):
            report.failed.append(
                RowFailure(
                    n,
                    ref,
                    [{"pointer": f"/{key}", "message": f"no value for {key}", "keyword": "key"}],
                )
            )
            continue
        if value in seen:
            message = f"{key} {value!r} is also in row {seen[value]} of the source"
            report.failed.append(
                RowFailure(n, ref, [{"pointer": f"/{key}", "message": message, "keyword": "key"}])
            )
            continue
        seen[value] = n
        todo.append((n, ref, record))
    stored = _existing(service, key, list(seen))
    report.missing = max(0, _live_count(service) - len(stored))
    for n, ref, record in todo:
        current = stored.get(record[key])
        try:
            body = record if current is None else merge(current[2], record)
            errors = service.check_body(body)
            if errors:
                raise Invalid(
                    f"{len(errors)} field(s) failed validation",
                    errors=[e.as_dict() for e in errors],
                )
            if current is None:
                if not report.dry_run:
                    service.create(body, actor=actor)
                report.created += 1
                continue
            if service.codec.normalised(body) == current[2]:
                report.unchanged += 1
                continue
            if not report.dry_run:
                service.update(current[0], body, actor=actor, if_match=current[1])
            report.updated += 1
        except RegistryError as exc:
            report.failed.append(RowFailure(n, ref, _errors_of(exc)))
