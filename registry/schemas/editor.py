"""The schema editor: change an entity's schema while the registry runs, as safely as a file.

A change is a whole schema document for one entity. It is

1. checked like a schema file (`parse_entity_schema`, then `check_schema_set` with every other
   entity): each problem is a JSON pointer and a reason;
2. planned against the database with `registry.migrations.plan`, the plan `registry migrate`
   shows, with the data each risky change would break;
3. applied only when confirmed, and refused when destructive (as `registry migrate` refuses
   without `--allow-destructive`), when revisions are pending, or when the schema was saved
   meanwhile (the `base` the change started from is stale).

Applying writes and runs the Alembic revision, saves the document as
`<data_dir>/ui-schemas/<entity>.json` (loaded after every other schema folder, so it is what
every later start serves), records the version in `registry_schema_version`, and reloads the
registry's schemas: this process serves the new shape at once, other processes from their next
start.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from open_registry.core import migrations
from open_registry.core.audit import chain as audit
from open_registry.core.errors import Conflict, Invalid, NotFound
from open_registry.core.migrations import Change, Plan
from open_registry.core.schemas.history import UI_ORIGIN, NewVersion, SchemaHistory, SchemaVersion
from open_registry.core.schemas.loading import SchemaSet, edited_schema_dir, with_entity
from open_registry.generators.errors import SchemaError, SchemaIssue
from open_registry.generators.schema import (
    DEFAULT_PRIVATE_ACCESS,
    DRAFT_2020_12,
    EntitySchema,
    parse_entity_schema,
)

log = logging.getLogger("registry")

#: entity names the web UI uses for its own pages (`/ui/schemas`, `/ui/schemas/new`, ...)
RESERVED_NAMES = ("schemas", "static", "lang", "new")
NEW_BASE = "new"


class SchemaRejected(Invalid):
    """The document is not a valid entity schema; `errors` gives each pointer and reason."""


class EditConflict(Conflict):
    """The schema was saved after the change started (`latest`), or by another process."""

    def __init__(self, detail: str, *, latest: SchemaVersion | None, other_process: bool = False):
        super().__init__(detail)
        self.latest = latest
        self.other_process = other_process


class MigrationRefused(Conflict):
    """The change needs a destructive migration, or the database is not ready for one."""

    title = "Migration refused"

    def __init__(self, detail: str, *, preview: Preview):
        super().__init__(detail)
        self.preview = preview


def rejected(issues: Sequence[SchemaIssue]) -> SchemaRejected:
    n = len(issues)
    return SchemaRejected(
        f"{n} problem{'s' if n != 1 else ''} in the schema",
        errors=[{"pointer": i.pointer, "message": i.message, "keyword": "schema"} for i in issues],
    )


def pretty(doc: Any) -> str:
    """A schema document as the editor shows and saves it."""
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def digest(doc: Any) -> str:
    raw = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def parse_json(text: str) -> dict[str, Any]:
    """The document typed in the JSON editor, or `SchemaRejected` naming line and column."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise rejected([SchemaIssue("", "", f"not valid JSON: {where}: {exc.msg}")]) from None
    if not isinstance(doc, dict):
        raise rejected([SchemaIssue("", "", "a schema must be a JSON object")])
    return doc


def _groups(groups: Sequence[Sequence[str]]) -> list[Any]:
    return [g[0] if len(g) == 1 else list(g) for g in groups]


def native_document(entity: EntitySchema) -> dict[str, Any]:
    """A self-contained JSON Schema 2020-12 document equivalent to `entity` (for files in the
    opensaber format or with `$ref` to other files)."""
    doc: dict[str, Any] = {"$schema": DRAFT_2020_12}
    doc.update({k: v for k, v in entity.json_schema.items() if k != "$schema"})
    xreg: dict[str, Any] = {}
    if entity.indexes:
        xreg["indexed"] = _groups(entity.indexes)
    if entity.uniques:
        xreg["unique"] = _groups(entity.uniques)
    if entity.references:
        xreg["references"] = {
            r.path: r.entity if r.field == "id" else {"entity": r.entity, "field": r.field}
            for r in entity.references
        }
    for key in ("private", "internal"):
        if getattr(entity, key):
            xreg[key] = list(getattr(entity, key))
    if entity.access:
        xreg["access"] = {op: list(roles) for op, roles in entity.access.items()}
    if tuple(entity.private_access) != DEFAULT_PRIVATE_ACCESS:
        xreg["privateAccess"] = list(entity.private_access)
    if entity.owner:
        xreg["owner"] = entity.owner if isinstance(entity.owner, str) else dict(entity.owner)
    if entity.display:
        xreg["display"] = entity.display
    if entity.i18n:
        xreg["i18n"] = dict(entity.i18n)
    if xreg:
        doc["x-registry"] = xreg
    return doc


