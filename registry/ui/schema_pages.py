"""The schema editor's pages under `/ui/schemas`: see every schema and its history, add an entity,
add or edit a field through a form or edit the JSON, preview the migration, confirm it.

Every change goes through `registry.schemas.editor.SchemaEditor` (checked like a schema file,
planned like `registry migrate`, refused when destructive or stale). Pages ask
`UI.can(request, entity, "admin")` (entity None for the list and a new entity). Without
JavaScript everything works; `schemas.js` only checks the JSON as it is typed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from fastapi.responses import RedirectResponse, Response
from markupsafe import Markup, escape
from starlette.concurrency import run_in_threadpool

from open_registry.core.api import JSONResponse
from open_registry.core.auth import rules
from open_registry.core.auth.principal import SYSTEM_ADMIN
from open_registry.core.auth.rules import Rule
from open_registry.core.errors import NotFound
from open_registry.core.schemas.editor import (
    NEW_BASE,
    EditConflict,
    MigrationRefused,
    Preview,
    SchemaEditor,
    SchemaRejected,
    parse_json,
    pretty,
    version_diff,
)
from open_registry.core.schemas.history import SchemaVersion
from open_registry.core.ui.requests import Page, read_form
from open_registry.core.ui.schema_forms import (
    FORMATS,
    OTHER,
    TYPES,
    FieldSpec,
    FormErrors,
    apply_spec,
    errors_by_input,
    new_entity_document,
    remove_field,
    spec_from_form,
    spec_of,
)
from open_registry.generators.forms import entity_title
from open_registry.generators.schema import EntitySchema

if TYPE_CHECKING:
    from open_registry.core.ui.pages import UI

Route = Callable[[str, list[str], Rule], Callable[[Any], Any]]
#: the schema editor is for system-admins only
ADMIN = rules.roles(SYSTEM_ADMIN)


def diff_html(diff: str) -> Markup:
    """A unified diff as a `<pre>`, added and removed lines marked (not by colour alone)."""
    lines = []
    for line in diff.splitlines():
        cls = ""
        if line.startswith("+") and not line.startswith("+++"):
            cls = "add"
        elif line.startswith("-") and not line.startswith("---"):
            cls = "del"
        text = escape(line)
        lines.append(Markup('<span class="{}">{}</span>').format(cls, text) if cls else text)
    return Markup('<pre class="diff">') + Markup("\n").join(lines) + Markup("</pre>")


class SchemaPages:
    """Rendering of the editor's pages for one `UI`."""

    def __init__(self, ui: UI, editor: SchemaEditor):
        self.ui = ui
        self.editor = editor
        self.prefix = ui.prefix

    def allow(self, page: Page, entity: EntitySchema | None) -> None:
        if not self.ui.can(page.request, entity, "admin"):
            raise NotFound("schemas")

    def title(self, page: Page, name: str) -> str:
        e = self.editor.registry.schemas.entities.get(name)
        return entity_title(e, page.locale) if e is not None else name

    def choices(self, page: Page, spec: FieldSpec) -> tuple[list[Any], list[Any]]:
        types = [(k, page.t(f"schemas.type.{k}")) for k in TYPES]
        if spec.type == OTHER:
            types.append((OTHER, page.t("schemas.type.other")))
        formats = [(f, f or page.t("schemas.format.none")) for f in FORMATS]
        return types, formats

    def version_info(self, page: Page, v: SchemaVersion) -> dict[str, Any]:
        return {
            "version": v.version,
            "iso": v.at.isoformat(),
            "when": v.at.strftime("%Y-%m-%d %H:%M:%S UTC"),
            "who": v.actor or page.t("schemas.no_actor"),
            "origin": page.t("schemas.origin_ui")
            if v.from_ui
            else page.t("schemas.origin_file", path=v.origin),
            "revision": v.revision,
        }

    def conflict_text(self, page: Page, exc: EditConflict) -> str:
        if exc.other_process:
            return page.t("schemas.conflict_process")
        v = exc.latest
        if v is None:
            return page.t("schemas.conflict_unknown")
        info = self.version_info(page, v)
        return page.t("schemas.conflict", version=v.version, who=info["who"], when=info["when"])

    # -- pages ------------------------------------------------------------------------------
    def field_form(
        self,
        page: Page,
        entity: str,
        spec: FieldSpec,
        *,
        editing: bool,
        base: str,
        errors: FormErrors | None = None,
        issues: Sequence[Mapping[str, str]] = (),
        conflict: str | None = None,
        status: int = 200,
    ) -> Response:
        title = self.title(page, entity)
        types, formats = self.choices(page, spec)
        heading = (
            page.t("schemas.edit_field_title", name=spec.name)
            if editing
            else page.t("schemas.add_field_to", what=title)
        )
        action = f"{self.prefix}/schemas/{entity}/fields/" + (spec.name if editing else "new")
        return self.ui.html(
            page,
            "schema_field.html",
            status,
            entity=entity,
            title=title,
            heading=heading,
            spec=spec,
            editing=editing,
            base=base,
            types=types,
            formats=formats,
            errors=errors or {},
            issues=list(issues),
            conflict=conflict,
            action=action,
        )

    def new_form(
        self,
        page: Page,
        values: Mapping[str, str],
        spec: FieldSpec,
        *,
        errors: FormErrors | None = None,
        issues: Sequence[Mapping[str, str]] = (),
        status: int = 200,
    ) -> Response:
        types, formats = self.choices(page, spec)
        shown = {k: values.get(k, "") for k in ("entity", "title", "description")}
        return self.ui.html(
            page,
            "schema_new.html",
            status,
            values=shown,
            spec=spec,
            types=types,
            formats=formats,
            errors=errors or {},
            issues=list(issues),
        )

    def json_editor(
        self,
        page: Page,
        entity: str,
        text: str,
        base: str,
        *,
        new: bool,
        issues: Sequence[Mapping[str, str]] = (),
        conflict: str | None = None,
        status: int = 200,
    ) -> Response:
        return self.ui.html(
            page,
            "schema_json.html",
            status,
            entity=entity,
            title=self.title(page, entity),
            text=text,
            base=base,
            new=new,
            issues=list(issues),
            conflict=conflict,
        )

    def preview_page(self, page: Page, p: Preview, status: int = 200) -> Response:
        return self.ui.html(
            page,
            "schema_preview.html",
            status,
            entity=p.entity,
            title=self.title(page, p.entity),
            p=p,
            text=pretty(p.document),
            diff=diff_html(p.diff()),
        )

    async def preview_or(
        self,
        page: Page,
        entity: str,
        doc: dict[str, Any],
        base: str,
        *,
        new: bool,
        on_rejected: Callable[[list[dict[str, Any]]], Response],
    ) -> Response:
        """The preview of a change, or `on_rejected(errors)` when the schema is not valid, or
        the JSON editor holding the change when it is stale."""
        try:
            p = await run_in_threadpool(self.editor.preview, entity, doc, base, new=new)
        except SchemaRejected as exc:
            return on_rejected(exc.errors or [])
        except EditConflict as exc:
            return await self.stale(page, entity, doc, exc)
        return self.preview_page(page, p)

    async def stale(
        self, page: Page, entity: str, doc: dict[str, Any], exc: EditConflict
    ) -> Response:
        """The user's change kept in the JSON editor, the conflict explained; previewing again
        starts from the current schema (unless another process holds a newer one)."""
        base = await run_in_threadpool(self.editor.base, entity)
        return self.json_editor(
            page,
            entity,
            pretty(doc),
            base,
            new=False,
            conflict=self.conflict_text(page, exc),
            status=409,
        )


