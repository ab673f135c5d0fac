"""The record service: every write is one transaction of validate -> check references -> the
plugins' checks -> write rows -> audit entries and outbox events (`write_batch`, then
`registry.writes`). Used by the REST API, the pages, the CLI, imports and plugins.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from open_registry.core import storage, writes
from open_registry.core.codec import Codec, RowLike, new_id, utcnow
from open_registry.core.crypto import FieldCipher
from open_registry.core.errors import Conflict, Invalid, NotFound, PreconditionFailed
from open_registry.core.events import Change, changes
from open_registry.core.query import (
    Scope,
    Search,
    SearchParser,
    SqlBuilder,
    encode_cursor,
)
from open_registry.core.record_checks import Defaults, pointed_values, redact_errors
from open_registry.core.storage import Database
from open_registry.generators.schema import SYSTEM_FIELDS, EntitySchema, Reference
from open_registry.generators.validators import FieldError, RecordValidator

#: `origin` of writes by the generated API, the pages and imports (plugins pass their name)
API = "api"

#: A caller's rules for a write (see `registry.auth.access`): (stored record or None, the body
#: sent, the record about to be written) -> the record to write; raises to refuse.
Prepare = Callable[[Mapping[str, Any] | None, Mapping[str, Any], dict[str, Any]], dict[str, Any]]


def _out_of_scope(entity: str, record_id: str) -> NotFound:
    """What a record outside the caller's scope looks like: the same as no record at all."""
    return NotFound(f"no {entity} with id {record_id!r}")


