"""The web UI under `/ui/`: list, detail, create, edit and delete pages generated from each schema.

Server-rendered (Jinja2, `registry/templates/`), usable without JavaScript: forms post
`application/x-www-form-urlencoded`. Every read and write of records goes through the visitor's
`Gate` (`UI.records(request)[entity]`, i.e. `Registry.records(principal)`), the enforcement point
the REST API uses: access roles, owner scopes, private fields and write rules are the API's, as
are validation, references, uniqueness, audit and outbox. The pages differ only in how a refusal
looks: an anonymous visitor is sent to sign in, a role without the right gets "not found" (the
page does not say the entity exists), a private-field filter is a 403 naming the field. The small
`ui.js` only adds and removes array rows in the page (without it, those buttons ask the server for
one row more or less). The schema editor's pages (`/ui/schemas/...`, operation "admin") are in
`registry.ui.schema_pages`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from open_registry.core.auth import rules
from open_registry.core.auth.deps import principal_of
from open_registry.core.auth.principal import SYSTEM_ADMIN
from open_registry.core.auth.rules import Rule
from open_registry.core.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    PreconditionFailed,
    RegistryError,
    Unauthorized,
)
from open_registry.core.gate import Gate, Records
from open_registry.core.i18n import COOKIE, Catalogs
from open_registry.core.ui.auth import add_auth_pages
from open_registry.core.ui.lists import ListPage, detail_items
from open_registry.core.ui.messages import people_errors
from open_registry.core.ui.render import (
    MAX_REFERENCE_OPTIONS,
    FormView,
    ReferenceChoices,
    build_environment,
    flat_values,
    render_form,
)
from open_registry.core.ui.requests import Page, SignInFirst, read_form, same_origin
from open_registry.core.ui.schema_pages import add_schema_routes
from open_registry.core.ui.tasks import Task, landing_of, tasks_for
from open_registry.generators.formdata import (
    form_to_json,
    record_to_form,
    row_indices,
)
from open_registry.generators.forms import (
    FormField,
    Option,
    WidgetHook,
    entity_description,
    entity_title,
    form_fields,
)
from open_registry.generators.schema import EntitySchema

UI_PREFIX = "/ui"
#: `?notice=` keys a page may show (`notice.<key>` in the catalogs)
NOTICES = (
    "created",
    "saved",
    "deleted",
    "schema_saved",
    "user_added",
    "recorded",
    "revoked",
    "suspended",
    "reinstated",
)
#: the picker's bounds (`/ui/pick/{entity}`): characters of the text searched, records answered
PICK_MAX_TEXT = 100
PICK_MAX_ITEMS = 20
#: what adds a page: `route(path, methods, rule)(handler)` (see `add_ui_routes`)
RouteDecorator = Callable[[str, list[str], Rule], Callable[[Any], Any]]


class UI:
    """The pages of one app, over one registry."""

    def __init__(
        self,
        registry: Any,
        *,
        prefix: str = UI_PREFIX,
        widget_hook: WidgetHook | None = None,
        actor_of: Callable[[Request], str | None] | None = None,
    ):
        self.registry = registry
        self.prefix = prefix
        hooks = registry.pm.hook
        if widget_hook is None and hooks.lookup_widget.get_hookimpls():

            def widget_hook(path: str, schema: Any) -> str | None:
                return hooks.lookup_widget(path=path, schema=schema)

        self.widget_hook = widget_hook
        # the schema editor's actor; record writes are the gate's, in the principal's name
        self.actor_of = actor_of or (lambda r: principal_of(r).actor)
        self.catalogs = Catalogs.load()
        template_dirs = [d for dirs in hooks.register_templates() for d in dirs or []]
        self.env = build_environment(template_dirs)
        self._forms: dict[tuple[str, str], tuple[FormField, ...]] = {}
        #: the home page's tasks, added by plugins (`add_task`)
        self.tasks: list[Task] = []
        #: adds a page with the UI's refusals (sign-in redirect, "not found"); set by
        #: `add_ui_routes`, for plugins' pages (`ui.route("/vaccinate", ["GET"], rule)(fn)`)
        self.route: RouteDecorator | None = None
        listeners = getattr(registry, "on_reload", None)
        if listeners is not None:  # a schema changed while running: forms are built anew
            listeners.append(lambda _changed: self._forms.clear())

    # -- access: every record goes through the visitor's gates -----------------------------
    def records(self, request: Request) -> Records:
        """Every entity's records as the visitor may read and write them (`registry.gate`)."""
        return self.registry.records(principal_of(request))

    def can(self, request: Request, entity: EntitySchema | None, operation: str) -> bool:
        """Whether the request may do `operation` on (some records of) `entity`.

        Operations: create, read, update, delete, and "admin" (the schema editor and the
        users page; `entity` is None for the editor's list and for adding an entity)."""
        if entity is None or operation == "admin":
            return SYSTEM_ADMIN in principal_of(request).roles
        return self.records(request)[entity.name].can(operation)

    def gate(self, request: Request, entity: str, operation: str) -> Gate:
        """The visitor's gate of `entity`, once they may do `operation` on some of its records:
        an anonymous refusal asks them to sign in, any other answers "not found"."""
        g = self.records(request)[entity]  # NotFound: no such entity
        with refusals_as_pages(entity):
            g.scope(operation)
        return g

    def record(self, g: Gate, record_id: str, operation: str) -> dict[str, Any]:
        """One record the visitor may read and do `operation` on, as they may see it ("not
        found" otherwise, as outside their scope)."""
        with refusals_as_pages(g.name):
            record = g.get(record_id)
        if not allows(g, operation, record):
            raise NotFound(f"{g.name} {record_id}")
        return record

    def add_task(self, task: Task) -> None:
        """Add a task to the home page (a plugin's `prepare_app` does, see `ui.tasks`)."""
        self.tasks = [t for t in self.tasks if t.key != task.key] + [task]

    def fields(self, entity: EntitySchema, locale: str) -> tuple[FormField, ...]:
        key = (entity.name, locale)
        if key not in self._forms:
            self._forms[key] = form_fields(entity, widget_hook=self.widget_hook, locale=locale)
        return self._forms[key]

    # -- rendering ------------------------------------------------------------------------
    def page(self, request: Request) -> Page:
        locale = self.catalogs.negotiate(
            request.query_params.get("lang"),
            request.cookies.get(COOKIE),
            request.headers.get("accept-language"),
        )
        return Page(request, locale, self.catalogs.translator(locale))

    def html(self, page: Page, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        notice_key = page.request.query_params.get("notice")
        here = page.request.url.path + (
            f"?{page.request.url.query}" if page.request.url.query else ""
        )
        body = self.env.get_template(template).render(
            t=page.t,
            prefix=self.prefix,
            site_title=self.registry.settings.title,
            languages=[(c, self.catalogs.name_of(c)) for c in self.catalogs.locales],
            here=here,
            viewer=principal_of(page.request),
            nav_tasks=[t for t in tasks_for(page.request, self.tasks) if t.nav],
            notice=page.t(f"notice.{notice_key}") if notice_key in NOTICES else None,
            **context,
        )
        resp = HTMLResponse(body, status_code=status)
        resp.headers["Content-Language"] = page.locale
        resp.headers["Vary"] = "Accept-Language, Cookie"
        if page.request.query_params.get("lang") == page.locale:
            resp.set_cookie(COOKIE, page.locale, max_age=31_536_000, samesite="lax")
        return resp

    def error_page(self, page: Page, status: int, message: str) -> HTMLResponse:
        title_key = "error.not_found_title" if status == 404 else "error.bad_request_title"
        return self.html(
            page,
            "error.html",
            status,
            heading=page.t(title_key),
            message=message,
            back=f"{self.prefix}/",
        )

    def heading_of(self, entity: EntitySchema, record: dict[str, Any]) -> str:
        shown = record.get(entity.display) if entity.display else None
        return str(shown) if shown not in (None, "") else str(record.get("id", ""))

    # -- reference choices ------------------------------------------------------------------
    def reference_choices(
        self, fields: tuple[FormField, ...], request: Request | None = None
    ) -> dict[str, ReferenceChoices]:
        """The records each reference field of `fields` may point at, of those the visitor of
        `request` may read, as they may see them (none offered without a request)."""
        out: dict[str, ReferenceChoices] = {}
        if request is None:
            return out
        records = self.records(request)
        for top in fields:
            for f in top.walk():
                if f.reference is None or f.path in out:
                    continue
                entity_name, field_name = f.reference
                try:
                    target = records[entity_name]
                except NotFound:  # an entity no longer served
                    continue
                if not target.can("read"):
                    continue
                display = target.entity.display
                params = [("limit", str(MAX_REFERENCE_OPTIONS))]
                if display and target.entity.fields[display].is_scalar:
                    params.append(("sort", display))
                page = target.search(target.service.parser.from_params(params))
                options = []
                for rec in page.items:
                    value = rec.get(field_name)
                    if value is None:
                        continue
                    label = rec.get(display) if display else None
                    text = f"{label} ({value})" if label and str(label) != str(value) else value
                    options.append(Option(value, str(text)))
                out[f.path] = ReferenceChoices(tuple(options), complete=page.next_cursor is None)
        return out

    async def form_page(
        self,
        page: Page,
        entity: EntitySchema,
        *,
        values: dict[str, Any],
        errors: dict[str, list[str]] | None = None,
        record: dict[str, Any] | None = None,
        version: int | None = None,
        status: int = 200,
        conflict: str | None = None,
        hide: set[str] | frozenset[str] = frozenset(),
    ) -> HTMLResponse:
        fields = tuple(f for f in self.fields(entity, page.locale) if f.key not in hide)
        choices = await run_in_threadpool(self.reference_choices, fields, page.request)
        view = FormView(fields, values, errors or {}, choices, new=record is None)
        title = entity_title(entity, page.locale)
        base = f"{self.prefix}/{entity.name}"
        action = f"{base}/{record['id']}/edit" if record else f"{base}/new"
        heading = (
            page.t("form.edit_title", what=self.heading_of(entity, record))
            if record
            else page.t("form.new_title", what=title)
        )
        return self.html(
            page,
            "form.html",
            status,
            entity=entity.name,
            title=title,
            heading=heading,
            description=entity_description(entity, page.locale) if record is None else None,
            conflict=conflict,
            current_url=f"{base}/{record['id']}" if record and conflict else None,
            form_html=render_form(self.env, view, page.t, action=action, version=version),
        )


@contextmanager
def refusals_as_pages(entity: str) -> Iterator[None]:
    """A gate's refusal as the pages answer it: no sign-in -> the sign-in page; a role
    without the right -> "not found" (a page does not tell which entities exist)."""
    try:
        yield
    except Unauthorized:
        raise SignInFirst() from None
    except Forbidden:
        raise NotFound(entity) from None


def allows(g: Gate, operation: str, record: dict[str, Any]) -> bool:
    """Whether `g`'s caller may do `operation` on this very record (buttons, forms)."""
    if not g.can(operation):
        return False
    scope = g.scope(operation)
    return scope is None or scope.matches(record)


def hidden_private(g: Gate, record: dict[str, Any]) -> set[str]:
    """Private fields `g`'s caller may not see (nor change) on `record`."""
    access = g.access
    if not access.private or access.sees_private(g.principal, record):
        return set()
    return set(access.private)


def rows_changed(pairs: list[tuple[str, str]]) -> dict[str, Any] | None:
    """For the no-JS "add row"/"remove row" buttons: the form values with that change made."""
    action = dict(pairs)
    if "_add" not in action and "_remove" not in action:
        return None
    values = flat_values(pairs)
    if "_add" in action:
        name = action["_add"]
        rows = row_indices(values, name)
        values[f"{name}.{rows[-1] + 1 if rows else 0}"] = ""
    else:
        gone = action["_remove"]
        values = {k: v for k, v in values.items() if k != gone and not k.startswith(gone + ".")}
    return values


def add_ui_routes(  # noqa: C901
    app: FastAPI,
    registry: Any,
    *,
    prefix: str = UI_PREFIX,
    widget_hook: WidgetHook | None = None,
) -> UI:
    """Mount the UI pages and their static files on `app`; returns the `UI` (tests use it)."""
    ui = UI(registry, prefix=prefix, widget_hook=widget_hook)
    app.state.ui = ui
    max_bytes = registry.settings.max_body_bytes
    static = resources.files("open_registry.core") / "static"
    app.mount(f"{prefix}/static", StaticFiles(directory=str(static)), name="ui-static")
    rules.declare_route(app.routes[-1], rules.public("the pages' stylesheets, scripts and icons"))

    def route(path: str, methods: list[str], rule: Rule) -> Callable[[Any], Any]:
        """Add a page; `rule` declares who may use it (`registry.auth.rules`), checked before the
        page runs: an anonymous visitor is sent to sign in, a role without the right gets the
        "not found" page; records are then read and written through the Gate."""

        def deco(fn: Any) -> Any:
            async def handler(request: Request) -> Response:
                page = ui.page(request)
                try:
                    try:
                        rule.check(request)
                    except Forbidden:  # a page the visitor may not use does not exist for them
                        raise NotFound(path) from None
                    if request.method == "POST" and not same_origin(request):
                        return ui.error_page(page, 403, page.t("error.forbidden"))
                    return await fn(page, **request.path_params)
                except (SignInFirst, Unauthorized):
                    target = urlencode({"next": str(request.url.path)})
                    return RedirectResponse(f"{prefix}/login?{target}", 303)
                except Forbidden as exc:  # a gate's refusal no page turned into a form error
                    return ui.error_page(page, 403, exc.detail)
                except NotFound:
                    return ui.error_page(page, 404, page.t("error.not_found"))
                except BadRequest as exc:
                    return ui.error_page(page, 400, exc.detail)

            rules.declare(rule)(handler)
            app.add_api_route(
                prefix + path,
                handler,
                methods=methods,
                include_in_schema=False,
                response_class=HTMLResponse,
                name=f"ui:{fn.__name__}",
            )
            return fn

        return deco

    ui.route = route

    @route("/", ["GET"], rules.public("the start page: links only to what the visitor may use"))
    async def home(page: Page) -> Response:
        tasks = tasks_for(page.request, ui.tasks)
        landing = landing_of(tasks)
        if landing is not None and "records" not in page.request.query_params:
            return RedirectResponse(landing.href, 303)  # monitoring: the dashboard
        entities = [
            {
                "name": e.name,
                "title": entity_title(e, page.locale),
                "description": entity_description(e, page.locale),
            }
            for e in registry.schemas
            if ui.can(page.request, e, "read")
        ]
        can_admin = ui.can(page.request, None, "admin")
        return ui.html(page, "home.html", entities=entities, can_admin=can_admin, tasks=tasks)

    @route("/pick/{entity}", ["GET"], rules.entity("{entity}", "read"))
    async def pick(page: Page, entity: str) -> Response:
        """The searchable pickers' answers: `?q=` (at most `PICK_MAX_TEXT` characters) among the
        records of `entity` the visitor may read, by name (the display field) or by the
        referenced field's value; `?ref=<entity>.<field path>` names the reference field being
        filled (its value is what is chosen: a code, or the record id). JSON
        `{"items": [{"value", "label", "hint"}]}`, at most `PICK_MAX_ITEMS`."""
        g = ui.gate(page.request, entity, "read")
        params = page.request.query_params
        text = params.get("q", "").strip()
        if len(text) > PICK_MAX_TEXT:
            raise BadRequest(f"q: at most {PICK_MAX_TEXT} characters")
        field = _picked_field(registry, entity, params.get("ref", ""))
        items = await run_in_threadpool(_pick, g, field, text)
        return JSONResponse({"items": items}, headers={"Cache-Control": "no-store"})

    @route("/lang", ["GET"], rules.public("sets the visitor's language cookie"))
    async def language(page: Page) -> Response:
        target = page.request.query_params.get("next") or f"{prefix}/"
        if not target.startswith(prefix) or target.startswith("//"):
            target = f"{prefix}/"
        resp = RedirectResponse(target, status_code=303)
        resp.set_cookie(COOKIE, page.locale, max_age=31_536_000, samesite="lax")
        return resp

    add_schema_routes(ui, route)  # before "/{entity}": /ui/schemas is not an entity
    add_auth_pages(ui, route)  # /ui/login, /ui/logout, /ui/users

    @route("/{entity}", ["GET"], rules.entity("{entity}", "read"))
    async def list_page(page: Page, entity: str) -> Response:
        g = ui.gate(page.request, entity, "read")
        listing = ListPage(g, page.t, page.locale, prefix, ui.fields(g.entity, page.locale))
        params = [(k, v) for k, v in page.request.query_params.multi_items() if k != "lang"]
        context, status = await run_in_threadpool(listing.context, params)
        return ui.html(page, "list.html", status, can_create=g.can("create"), **context)

    @route("/{entity}/new", ["GET", "POST"], rules.entity("{entity}", "create"))
    async def create_page(page: Page, entity: str) -> Response:
        g = ui.gate(page.request, entity, "create")
        e = g.entity
        if page.request.method == "GET":
            return await ui.form_page(page, e, values={})
        pairs = await read_form(page.request, max_bytes)
        changed = rows_changed(pairs)
        if changed is not None:
            return await ui.form_page(page, e, values=changed)
        fields = ui.fields(e, page.locale)
        body, kept = form_to_json(fields, pairs)
        try:
            record = await run_in_threadpool(g.create, body)
        except (Invalid, Conflict, Forbidden) as exc:
            return await ui.form_page(
                page,
                e,
                values=kept,
                errors=people_errors(fields, exc.errors or [_whole(exc)], page.t),
                status=exc.status,
            )
        return RedirectResponse(f"{prefix}/{entity}/{record['id']}?notice=created", 303)

    @route("/{entity}/{id}", ["GET"], rules.entity("{entity}", "read", record="id"))
    async def detail_page(page: Page, entity: str, id: str) -> Response:
        g = ui.gate(page.request, entity, "read")
        e = g.entity
        record = await run_in_threadpool(ui.record, g, id, "read")
        fields = ui.fields(e, page.locale)
        records = ui.records(page.request)
        items = await run_in_threadpool(detail_items, fields, record, records, page.t, prefix)
        return ui.html(
            page,
            "detail.html",
            entity=entity,
            title=entity_title(e, page.locale),
            heading=ui.heading_of(e, record),
            record=record,
            items=items,
            can_update=allows(g, "update", record),
            can_delete=allows(g, "delete", record),
        )

    @route("/{entity}/{id}/edit", ["GET", "POST"], rules.entity("{entity}", "update", record="id"))
    async def edit_page(page: Page, entity: str, id: str) -> Response:
        g = ui.gate(page.request, entity, "update")
        e = g.entity
        record = await run_in_threadpool(ui.record, g, id, "update")
        hide = hidden_private(g, record)
        record = {k: v for k, v in record.items() if k not in hide}
        fields = tuple(f for f in ui.fields(e, page.locale) if f.key not in hide)
        if page.request.method == "GET":
            return await ui.form_page(
                page,
                e,
                values=record_to_form(fields, record),
                record=record,
                version=record["_version"],
                hide=hide,
            )
        pairs = await read_form(page.request, max_bytes)
        version = _version(pairs)
        changed = rows_changed(pairs)
        if changed is not None:
            return await ui.form_page(
                page, e, values=changed, record=record, version=version, hide=hide
            )
        body, kept = form_to_json(fields, pairs)
        # a merge patch: fields of the form are set or removed, anything else (internal) is kept
        patch = {f.key: body.get(f.key) for f in fields}
        try:
            await run_in_threadpool(lambda: g.update(id, patch, if_match=version, patch=True))
        except PreconditionFailed:
            current = await run_in_threadpool(ui.record, g, id, "update")
            current = {k: v for k, v in current.items() if k not in hide}
            return await ui.form_page(
                page,
                e,
                values=kept,
                record=current,
                version=current["_version"],
                status=409,
                conflict=page.t("form.conflict", version=current["_version"]),
                hide=hide,
            )
        except (Invalid, Conflict, Forbidden) as exc:
            return await ui.form_page(
                page,
                e,
                values=kept,
                errors=people_errors(fields, exc.errors or [_whole(exc)], page.t),
                record=record,
                version=version,
                status=exc.status,
                hide=hide,
            )
        return RedirectResponse(f"{prefix}/{entity}/{id}?notice=saved", 303)

    @route(
        "/{entity}/{id}/delete", ["GET", "POST"], rules.entity("{entity}", "delete", record="id")
    )
    async def delete_page(page: Page, entity: str, id: str) -> Response:
        g = ui.gate(page.request, entity, "delete")
        e = g.entity
        record = await run_in_threadpool(ui.record, g, id, "delete")
        context: dict[str, Any] = {
            "entity": entity,
            "title": entity_title(e, page.locale),
            "heading": ui.heading_of(e, record),
            "record": record,
        }
        if page.request.method == "GET":
            return ui.html(page, "delete.html", conflict=None, **context)
        pairs = await read_form(page.request, max_bytes)
        try:
            await run_in_threadpool(lambda: g.delete(id, if_match=_version(pairs)))
        except PreconditionFailed:
            message = page.t("delete.conflict", version=record["_version"])
            return ui.html(page, "delete.html", 409, conflict=message, **context)
        query = urlencode({"notice": "deleted"})
        return RedirectResponse(f"{prefix}/{entity}?{query}", 303)

    return ui


def _picked_field(registry: Any, entity: str, ref: str) -> str:
    """The field of `entity` a picker fills: the one the reference `ref` (`vaccination.facility`,
    `facility.programs.programId`) points at, or the record id without `ref`."""
    if not ref:
        return "id"
    owner, _, path = ref.partition(".")
    service = registry.services.get(owner)
    for r in service.entity.references if service is not None else ():
        if r.path == path and r.entity == entity:
            return str(r.field)
    raise BadRequest(f"ref: {ref[:80]!r} is no reference field to {entity}")


def _pick(g: Gate, field: str, text: str) -> list[dict[str, str]]:
    """Up to `PICK_MAX_ITEMS` records for a picker: whose name contains `text` (any case), then
    whose `field` starts with it; everything (by name) for an empty text."""
    e = g.entity
    display = e.display if e.display and e.fields[e.display].is_scalar else None
    searches: list[list[tuple[str, str]]] = []
    if text and display and display not in e.private:
        searches.append([(f"{display}[icontains]", text)])
    if text and field != "id" and field not in e.private:
        searches.append([(f"{field}[startsWith]", text)])
    if text and field == "id":
        searches.append([("id", text)])
    if not text:
        searches.append([])
    out: dict[str, dict[str, str]] = {}
    for filters in searches:
        params = [*filters, ("limit", str(PICK_MAX_ITEMS))]
        if display:
            params.append(("sort", display))
        try:
            found = g.search(g.service.parser.from_params(params)).items
        except BadRequest:  # e.g. an id that is no id
            continue
        for rec in found:
            value = rec.get(field)
            if value is None or str(value) in out:
                continue
            label = str(rec.get(display) or value) if display else str(value)
            hint = "" if field == "id" or label == str(value) else str(value)
            out[str(value)] = {"value": str(value), "label": label, "hint": hint}
    return list(out.values())[:PICK_MAX_ITEMS]


def _version(pairs: list[tuple[str, str]]) -> int | None:
    raw = dict(pairs).get("_version", "")
    return int(raw) if raw.isdigit() else None


def _whole(exc: RegistryError) -> dict[str, str]:
    return {"pointer": "", "message": exc.detail, "keyword": exc.slug}