def add_schema_routes(ui: UI, route: Route) -> SchemaEditor:  # noqa: C901
    """Mount the schema editor's pages through the UI's `route` decorator."""
    registry = ui.registry
    editor = SchemaEditor(registry)
    pages = SchemaPages(ui, editor)
    ui.schema_editor = editor  # type: ignore[attr-defined]
    prefix = ui.prefix
    max_bytes = registry.settings.max_body_bytes

    async def form(page: Page) -> dict[str, str]:
        return dict(await read_form(page.request, max_bytes))

    @route("/schemas", ["GET"], ADMIN)
    async def schemas_page(page: Page) -> Response:
        pages.allow(page, None)
        numbers = await run_in_threadpool(editor.history.latest_numbers)
        folder = str(editor.folder)
        rows = [
            {
                "name": e.name,
                "title": entity_title(e, page.locale),
                "fields": len(e.fields),
                "version": numbers.get(e.name),
                "edited": e.source.startswith(folder),
            }
            for e in registry.schemas
            if ui.can(page.request, e, "admin")
        ]
        return ui.html(page, "schemas.html", entities=rows)

    @route("/schemas/new", ["GET", "POST"], ADMIN)
    async def new_entity_page(page: Page) -> Response:
        pages.allow(page, None)
        if page.request.method == "GET":
            first = FieldSpec(name="name", title=page.t("schemas.default_field"), required=True)
            return pages.new_form(page, {}, first)
        f = await form(page)
        name = f.get("entity", "").strip()
        spec = spec_from_form({k[6:]: v for k, v in f.items() if k.startswith("field_")})
        doc, errs = apply_spec(
            new_entity_document(f.get("title", "").strip(), f.get("description", "").strip()),
            spec,
            editing=False,
        )
        errors = {f"field_{k}": v for k, v in errs.items()}
        if not name:
            errors["entity"] = [page.t("schemas.entity_name_missing")]
        if errors:
            return pages.new_form(page, f, spec, errors=errors, status=422)

        def rejected(issues: list[dict[str, Any]]) -> Response:
            found = {f"field_{k}": v for k, v in errors_by_input(issues, spec.name).items()}
            whole = [i["message"] for i in issues if not i.get("pointer")]
            if whole:
                found["entity"] = whole
            return pages.new_form(page, f, spec, errors=found, issues=issues, status=422)

        return await pages.preview_or(page, name, doc, NEW_BASE, new=True, on_rejected=rejected)

    @route("/schemas/{entity}", ["GET"], ADMIN)
    async def schema_page(page: Page, entity: str) -> Response:
        e = editor.entity(entity)
        pages.allow(page, e)
        doc = await run_in_threadpool(editor.document, entity)
        versions = await run_in_threadpool(editor.versions, entity)
        fields = []
        for name in doc.get("properties") or {}:
            spec = spec_of(doc, name)
            rules = [
                page.t(f"schemas.rule.{k}")
                for k in ("required", "indexed", "unique")
                if getattr(spec, k)
            ]
            if spec.enum:
                rules.append(page.t("schemas.rule.enum", values=spec.enum.replace("\n", ", ")))
            fields.append(
                {
                    "name": name,
                    "title": spec.title,
                    "type_label": page.t(f"schemas.type.{spec.type}"),
                    "format": spec.format,
                    "rules": rules,
                }
            )
        return ui.html(
            page,
            "schema.html",
            entity=entity,
            title=entity_title(e, page.locale),
            source=e.source,
            edited=e.source.startswith(str(editor.folder)),
            fields=fields,
            versions=[pages.version_info(page, v) for v in versions],
            json=pretty(doc),
        )

    @route("/schemas/{entity}/check", ["POST"], ADMIN)
    async def check(page: Page, entity: str) -> Response:
        f = await form(page)
        new = f.get("new") == "1"
        pages.allow(page, None if new else editor.entity(entity))
        errors: list[dict[str, Any]] = []
        try:
            doc = parse_json(f.get("schema", ""))
            await run_in_threadpool(editor.check, entity, doc, new=new)
        except SchemaRejected as exc:
            errors = exc.errors or []
        return JSONResponse({"ok": not errors, "errors": errors})

    @route("/schemas/{entity}/json", ["GET", "POST"], ADMIN)
    async def json_page(page: Page, entity: str) -> Response:
        if page.request.method == "GET":
            pages.allow(page, editor.entity(entity))
            doc = await run_in_threadpool(editor.document, entity)
            base = await run_in_threadpool(editor.base, entity)
            return pages.json_editor(page, entity, pretty(doc), base, new=False)
        f = await form(page)
        new = f.get("new") == "1"
        pages.allow(page, None if new else editor.entity(entity))
        text, base = f.get("schema", ""), f.get("base", "")
        if f.get("_action") == "edit":
            return pages.json_editor(page, entity, text, base, new=new)

        def rejected(issues: list[dict[str, Any]]) -> Response:
            return pages.json_editor(page, entity, text, base, new=new, issues=issues, status=422)

        try:
            doc = parse_json(text)
        except SchemaRejected as exc:
            return rejected(exc.errors or [])
        return await pages.preview_or(page, entity, doc, base, new=new, on_rejected=rejected)

    async def field_page(page: Page, entity: str, field: str | None) -> Response:
        e = editor.entity(entity)
        pages.allow(page, e)
        doc = await run_in_threadpool(editor.document, entity)
        if field is not None and field not in (doc.get("properties") or {}):
            raise NotFound(f"no field {field!r}")
        editing = field is not None
        if page.request.method == "GET":
            spec = spec_of(doc, field) if field is not None else FieldSpec()
            base = await run_in_threadpool(editor.base, entity)
            return pages.field_form(page, entity, spec, editing=editing, base=base)
        f = await form(page)
        base = f.get("base", "")
        if field is not None and f.get("_remove"):
            changed = remove_field(doc, field)
            spec = spec_of(doc, field)
        else:
            spec = spec_from_form(f, name=field)
            changed, errors = apply_spec(doc, spec, editing=editing)
            if errors:
                return pages.field_form(
                    page, entity, spec, editing=editing, base=base, errors=errors, status=422
                )

        def rejected(issues: list[dict[str, Any]]) -> Response:
            return pages.field_form(
                page,
                entity,
                spec,
                editing=editing,
                base=base,
                errors=errors_by_input(issues, spec.name),
                issues=issues,
                status=422,
            )

        return await pages.preview_or(page, entity, changed, base, new=False, on_rejected=rejected)

    @route("/schemas/{entity}/fields/new", ["GET", "POST"], ADMIN)
    async def new_field_page(page: Page, entity: str) -> Response:
        return await field_page(page, entity, None)

    @route("/schemas/{entity}/fields/{field}", ["GET", "POST"], ADMIN)
    async def edit_field_page(page: Page, entity: str, field: str) -> Response:
        return await field_page(page, entity, field)

    @route("/schemas/{entity}/apply", ["POST"], ADMIN)
    async def apply_page(page: Page, entity: str) -> Response:
        f = await form(page)
        new = f.get("new") == "1"
        pages.allow(page, None if new else editor.entity(entity))
        text, base = f.get("schema", ""), f.get("base", "")
        try:
            doc = parse_json(text)
            await run_in_threadpool(
                editor.apply, entity, doc, base, new=new, actor=ui.actor_of(page.request)
            )
        except SchemaRejected as exc:
            issues = exc.errors or []
            return pages.json_editor(page, entity, text, base, new=new, issues=issues, status=422)
        except EditConflict as exc:
            return await pages.stale(page, entity, doc, exc)
        except MigrationRefused as exc:
            return pages.preview_page(page, exc.preview, status=409)
        return RedirectResponse(f"{prefix}/schemas/{entity}?notice=schema_saved", 303)

    @route("/schemas/{entity}/history/{version}", ["GET"], ADMIN)
    async def version_page(page: Page, entity: str, version: str) -> Response:
        pages.allow(page, registry.schemas.entities.get(entity))
        if not version.isdigit():
            raise NotFound(version)
        v, before = await run_in_threadpool(editor.version, entity, int(version))
        diff = version_diff(before, v) if before is not None else ""
        return ui.html(
            page,
            "schema_version.html",
            entity=entity,
            title=pages.title(page, entity),
            v=v,
            info=pages.version_info(page, v),
            diff=diff_html(diff) if diff else None,
            json=pretty(dict(v.schema)),
        )

    return editor