def editable_document(entity: EntitySchema) -> dict[str, Any]:
    """The document the editor starts from: the entity's own file when it is a native schema
    that stands alone, else `native_document` (so what is saved never depends on other files)."""
    path = Path(entity.source)
    if entity.origin == "native" and path.is_file():
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            parse_entity_schema(doc, name=entity.name, source=entity.source)
            return doc
        except (OSError, ValueError, SchemaError):
            pass  # unreadable now, or `$ref` to a sibling file: use the parsed model
    return native_document(entity)


def _mtime(source: str) -> datetime | None:
    try:
        return datetime.fromtimestamp(Path(source).stat().st_mtime, UTC)
    except OSError:
        return None


@dataclass
class Preview:
    """What confirming a change would do: the plan, and why it cannot be applied (if so)."""

    entity: str
    new: bool
    document: dict[str, Any]
    before: dict[str, Any] | None
    schemas: SchemaSet
    base: str
    plan: Plan | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def destructive(self) -> list[Change]:
        return self.plan.destructive if self.plan else []

    @property
    def refused(self) -> bool:
        return bool(self.problems or self.destructive)

    @property
    def changes(self) -> list[Change]:
        return self.plan.changes if self.plan else []

    def diff(self) -> str:
        """The change as a unified diff of the pretty-printed documents."""
        old = pretty(self.before).splitlines(keepends=True) if self.before is not None else []
        new = pretty(self.document).splitlines(keepends=True)
        name = f"{self.entity}.json"
        return "".join(difflib.unified_diff(old, new, f"a/{name}", f"b/{name}"))