@dataclass
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None
    total: int | None = None


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class EntityService:
    """CRUD and search for one entity."""

    def __init__(
        self,
        entity: EntitySchema,
        db: Database,
        services: Mapping[str, EntityService],
        *,
        page_size: int = 50,
        max_page_size: int = 1000,
        formats: Mapping[str, Any] | None = None,
    ):
        self.entity = entity
        self.db = db
        self.services = services  # every entity's service, for reference checks
        self.table = db.tables[entity.name]
        cipher = FieldCipher(db.keyring(), entity.name) if entity.private else None
        self.codec = Codec(entity, cipher)
        self.validator = RecordValidator(entity.json_schema, formats=formats)
        #: the schema's `default`s, applied by `create_many` (never on update)
        self.defaults = Defaults(entity.json_schema)
        self.parser = SearchParser(entity, page_size=page_size, max_page_size=max_page_size)
        self.sql = SqlBuilder(entity, self.table, db.dialect, self.codec)
        # statements built once: building a select costs more than running it on SQLite
        by_id = sa.select(self.table).where(
            self.table.c.id == sa.bindparam("rid"), self.table.c._deleted_at.is_(None)
        )
        self._select_by_id = by_id
        # on PostgreSQL, the reads by id of one round of the event loop are one statement
        by_ids = sa.select(self.table).where(
            self.table.c.id == sa.any_(sa.bindparam("rids")), self.table.c._deleted_at.is_(None)
        )
        batch = storage.ReadBatch(by_ids, param="rid", keys="rids", column="id")
        self._read_by_id = storage.OneRowRead(db.engine, by_id, batch)
        self._lookups: dict[tuple[str, str], sa.Select[Any]] = {}
        #: `reference_errors`' one statement for several references, by the references checked
        self._reference_lookups: dict[tuple[int, ...], Any] = {}
        self._select_for_update = by_id.with_for_update() if db.dialect == "postgresql" else by_id
        of_column = self.codec.field_of_column
        self._unique_by_index = {
            ix.name: [of_column.get(c.name, c.name) for c in ix.columns]
            for ix in self.table.indexes
            if ix.unique
        }
        #: plugins' `before_write` check, set by `open_registry` when a plugin implements it:
        #: (entity, action, new record, old record or None, connection) -> None, raises to refuse
        self.before_write: Callable[..., None] | None = None
        #: whether bulk imports run `before_write` too, row by row (`register_write_checks`)
        self.checks_imports = False
        self._data_columns = [*self.codec.kinds, *self.codec.blind.values()]
        self._update_stmt: sa.Update | None = None

    def lookup_statement(self, field: str, param: str = "values") -> sa.Select[Any]:
        """`SELECT field WHERE field IN (:values)` over live rows, built once per field (for a
        private field, its blind index column: pass the values through `lookup_keys`).
        `param`: another name for the values (statements that hold several lookups)."""
        stmt = self._lookups.get((field, param))
        if stmt is None:
            if field in self.codec.private and field not in self.codec.blind:
                raise Invalid(
                    f"{self.entity.name}.{field} is private and not indexed: it cannot be looked "
                    "up (declare it in x-registry.indexed or unique)"
                )
            col = self.table.c[self.codec.blind.get(field, field)]
            stmt = sa.select(col).where(
                col.in_(sa.bindparam(param, expanding=True)), self.table.c._deleted_at.is_(None)
            )
            self._lookups[(field, param)] = stmt
        return stmt

    def lookup_keys(self, field: str, values: Iterable[Any]) -> dict[Any, Any]:
        """What `lookup_statement(field)` compares -> the value it stands for."""
        if field in self.codec.blind:
            return {self.codec.blind_value(field, v): v for v in values}
        return {v: v for v in values}

    # -- validation ----------------------------------------------------------------------
    def check_body(self, body: Any) -> list[FieldError]:
        """Schema errors plus system fields sent by the client (no mass assignment)."""
        if not isinstance(body, dict):
            return [FieldError("", "the request body must be a JSON object", "type")]
        errors = [
            FieldError(f"/{k}", f"{k!r} is a system field, set by the server", "readOnly")
            for k in body
            if k in SYSTEM_FIELDS
        ]
        if errors:
            body = {k: v for k, v in body.items() if k not in SYSTEM_FIELDS}
        errors.extend(self.validator.errors(body))
        return self.redact(errors) if self.codec.private else errors

    def redact(self, errors: list[FieldError]) -> list[FieldError]:
        """Errors about private fields without the value (validator messages quote it)."""
        return redact_errors(self.codec.private, errors)

    def check_references(self, conn: Connection, record: Mapping[str, Any]) -> list[FieldError]:
        """Errors for references in `record` that name no live record."""
        found = [
            [(0, ptr, v) for ptr, v in pointed_values(record, ref.path)]
            for ref in self.entity.references
        ]
        return self.reference_errors(conn, found).get(0, [])

    def reference_errors(
        self, conn: Connection, found: Sequence[Sequence[tuple[int, str, Any]]]
    ) -> dict[int, list[FieldError]]:
        """Reference checks of a batch: `found[k]` lists (position in the batch, pointer, value)
        of the entity's k-th reference; one statement for all of a record's references
        (`_missing_at_once`), else one query per reference for the whole batch. Returns the
        errors by position (a private value is never quoted)."""
        errors: dict[int, list[FieldError]] = {}
        values = [{v for _, _, v in refs} for refs in found]
        absent = self._missing_at_once(conn, values)
        for k, (ref, refs) in enumerate(zip(self.entity.references, found, strict=True)):
            if not refs:
                continue
            missing = absent[k] if absent is not None else None
            if missing is None:
                missing = missing_references(conn, ref, values[k], self.services)
            secret = self.services[ref.entity].codec.private
            hide = ref.field in secret or ref.path.split(".")[0] in self.codec.private
            for pos, ptr, value in refs:
                if value in missing:
                    shown = "this value" if hide else repr(value)
                    errors.setdefault(pos, []).append(
                        FieldError(ptr, f"no {ref.entity} with {ref.field} {shown}", "reference")
                    )
        return errors

    def _missing_at_once(
        self, conn: Connection, values: Sequence[set[Any]]
    ) -> list[set[Any] | None] | None:
        """For a few references of a write (a record's own: a value or a few each), the values
        that name no live record, by reference, from ONE statement (`UNION ALL` of each
        reference's lookup) instead of one per reference. None where that does not apply: one
        reference only, more than 500 values for one, or a value or looked-up column that is not
        text (a union's columns must have one type); `reference_errors` then asks each."""
        checked = tuple(k for k, v in enumerate(values) if v)
        if len(checked) < 2 or any(len(values[k]) > 500 for k in checked):
            return None
        keys: dict[int, dict[Any, Any]] = {}
        for k in checked:
            if not all(isinstance(v, str) for v in values[k]):
                return None
            ref = self.entity.references[k]
            keys[k] = self.services[ref.entity].lookup_keys(ref.field, values[k])
        stmt = self._reference_lookups.get(checked)
        if stmt is False:  # a looked-up column that is not text
            return None
        if stmt is None:
            parts = []
            for k in checked:
                ref = self.entity.references[k]
                lookup = self.services[ref.entity].lookup_statement(ref.field, f"v{k}")
                if not isinstance(lookup.selected_columns[0].type, sa.String):
                    self._reference_lookups[checked] = False
                    return None
                parts.append(lookup.add_columns(sa.literal(k, sa.Integer).label("k")))
            stmt = self._reference_lookups[checked] = sa.union_all(*parts)
        found: dict[int, set[Any]] = {k: set() for k in checked}
        params = {f"v{k}": list(keys[k]) for k in checked}
        for v, k in conn.execute(stmt, params):
            found[k].add(keys[k].get(v, v))
        return [values[k] - found[k] if k in found else None for k in range(len(values))]

    def taken(
        self,
        conn: Connection,
        group: tuple[str, ...],
        keys: Mapping[int, tuple[Any, ...]],
        own: Mapping[int, str] | None = None,
    ) -> dict[int, list[FieldError]]:
        """Unique checks of a batch: the positions whose key for the unique `group` (values as
        stored: blind indexes for private fields) is held by another live record than `own`."""
        cols = [self.table.c[self.codec.blind.get(f, f)] for f in group]
        values = list({k for k in keys.values() if all(v is not None for v in k)})
        holders: dict[tuple[Any, ...], str] = {}
        for i in range(0, len(values), 500):
            part = values[i : i + 500]
            cond = (
                cols[0].in_([v[0] for v in part]) if len(cols) == 1 else sa.tuple_(*cols).in_(part)
            )
            stmt = sa.select(self.table.c.id, *cols).where(cond, self.table.c._deleted_at.is_(None))
            for row in conn.execute(stmt):
                holders[tuple(row[1:])] = row[0]
        name = self.entity.name
        bad: dict[int, list[FieldError]] = {}
        for pos, key in keys.items():
            holder = holders.get(key)
            if holder is not None and (own is None or own.get(pos) != holder):
                bad[pos] = [
                    FieldError(f"/{f}", f"already used by another {name}", "unique") for f in group
                ]
        return bad

    def taken_ids(self, conn: Connection, ids: Mapping[int, str]) -> dict[int, list[FieldError]]:
        """The positions whose id a stored record (live or deleted) already has."""
        found: set[str] = set()
        values = list(set(ids.values()))
        for i in range(0, len(values), 500):
            stmt = sa.select(self.table.c.id).where(self.table.c.id.in_(values[i : i + 500]))
            found.update(r[0] for r in conn.execute(stmt))
        name = self.entity.name
        return {
            pos: [FieldError("/id", f"a {name} with this id already exists", "unique")]
            for pos, rid in ids.items()
            if rid in found
        }

    def _raise_invalid(self, errors: list[FieldError]) -> None:
        if errors:
            n = len(errors)
            raise Invalid(
                f"{n} field{'s' if n != 1 else ''} failed validation",
                errors=[e.as_dict() for e in errors],
            )

    # -- writes ------------------------------------------------------------------------------
    def _new_row(
        self, body: Mapping[str, Any], actor: str | None, record_id: str | None, now: Any
    ) -> dict[str, Any]:
        rid = record_id or new_id()
        row = self.codec.to_row(body, rid)
        row.update(
            id=rid,
            _version=1,
            _created_at=now,
            _updated_at=now,
            _created_by=actor,
            _updated_by=actor,
            _deleted_at=None,
        )
        return row

    def create(
        self,
        body: Any,
        *,
        actor: str | None,
        record_id: str | None = None,
        prepare: Prepare | None = None,
        origin: str = API,
    ) -> dict[str, Any]:
        """Insert a new record; returns it as stored. `prepare`: the caller's write rules."""
        return self.create_many(
            [(record_id, body)], actor=actor, pointer_prefix=False, prepare=prepare, origin=origin
        )[0]

    def create_many(
        self,
        items: list[tuple[str | None, Any]],
        *,
        actor: str | None,
        pointer_prefix: bool = True,
        prepare: Prepare | None = None,
        origin: str = API,
    ) -> list[dict[str, Any]]:
        """Insert many records in one transaction, all or none (ids may be given, e.g. demo data).

        Error pointers start with the item's index (`/3/name`) unless `pointer_prefix` is off.
        `origin`: who writes, for the plugins' checks (`API`, or a plugin's name). Absent
        properties get the schema's `default`s first (`Defaults`); `prepare` still sees the body
        as sent, so a default is never taken for something the caller wrote.
        """

        def prefixed(i: int, errors: list[FieldError]) -> list[FieldError]:
            if not pointer_prefix:
                return errors
            return [FieldError(f"/{i}{e.pointer}", e.message, e.keyword) for e in errors]

        sent = items
        if self.defaults:
            items = [(rid, self.defaults.apply(body)) for rid, body in items]
        errors: list[FieldError] = []
        for i, (_, body) in enumerate(items):
            errors.extend(prefixed(i, self.check_body(body)))
        self._raise_invalid(errors)
        if prepare is not None:
            items = [
                (rid, prepare(None, body, dict(filled)))
                for (rid, body), (_, filled) in zip(sent, items, strict=True)
            ]
        creates = [(rid or new_id(), body) for rid, body in items]
        with storage.write(self.db.engine) as conn:
            found = [
                [
                    (i, ptr, v)
                    for i, (_, body) in enumerate(creates)
                    for ptr, v in pointed_values(body, ref.path)
                ]
                for ref in self.entity.references
            ]
            bad = self.reference_errors(conn, found)
            for i in sorted(bad):
                errors.extend(prefixed(i, bad[i]))
            self._raise_invalid(errors)
            rows = self.write_batch(conn, creates=creates, actor=actor, at=utcnow(), origin=origin)
        return [self.codec.to_record(r) for r in rows]

    def write_batch(
        self,
        conn: Connection,
        *,
        creates: Sequence[tuple[str, Mapping[str, Any]]] = (),
        updates: Sequence[tuple[RowLike, Mapping[str, Any], Sequence[str]]] = (),
        actor: str | None,
        at: datetime,
        origin: str = API,
        checks: bool = True,
    ) -> list[dict[str, Any]]:
        """The write step every record write ends in, in the caller's transaction: the plugins'
        `before_write` on each record, then the rows (`creates`: (new id, record); `updates`:
        (stored row, new record, changed field names), each checked against the stored
        version), then the batch's audit entries and outbox events (`registry.writes.record`).

        The records must already be valid with their references checked (`check_body`,
        `reference_errors`); `checks` off skips `before_write` (imports of entities no plugin
        names in `register_write_checks`). Returns the rows as stored, creates first."""
        check = self.before_write if checks else None
        if check is not None:
            name = self.entity.name
            for rid, body in creates:
                check(name, "create", {**body, "id": rid}, None, conn, actor=actor, origin=origin)
            for current, body, _ in updates:
                previous = self.codec.to_record(current)
                record = {**body, "id": current["id"]}
                check(name, "update", record, previous, conn, actor=actor, origin=origin)
        rows = [self._new_row(body, actor, rid, at) for rid, body in creates]
        if rows:
            self._insert(conn, rows)
        stored = rows + self._update_rows(conn, updates, actor, at)
        log = changes(
            self.entity.name,
            "create",
            [(r["id"], 1, sorted(b)) for r, (_, b) in zip(rows, creates, strict=True)],
            actor,
            at,
        )
        log += changes(
            self.entity.name,
            "update",
            [(c["id"], c["_version"] + 1, list(f)) for c, _, f in updates],
            actor,
            at,
        )
        writes.record(conn, log)
        return stored

    def bulk_writer(self) -> writes.BulkWriter:
        """The bulk strategy of `write_batch` for ready rows (imports): COPY or executemany."""
        return writes.BulkWriter(
            self.db.engine.dialect, self.table, [c.name for c in self.table.columns]
        )

    def _insert(self, conn: Connection, row: dict[str, Any] | list[dict[str, Any]]) -> None:
        try:
            conn.execute(self.table.insert(), row)
        except IntegrityError as exc:
            raise self._conflict(exc) from None

    def _update_statement(self) -> sa.Update:
        if self._update_stmt is None:
            data = self._data_columns
            self._update_stmt = (
                self.table.update()
                .where(
                    self.table.c.id == sa.bindparam("b_id"),
                    self.table.c._version == sa.bindparam("b_version"),
                )
                .values(
                    {c: sa.bindparam(f"v_{c}") for c in data}
                    | {
                        "_version": sa.bindparam("v__version"),
                        "_updated_at": sa.bindparam("v__updated_at"),
                        "_updated_by": sa.bindparam("v__updated_by"),
                    }
                )
            )
        return self._update_stmt

    def _update_rows(
        self,
        conn: Connection,
        updates: Sequence[tuple[RowLike, Mapping[str, Any], Sequence[str]]],
        actor: str | None,
        at: datetime,
    ) -> list[dict[str, Any]]:
        """Replace each stored row with its new record, version + 1, if it is still the version
        read (else `PreconditionFailed`)."""
        if not updates:
            return []
        stmt = self._update_statement()
        params, stored = [], []
        for current, body, _ in updates:
            values = self.codec.to_row(body, current["id"])
            p = {f"v_{c}": values.get(c) for c in self._data_columns}
            version = current["_version"] + 1
            p.update(b_id=current["id"], b_version=current["_version"], v__version=version,
                     v__updated_at=at, v__updated_by=actor)  # fmt: skip
            params.append(p)
            row = dict(current)
            row.update({c: p[f"v_{c}"] for c in self._data_columns})
            row.update(_version=version, _updated_at=at, _updated_by=actor)
            stored.append(row)
        try:
            result = conn.execute(stmt, params)
        except IntegrityError as exc:
            raise self._conflict(exc) from None
        if (
            len(params) == 1 or conn.dialect.supports_sane_multi_rowcount
        ) and result.rowcount != len(params):
            raise PreconditionFailed(
                f"the {self.entity.name} was changed meanwhile; reload it and retry"
            )
        return stored

    def _conflict(self, exc: IntegrityError) -> Conflict:
        fields = self._unique_fields(exc)
        if fields:
            label = ", ".join(fields)
            return Conflict(
                f"another {self.entity.name} already has this {label}",
                fields=fields,
                errors=[
                    {
                        "pointer": f"/{f}",
                        "message": f"already used by another {self.entity.name}",
                        "keyword": "unique",
                    }
                    for f in fields
                ],
            )
        if "PRIMARY KEY" in str(exc.orig) or "pkey" in str(exc.orig) or ".id" in str(exc.orig):
            return Conflict(f"a {self.entity.name} with this id already exists", fields=["id"])
        return Conflict(f"the {self.entity.name} conflicts with stored data")

    def _unique_fields(self, exc: IntegrityError) -> list[str]:
        orig = exc.orig
        diag = getattr(orig, "diag", None)
        name = getattr(diag, "constraint_name", None)
        if name and name in self._unique_by_index:
            return self._unique_by_index[name]
        m = re.search(r"UNIQUE constraint failed: (.+)$", str(orig))
        if m:
            cols = [c.strip().split(".", 1)[-1] for c in m.group(1).split(",")]
            of_column = self.codec.field_of_column
            return [of_column.get(c, c) for c in cols if c != "id"]
        return []

    def _current(
        self,
        conn: Connection,
        record_id: str,
        *,
        lock: bool,
        scope: Scope | None = None,
        deleted: bool = False,
    ) -> RowLike:
        """The stored row of a live record (`deleted`: or of a soft-deleted one), in `scope`."""
        if deleted:
            stmt: sa.Select[Any] = sa.select(self.table).where(
                self.table.c.id == sa.bindparam("rid")
            )
            if lock and self.db.dialect == "postgresql":
                stmt = stmt.with_for_update()
        else:
            stmt = self._select_for_update if lock else self._select_by_id
        row = conn.execute(stmt, {"rid": record_id}).mappings().first()
        return self._found(row, record_id, scope)

    def _found(self, row: RowLike | None, record_id: str, scope: Scope | None) -> RowLike:
        """`row`, the stored row of `record_id` when there is one; not found when there is none
        or it is outside `scope`."""
        if row is None:
            raise NotFound(f"no {self.entity.name} with id {record_id!r}")
        if scope is not None and not scope.matches({**self.codec.data(row), "id": row["id"]}):
            raise _out_of_scope(self.entity.name, record_id)
        return row

    def update(
        self,
        record_id: str,
        body: Any,
        *,
        actor: str | None,
        if_match: int | None = None,
        patch: bool = False,
        scope: Scope | None = None,
        prepare: Prepare | None = None,
        origin: str = API,
    ) -> dict[str, Any]:
        """Replace (PUT) or merge-patch (PATCH) a record; `if_match` is the expected version.

        `scope`: the records the caller may change (others are not found); `prepare`: the
        caller's write rules; `origin`: who writes, for the plugins' checks."""
        with storage.write(self.db.engine) as conn:
            current = self._current(conn, record_id, lock=True, scope=scope)
            if if_match is not None and current["_version"] != if_match:
                raise PreconditionFailed(
                    f"the {self.entity.name} was changed meanwhile (now version "
                    f"{current['_version']}, you sent {if_match}); reload it and retry",
                    current_version=current["_version"],
                )
            old = self.codec.data(current)
            if patch:
                if not isinstance(body, dict):
                    raise Invalid(
                        "a merge patch must be a JSON object",
                        errors=[{"pointer": "", "message": "must be an object", "keyword": "type"}],
                    )
                sys_errors = [
                    FieldError(f"/{k}", f"{k!r} is a system field, set by the server", "readOnly")
                    for k in body
                    if k in SYSTEM_FIELDS
                ]
                self._raise_invalid(sys_errors)
                new = merge_patch(old, body)
            else:
                new = body
            if prepare is not None and isinstance(new, dict):
                new = prepare({**old, "id": record_id}, body, dict(new))
            self._raise_invalid(self.check_body(new))
            changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            if not changed:
                return self.codec.to_record(current)
            self._raise_invalid(self.check_references(conn, new))
            (row,) = self.write_batch(
                conn, updates=[(current, new, changed)], actor=actor, at=utcnow(), origin=origin
            )
        return self.codec.to_record(row)

    def delete(
        self,
        record_id: str,
        *,
        actor: str | None,
        if_match: int | None = None,
        purge: bool = False,
        scope: Scope | None = None,
    ) -> None:
        """Soft-delete a live record, or with `purge` remove a record's row for good, live or
        soft-deleted (`scope`: the records the caller may). Either is an audit entry (`delete`,
        `purge`) on the chain and an outbox event (`deleted`, `purged`)."""
        with storage.write(self.db.engine) as conn:
            current = self._current(conn, record_id, lock=True, scope=scope, deleted=purge)
            if if_match is not None and current["_version"] != if_match:
                raise PreconditionFailed(
                    f"the {self.entity.name} was changed meanwhile (now version "
                    f"{current['_version']}, you sent {if_match})",
                    current_version=current["_version"],
                )
            now = utcnow()
            version = current["_version"] + 1
            if purge:
                conn.execute(self.table.delete().where(self.table.c.id == record_id))
                action = "purge"
            else:
                conn.execute(
                    self.table.update()
                    .where(self.table.c.id == record_id)
                    .values(_deleted_at=now, _version=version, _updated_at=now, _updated_by=actor)
                )
                action = "delete"
            change = Change(self.entity.name, action, record_id, version, [], actor, now)
            writes.record(conn, [change])

    # -- reads -------------------------------------------------------------------------------
    def get(self, record_id: str, *, scope: Scope | None = None) -> dict[str, Any]:
        """One live record; outside `scope` (when given) it is not found."""
        row = self._found(self._read_by_id.read_one({"rid": record_id}), record_id, scope)
        return self.codec.to_record(row)

    async def get_async(self, record_id: str, *, scope: Scope | None = None) -> dict[str, Any]:
        """`get` for a caller in the event loop (`storage.OneRowRead.read_one_async`)."""
        found = await self._read_by_id.read_one_async({"rid": record_id})
        return self.codec.to_record(self._found(found, record_id, scope))

    def search(self, search: Search, *, scope: Scope | None = None) -> Page:
        """A page of live records matching `search`, only those in `scope` when given."""
        keys = self.sql.order(search)
        with storage.read(self.db.engine) as conn:
            rows = conn.execute(self.sql.select(search, scope)).mappings().all()
            total = (
                conn.execute(self.sql.count(search, scope)).scalar_one() if search.count else None
            )
        more = len(rows) > search.limit
        rows = rows[: search.limit]
        cursor = encode_cursor(keys, rows[-1], self.sql) if more and rows else None
        return Page(items=[self.codec.to_record(r) for r in rows], next_cursor=cursor, total=total)


def missing_references(
    conn: Connection, ref: Reference, values: set[Any], services: Mapping[str, EntityService]
) -> set[Any]:
    """The values that name no live record of the referenced entity."""
    target = services[ref.entity]
    stmt = target.lookup_statement(ref.field)
    keys = target.lookup_keys(ref.field, [v for v in values if isinstance(v, str | int)])
    found: set[Any] = set()
    vals = list(keys)
    for i in range(0, len(vals), 500):
        chunk = vals[i : i + 500]
        found.update(keys[r[0]] for r in conn.execute(stmt, {"values": chunk}))
    return values - found


def build_services(
    db: Database,
    entities: Iterable[EntitySchema],
    *,
    page_size: int = 50,
    max_page_size: int = 1000,
    formats: Mapping[str, Any] | None = None,
) -> dict[str, EntityService]:
    """One service per entity, sharing one map so each can check references to the others."""
    services: dict[str, EntityService] = {}
    for e in entities:
        services[e.name] = EntityService(
            e, db, services, page_size=page_size, max_page_size=max_page_size, formats=formats
        )
    return services
