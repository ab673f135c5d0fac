"""Data key rotation: a new current key, then every stored private value re-encrypted with it.

`rotate` writes the new key into the key file first (the old keys stay, so every value stays
readable: running servers notice the changed file and load it), waits for them to do so, then
re-encrypts entity by entity in batches of rows, each batch one transaction. Values written
before encryption existed (plain text in a private column) are encrypted by the same pass, and
missing blind indexes filled in. Keys no stored value uses any more are removed at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa

from open_registry.core import storage
from open_registry.core.audit import chain as audit
from open_registry.core.codec import json_value
from open_registry.core.crypto import PREFIX, DataKeyError, key_id_of, write_key_file
from open_registry.core.query import escape_like
from open_registry.core.records import EntityService

#: (entity, rows done, rows to do)
Progress = Callable[[str, int, int], None]
PLAINTEXT = "(not encrypted)"


def key_usage(services: Mapping[str, EntityService]) -> dict[str, dict[str, dict[str, int]]]:
    """entity -> private field -> key id (or `PLAINTEXT`) -> number of stored values."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for name, svc in services.items():
        if not svc.codec.private:
            continue
        kids = sorted(svc.db.keyring().keys.keys)
        table = svc.table
        per_field: dict[str, dict[str, int]] = {}
        with storage.read(svc.db.engine) as conn:
            for f in sorted(svc.codec.private):
                col = table.c[f]
                counts = [
                    sa.func.count().filter(col.like(f"{PREFIX}:{escape_like(k)}:%", escape="\\"))
                    for k in kids
                ]
                ours = sa.func.count().filter(col.like(f"{PREFIX}:%"))
                row = conn.execute(sa.select(sa.func.count(col), ours, *counts)).one()
                usage = {k: int(n) for k, n in zip(kids, row[2:], strict=True) if n}
                if row[1] - sum(usage.values()):
                    usage["(unknown key)"] = int(row[1] - sum(usage.values()))
                if row[0] - row[1]:
                    usage[PLAINTEXT] = int(row[0] - row[1])
                per_field[f] = usage
        out[name] = per_field
    return out


def _legacy(kind: str, stored: Any) -> Any:
    """The JSON value of a private column written before encryption (the column's old type,
    now read as text)."""
    if kind == "integer":
        return int(stored)
    if kind == "number":
        return float(stored)
    if kind == "boolean":
        return str(stored).strip().lower() in ("1", "true", "t")
    if kind == "json":
        return orjson.loads(stored) if isinstance(stored, str | bytes) else stored
    return json_value(kind, str(stored))


def reencrypt(
    svc: EntityService, *, batch_size: int = 1000, progress: Progress | None = None
) -> int:
    """Re-encrypt with the current key every value of one entity under another key (or none),
    filling in missing blind indexes; returns the number of rows rewritten."""
    codec, table, keyring = svc.codec, svc.table, svc.db.keyring()
    cipher = codec.cipher
    assert cipher is not None
    fields = sorted(codec.private)
    current = keyring.current
    prefix = f"{PREFIX}:{escape_like(current)}:%"
    stale = [
        sa.and_(table.c[f].is_not(None), sa.not_(table.c[f].like(prefix, escape="\\")))
        for f in fields
    ]
    stale += [
        sa.and_(table.c[f].is_not(None), table.c[col].is_(None)) for f, col in codec.blind.items()
    ]
    needs = sa.or_(*stale)
    engine = svc.db.engine
    with storage.read(engine) as conn:
        total = conn.execute(
            sa.select(sa.func.count()).select_from(table).where(needs)
        ).scalar_one()
    targets = [*fields, *codec.blind.values()]
    update = (
        table.update()
        .where(table.c.id == sa.bindparam("b_id"))
        .values({c: sa.bindparam(f"v_{c}") for c in targets})
    )
    done, last = 0, ""
    if progress:
        progress(svc.entity.name, 0, total)
    while True:
        with storage.write(engine) as conn:
            stmt = sa.select(table.c.id, *(table.c[f] for f in fields)).where(
                needs, table.c.id > last
            )
            stmt = stmt.order_by(table.c.id).limit(batch_size)
            if svc.db.dialect == "postgresql":
                stmt = stmt.with_for_update()
            rows = conn.execute(stmt).mappings().all()
            if not rows:
                break
            params = []
            for row in rows:
                rid = row["id"]
                p: dict[str, Any] = {"b_id": rid}
                for f in fields:
                    stored = row[f]
                    if stored is None:
                        p[f"v_{f}"] = None
                        if f in codec.blind:
                            p[f"v_{codec.blind[f]}"] = None
                        continue
                    kind = codec.kinds[f]
                    if key_id_of(stored) is None:
                        value = _legacy(kind, stored)
                    else:
                        value = cipher.open(f, rid, stored)
                    p[f"v_{f}"] = cipher.seal(f, rid, value)
                    if f in codec.blind:
                        p[f"v_{codec.blind[f]}"] = codec.blind_value(f, value)
                params.append(p)
            conn.execute(update, params)
        done += len(rows)
        last = rows[-1]["id"]
        if progress:
            progress(svc.entity.name, done, max(total, done))
    return done


@dataclass
class Rotation:
    """What `rotate` did."""

    new_key: str | None
    rewritten: dict[str, int] = field(default_factory=dict)  # entity -> rows
    retired: list[str] = field(default_factory=list)  # key ids removed from the key file
    still_used: dict[str, int] = field(default_factory=dict)  # old key id -> values left


def rotate(
    services: Mapping[str, EntityService],
    *,
    new_key: bool = True,
    keep_old: bool = False,
    batch_size: int = 1000,
    grace_seconds: float = 3.0,
    progress: Progress | None = None,
    actor: str | None = None,
) -> Rotation:
    """Make a new current data key (unless `new_key` is off), re-encrypt every stored private
    value with the current key, then remove the keys nothing uses any more (unless `keep_old`)."""
    private = {n: s for n, s in services.items() if s.codec.private}
    if not private:
        return Rotation(None)
    first = next(iter(private.values()))
    keyring = first.db.keyring()
    if new_key:
        if keyring.path is None:
            raise DataKeyError(
                "the data keys come from REGISTRY_DATA_KEYS, so a new key cannot be written; "
                "put a new current key there, restart, and run with --no-new-key"
            )
        keys = keyring.keys.with_new_current()
        write_key_file(keyring.path, keys, replace=True)
        keyring.reload()
        time.sleep(grace_seconds)  # other processes look at the file every second or so
    report = Rotation(keyring.current if new_key else None)
    for _ in range(3):  # a server that wrote with the old key meanwhile leaves a few behind
        for name, svc in private.items():
            n = reencrypt(svc, batch_size=batch_size, progress=progress)
            report.rewritten[name] = report.rewritten.get(name, 0) + n
        usage = key_usage(private)
        current = keyring.current
        left: dict[str, int] = {}
        for fields in usage.values():
            for counts in fields.values():
                for kid, n in counts.items():
                    if kid != current:
                        left[kid] = left.get(kid, 0) + n
        if not left:
            break
    report.still_used = left
    old = set(keyring.keys.keys) - {keyring.current} - set(left)
    if old and not keep_old and keyring.path is not None:
        write_key_file(keyring.path, keyring.keys.without(old), replace=True)
        keyring.reload()
        report.retired = sorted(old)
    audit.record_event(
        first.db.engine,
        "data-key.rotate",
        actor=actor,
        details={
            "current": keyring.current,
            "rewritten": report.rewritten,
            "retired": report.retired,
        },
    )
    return report