class SchemaEditor:
    """Check, preview and apply schema changes of one registry (one change at a time)."""

    def __init__(self, registry: Any):
        self.registry = registry
        self._lock = threading.Lock()

    @property
    def history(self) -> SchemaHistory:
        return SchemaHistory(self.registry.db)

    @property
    def folder(self) -> Path:
        return edited_schema_dir(self.registry.settings.data_dir)

    def entity(self, name: str) -> EntitySchema:
        found = self.registry.schemas.entities.get(name)
        if found is None:
            raise NotFound(f"no entity {name!r}")
        return found

    def document(self, name: str) -> dict[str, Any]:
        return editable_document(self.entity(name))

    def base(self, name: str) -> str:
        """Token of the schema a change starts from: newest stored version and the document."""
        latest = self.history.latest(name)
        return f"{latest.version if latest else 0}:{digest(self.document(name))}"

    # -- checking ---------------------------------------------------------------------------
    def check(self, name: str, doc: Any, *, new: bool) -> tuple[EntitySchema, SchemaSet]:
        """Parse `doc` as the schema of `name` and check it with every other entity."""
        target = str(self.folder / f"{name}.json")
        issues: list[SchemaIssue] = []
        if new and name in self.registry.schemas:
            issues.append(SchemaIssue(target, "", f"an entity named {name!r} exists already"))
        if name.lower() in RESERVED_NAMES:
            issues.append(
                SchemaIssue(target, "", f"{name!r} names pages of the UI itself; choose another")
            )
        if issues:
            raise rejected(issues)
        try:
            entity = parse_entity_schema(doc, name=name, source=target)
            return entity, with_entity(self.registry.schemas, entity)
        except SchemaError as exc:
            raise rejected(exc.issues) from None

    def _check_base(self, name: str, base: str, new: bool) -> None:
        if new:
            return
        current = self.entity(name)
        edited = self.folder / f"{name}.json"
        if edited.is_file() and (current.source != str(edited) or _parsed(edited, name) != current):
            raise EditConflict(
                f"{edited} was written by another process; restart this one to load it",
                latest=self.history.latest(name),
                other_process=True,
            )
        if base != self.base(name):
            latest = self.history.latest(name)
            raise EditConflict(
                f"the schema of {name} was changed after this change started", latest=latest
            )

    def preview(self, name: str, doc: Any, base: str, *, new: bool = False) -> Preview:
        """Check `doc` and plan its migration; raises `SchemaRejected` or `EditConflict`."""
        _, schemas = self.check(name, doc, new=new)
        self._check_base(name, base, new)
        before = None if new else self.document(name)
        preview = Preview(name, new, doc, before, schemas, base)
        settings = self.registry.settings
        try:
            plan = migrations.plan(
                self.registry.database_for(schemas), schemas, settings.migrations_path
            )
        except Exception as exc:  # an unknown revision in the database, an unreachable server
            log.exception("schema editor: cannot plan the migration")
            preview.problems.append(f"the migration cannot be planned: {exc}")
            return preview
        preview.plan = plan
        if plan.pending:
            preview.problems.append(
                f"revisions not applied yet: {', '.join(plan.pending)}; run "
                "`registry migrate apply` and restart first"
            )
        return preview

    # -- applying ---------------------------------------------------------------------------
    def apply(
        self, name: str, doc: Any, base: str, *, new: bool = False, actor: str | None = None
    ) -> int:
        """Apply a confirmed change; returns its version number. Nothing is applied when it
        raises (`SchemaRejected`, `EditConflict`, `MigrationRefused`, or a database error)."""
        with self._lock:
            preview = self.preview(name, doc, base, new=new)
            if preview.refused or preview.plan is None:
                reasons = preview.problems + [str(c) for c in preview.destructive]
                raise MigrationRefused("; ".join(reasons), preview=preview)
            return self._apply(preview, base, actor)

    def _apply(self, preview: Preview, base: str, actor: str | None) -> int:
        name, plan = preview.entity, preview.plan
        assert plan is not None
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.folder / f"{name}.json"
        tmp = self.folder / f".{name}.json.tmp"  # not `*.json`: never loaded half-written
        tmp.write_text(pretty(preview.document), encoding="utf-8")
        versions: list[NewVersion] = []
        expected = 0 if base == NEW_BASE else int(base.split(":", 1)[0])
        current = self.registry.schemas.entities.get(name)
        latest = self.history.latest(name)
        if current is not None and (latest is None or dict(latest.schema) != preview.before):
            # the schema as served until now came from a file: keep it as a version too
            versions.append(
                NewVersion(preview.before or {}, current.source, at=_mtime(current.source))
            )
        versions.append(
            NewVersion(
                preview.document, UI_ORIGIN, actor=actor, changes=[str(c) for c in plan.changes]
            )
        )
        try:
            numbers = self.history.record(name, expected, versions)
        except Conflict:
            tmp.unlink(missing_ok=True)
            raise EditConflict(
                f"the schema of {name} was saved meanwhile", latest=self.history.latest(name)
            ) from None
        revision = None
        try:
            if plan.needs_ddl:
                revision = self._migrate(preview)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            self.history.forget(name, numbers)
            raise
        self.history.set_revision(name, numbers[-1], revision)
        self.registry.reload_schemas(preview.schemas)
        details = {"version": numbers[-1], "revision": revision, "changes": len(plan.changes)}
        audit.record_event(
            self.registry.db.engine, "schema.change", actor=actor, entity=name, details=details
        )
        log.info("schema of %s saved as version %s (revision %s)", name, numbers[-1], revision)
        return numbers[-1]

    def _migrate(self, preview: Preview) -> str | None:
        """Write and run the revision of `preview`; a revision that fails is removed again."""
        db = self.registry.database_for(preview.schemas)
        folder = self.registry.settings.migrations_path
        words = "; ".join(f"{c.action} {c.table}" for c in preview.changes)
        path = migrations.write_revision(db, folder, f"ui {words}"[:60])
        if path is None:
            return None
        try:
            migrations.apply_pending(db, folder)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return migrations.revision_state(db, folder)[0]

    # -- reading the history ----------------------------------------------------------------
    def versions(self, name: str) -> list[SchemaVersion]:
        return self.history.versions(name)

    def version(self, name: str, number: int) -> tuple[SchemaVersion, SchemaVersion | None]:
        """A stored version and the one before it (for a diff); `NotFound` when absent."""
        found = self.history.get(name, number)
        if found is None:
            raise NotFound(f"no version {number} of {name!r}")
        return found, self.history.get(name, number - 1)


def _parsed(path: Path, name: str) -> EntitySchema | None:
    """The entity a file on disk holds now (None when it is unreadable or broken)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return parse_entity_schema(doc, name=name, source=str(path))
    except (OSError, ValueError, SchemaError):
        return None


def version_diff(old: SchemaVersion | None, new: SchemaVersion) -> str:
    """The unified diff from one stored version to the next."""
    a = pretty(dict(old.schema)).splitlines(keepends=True) if old else []
    b = pretty(dict(new.schema)).splitlines(keepends=True)
    name = f"{new.entity}.json"
    return "".join(
        difflib.unified_diff(a, b, f"{name} v{old.version if old else 0}", f"{name} v{new.version}")
    )
