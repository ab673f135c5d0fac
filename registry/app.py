"""`create_app(settings)`: load schemas, prepare the database, mount the generated API."""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import pluggy
import sqlalchemy as sa
import swagger_ui_bundle
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from open_registry.core import dispatch, heavy, idempotency, observability, serving
from open_registry.core.api import (
    API_PREFIX,
    GuardedRoute,
    JSONResponse,
    add_entity_routes,
    swap_routes,
)
from open_registry.core.audit import chain as audit_chain
from open_registry.core.audit.api import add_audit_routes
from open_registry.core.auth import rules
from open_registry.core.auth.deps import Auth, AuthMiddleware
from open_registry.core.auth.principal import Principal
from open_registry.core.auth.routes import auth_routes
from open_registry.core.auth.tables import auth_tables
from open_registry.core.demo import load_demo_data, load_demo_history
from open_registry.core.errors import (
    PROBLEM_JSON,
    NotFound,
    RegistryError,
    StartupError,
    problem_body,
)
from open_registry.core.gate import Records
from open_registry.core.idempotency import IdempotencyKeys
from open_registry.core.imports.api import (
    add_entity_import_routes,
    add_import_routes,
    import_tables,
)
from open_registry.core.migrations import prepare
from open_registry.core.outbox.api import add_outbox_routes
from open_registry.core.outbox.deliveries import delivery_table
from open_registry.core.outbox.worker import Worker
from open_registry.core.plugins import plugin_manager
from open_registry.core.records import EntityService, build_services
from open_registry.core.schemas.history import schema_history_table
from open_registry.core.schemas.loading import (
    SchemaSet,
    edited_schema_dir,
    load_schemas,
    schema_folders,
)
from open_registry.core.settings import Settings
from open_registry.core.storage import Database, build_database
from open_registry.core.ui.pages import add_ui_routes
from open_registry.core.version import __version__
from open_registry.core.web_security import CrossSiteGuard, SecurityHeaders, script_hashes
from open_registry.generators.errors import SchemaError
from open_registry.generators.openapi import (
    PROBLEM_SCHEMA,
    add_problems,
    entity_components,
    finish_operation,
    unused_components,
)

log = logging.getLogger("registry")

#: the collector's youngest generation is collected after this many allocations net of
#: deallocations (Python's default is 700): a request makes a few thousand objects, most of them
#: freed by reference counting
GC_GEN0_THRESHOLD = 5_000
_gc_frozen = False
_gc_lock = threading.Lock()


def freeze_after_startup(settings: Settings) -> bool:
    """Once per process, after start-up: collect, then freeze every object alive (`gc.freeze`:
    modules, schemas, tables, routes, validators, ~150k objects) out of the cyclic garbage
    collector's sight, and raise its youngest generation's threshold to `GC_GEN0_THRESHOLD`
    (never lower it). Returns whether it froze now; not when `settings.gc_freeze` is off
    (`REGISTRY_GC_FREEZE=false`) or it already has.

    Otherwise every full collection, each ~100 young ones, walks all of them in the middle of
    some request: the p99 of a list request was 10x its p50. Frozen objects are still freed by
    reference counting; only garbage cycles among them would be kept, and start-up's objects
    live as long as the process (`registry serve`'s lifespan, `registry worker`)."""
    global _gc_frozen
    if not settings.gc_freeze:
        return False
    with _gc_lock:
        if _gc_frozen:
            return False
        gc.collect()
        gc.freeze()
        gen0, gen1, gen2 = gc.get_threshold()
        if gen0 < GC_GEN0_THRESHOLD:
            gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)
        _gc_frozen = True
    log.debug("gc: %d start-up objects frozen", gc.get_freeze_count())
    return True


T = TypeVar("T")


class StateKey(Generic[T]):
    """The typed key of one plugin's state on a `Registry` (`Registry.state`): declare one at a
    plugin module's top level, e.g. `RUNTIME: StateKey[Certificates] = StateKey("certificates")`.
    Keys compare by identity, so two plugins never share state by a name clash."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"StateKey({self.name!r})"


@dataclass
class Registry:
    """What one app serves: settings, schemas, database and a service per entity."""

    settings: Settings
    schemas: SchemaSet
    db: Database
    services: dict[str, EntityService]
    pm: pluggy.PluginManager
    #: plugins' string formats, checked on every write
    formats: dict[str, Any] = field(default_factory=dict)
    #: called with the names of the entities added or changed by `reload_schemas`
    on_reload: list[Callable[[set[str]], None]] = field(default_factory=list)
    #: entities whose bulk imports run the plugins' `before_write` (`register_write_checks`)
    write_checked: frozenset[str] = frozenset()
    #: the import jobs of the import API (`registry.imports.api.ImportJobs`), once mounted
    import_jobs: Any = None
    #: users, tokens and access rules (`registry.auth.Auth`), made on first use
    _auth: Any = field(default=None, repr=False)
    #: plugins' state by key (`state`)
    _state: dict[StateKey[Any], Any] = field(default_factory=dict, repr=False)
    _state_lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def state(self, key: StateKey[T], make: Callable[[], T]) -> T:
        """The state a plugin keeps under `key` for this registry, made by `make()` on first
        use (once, whichever thread asks first)."""
        try:
            return self._state[key]
        except KeyError:
            pass
        with self._state_lock:
            if key not in self._state:
                self._state[key] = make()
            return self._state[key]

    @property
    def auth(self) -> Auth:
        """Users, clients, tokens, one-time codes and each entity's access rules."""
        if self._auth is None:
            self._auth = Auth(self)
        return self._auth

    def records(self, principal: Principal) -> Records:
        """Every entity's records as `principal` may read and write them (`registry.gate`):
        what routes, pages and plugin routes use. Workers and commands pass
        `system("<name>")`."""
        return Records(self.services, self.auth.policy, principal)

    def database_for(self, schemas: SchemaSet) -> Database:
        """The table objects of `schemas` on this registry's engine (touches no database)."""
        return registry_database(self.settings, schemas, engine=self.db.engine)

    def reload_schemas(self, schemas: SchemaSet) -> set[str]:
        """Serve `schemas` from now on, without a restart (their migration must be applied).

        Rebuilds the table metadata, validators and services, then calls every `on_reload`
        listener (the app's routes and OpenAPI, the UI's form cache). Returns the names of the
        entities added or changed. Other processes see the change when they restart.
        """
        changed = {e.name for e in schemas if self.schemas.entities.get(e.name) != e}
        fresh = self.database_for(schemas)
        self.db.metadata, self.db.tables = fresh.metadata, fresh.tables
        hook = next((s.before_write for s in self.services.values()), None)
        services = build_services(
            self.db,
            schemas,
            page_size=self.settings.page_size,
            max_page_size=self.settings.max_page_size,
            formats=self.formats,
        )
        for service in services.values():
            service.before_write = hook
            service.checks_imports = hook is not None and service.entity.name in self.write_checked
        self.schemas = schemas
        self.services.update(services)  # in place: the API and the UI hold this mapping
        for gone in set(self.services) - set(services):
            del self.services[gone]
        for listener in self.on_reload:
            listener(changed)
        return changed

    def close(self) -> None:
        if self.import_jobs is not None:
            self.import_jobs.close()
        if self._auth is not None:
            self._auth.close()
        self.db.engine.dispose()

    def record(self, entity: str, record_id: Any) -> dict[str, Any] | None:
        """The live record of `entity` with this id; None when there is no such entity, no id
        or no such record (for plugins looking up what an event names)."""
        service = self.services.get(entity)
        if service is None or not record_id:
            return None
        try:
            return service.get(str(record_id))
        except NotFound:
            return None

    def lookup_person(self, identity: str) -> dict[str, Any] | None:
        """Ask the external registries (plugins) about a person; the first answer wins."""
        return self.pm.hook.lookup_person(identity=identity, registry=self)


def open_registry(
    settings: Settings, *, create_tables: bool = True, plugins: Iterable[Any] = ()
) -> Registry:
    """Load plugins and schemas and connect; raise `StartupError` with a readable reason.

    `plugins` are plugin objects registered besides those found through entry points (tests).
    """
    pm = plugin_manager(
        third_party=settings.load_entrypoints, extra=plugins, trace=settings.trace_hooks
    )
    plugin_dirs = [
        Path(p) for dirs in pm.hook.register_schema_dirs(settings=settings) for p in dirs or []
    ]
    formats: dict[str, Any] = {}
    for contributed in pm.hook.register_formats():
        formats.update(contributed or {})
    try:
        schemas = load_schemas(
            schema_folders(plugin_dirs, settings.schema_dirs),
            edited=edited_schema_dir(settings.data_dir),
        )
    except SchemaError as exc:
        lines = "\n  - ".join(str(i) for i in exc.issues)
        raise StartupError(
            f"{len(exc.issues)} problem(s) in the schema files; the registry will "
            f"not start with them:\n  - {lines}"
        ) from None
    for w in schemas.warnings:
        log.warning("schema: %s", w)
    db = registry_database(settings, schemas)
    try:
        if create_tables:
            created = prepare(db, schemas, settings.migrations_path)
            if created:
                log.info("created tables: %s", ", ".join(created))
            audit_chain.ensure_heads(db.engine, settings.audit_shards)
    except sa.exc.OperationalError as exc:
        db.engine.dispose()
        raise StartupError(f"cannot use the database {db.engine.url!r}: {exc.orig}") from None
    except Exception:
        db.engine.dispose()
        raise
    services = build_services(
        db,
        schemas,
        page_size=settings.page_size,
        max_page_size=settings.max_page_size,
        formats=formats,
    )
    registry = Registry(
        settings=settings, schemas=schemas, db=db, services=services, pm=pm, formats=formats
    )
    registry.write_checked = frozenset(
        name for names in pm.hook.register_write_checks(registry=registry) for name in names or ()
    )
    if pm.hook.before_write.get_hookimpls():

        def before_write(
            entity: str,
            action: str,
            record: Any,
            previous: Any,
            connection: Any,
            *,
            actor: str | None,
            origin: str,
        ) -> None:
            pm.hook.before_write(
                entity=entity,
                action=action,
                record=record,
                previous=previous,
                connection=connection,
                actor=actor,
                origin=origin,
                registry=registry,
            )

        for service in services.values():
            service.before_write = before_write
            service.checks_imports = service.entity.name in registry.write_checked
    return registry


def registry_database(settings: Settings, schemas: SchemaSet, engine: Any = None) -> Database:
    """The entity tables of `schemas` plus every system table (audit, outbox, deliveries,
    imports, the schema history)."""
    db = build_database(settings, schemas, engine=engine)
    import_tables(db.metadata)
    auth_tables(db.metadata)
    schema_history_table(db.metadata)
    delivery_table(db.metadata)
    return db


def _problem_response(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> JSONResponse:
    resp = JSONResponse(body, status_code=status, headers=headers)
    resp.headers["content-type"] = PROBLEM_JSON
    return resp


def _methods_of_path(request: Request) -> set[str]:
    """The methods of every route whose path matches the request's (a 405's `Allow`)."""
    path, root = request.scope.get("path", ""), request.scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    methods: set[str] = set()
    for route in rules.routes_of(request.app):
        regex, route_methods = getattr(route, "path_regex", None), getattr(route, "methods", None)
        if regex is not None and route_methods and regex.match(path):
            methods |= set(route_methods)
    return methods


def install_error_handlers(app: FastAPI) -> None:
    """Every error of every route becomes `application/problem+json`."""

    @app.exception_handler(RegistryError)
    async def _registry_error(_req: Request, exc: RegistryError) -> JSONResponse:
        return _problem_response(exc.status, exc.problem(), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _request_error(_req: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for e in exc.errors():
            loc = [str(p) for p in e.get("loc", ())]
            errors.append(
                {
                    "pointer": "/" + "/".join(loc),
                    "message": e.get("msg", ""),
                    "keyword": e.get("type", ""),
                }
            )
        return _problem_response(
            400,
            problem_body(
                400, "Bad request", "invalid request parameters", slug="bad-request", errors=errors
            ),
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(req: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "HTTP error")
        detail = str(exc.detail) if exc.detail else title
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # the router names the methods of the one route it tried; the path may have more
            allowed = _methods_of_path(req)
            if allowed and req.method not in allowed:
                headers["Allow"] = ", ".join(sorted(allowed))
        return _problem_response(
            exc.status_code, problem_body(exc.status_code, title, detail), headers
        )

    @app.exception_handler(sa.exc.OperationalError)
    async def _db_unavailable(_req: Request, exc: sa.exc.OperationalError) -> JSONResponse:
        log.error("database error: %s", exc.orig)
        return _problem_response(
            503,
            problem_body(
                503,
                "Service unavailable",
                "the database is busy or unreachable; try again shortly",
                slug="unavailable",
            ),
            {"Retry-After": "1"},
        )

    @app.exception_handler(Exception)
    async def _unexpected(_req: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return _problem_response(
            500,
            problem_body(
                500,
                "Internal error",
                "an unexpected error happened; it has been logged",
                slug="internal",
            ),
        )


def create_app(settings: Settings | None = None, *, registry: Registry | None = None) -> FastAPI:  # noqa: C901
    """The whole web application for `settings` (or for an already opened `registry`)."""
    settings = settings or (registry.settings if registry else Settings.load())
    reg = registry or open_registry(settings)
    if settings.demo_data:
        load_demo_data(reg.services)
        if settings.demo_history:
            load_demo_history(reg)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        worker, thread = None, None
        # before the worker thread starts: what a worker is doing now is not start-up's
        freeze_after_startup(settings)
        # no plugin reacts to writes: nothing to deliver (events wait for one to be installed)
        hooks = reg.pm.hook
        if settings.inline_worker and (
            hooks.after_write.get_hookimpls() or hooks.after_write_batch.get_hookimpls()
        ):
            worker = Worker(reg, name="inline-worker", max_batch_size=settings.worker_max_batch)
            thread = worker.start_thread(settings.worker_poll_seconds)
        yield
        if worker is not None and thread is not None:
            worker.stop()
            thread.join(timeout=30)
        reg.close()

    app = FastAPI(
        title=settings.title,
        lifespan=lifespan,
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
        default_response_class=JSONResponse,
        description="Registries generated from entity schema files. Every error is "
        "`application/problem+json`.",
    )
    # the app's own routes refuse other paths cheaply (entity routes are `RuleRoute`s)
    app.router.route_class = GuardedRoute
    app.state.registry = reg
    install_error_handlers(app)
    auth = reg.auth
    # innermost: it needs the caller AuthMiddleware finds (docs/api.md, Idempotent writes)
    app.add_middleware(IdempotencyKeys, registry=reg)
    app.add_middleware(CrossSiteGuard)  # added first: runs inside AuthMiddleware
    app.add_middleware(AuthMiddleware, auth=auth)

    for service in reg.services.values():
        add_entity_routes(app.router, service.entity, max_body_bytes=settings.max_body_bytes)

    def refresh_routes(changed: set[str]) -> None:
        """After `Registry.reload_schemas`: routes of new entities, OpenAPI of changed ones."""
        for name in sorted(changed):
            fresh = APIRouter(route_class=GuardedRoute)
            add_entity_routes(
                fresh, reg.services[name].entity, max_body_bytes=settings.max_body_bytes
            )
            if reg.import_jobs is not None:
                add_entity_import_routes(fresh, name, reg.services[name].entity.title)
            swap_routes(app.router, fresh.routes)
        app.openapi_schema = None

    reg.on_reload.append(refresh_routes)

    @app.get(
        API_PREFIX,
        tags=["registry"],
        summary="The entities this registry serves",
        dependencies=[Depends(rules.public("names and titles of the entities, as in /docs"))],
    )
    def index() -> dict[str, Any]:
        return {
            "entities": [
                {"name": e.name, "title": e.title, "href": f"{API_PREFIX}/{e.name}"}
                for e in reg.schemas
            ],
            "version": __version__,
        }

    @app.get(
        "/health",
        tags=["registry"],
        summary="Liveness and database check",
        dependencies=[Depends(rules.public("load balancers probe it; it says ok or fails"))],
    )
    def health() -> dict[str, str]:
        with reg.db.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return {"status": "ok", "database": reg.db.dialect}

    assets = "/docs/assets"
    app.mount(assets, StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs-assets")
    rules.declare_route(app.routes[-1], rules.public("Swagger UI's static files"))

    @app.get(
        "/docs",
        include_in_schema=False,
        dependencies=[Depends(rules.public("the API's documentation page"))],
    )
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{settings.title} API",
            swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css",
            swagger_favicon_url=f"{assets}/favicon-32x32.png",
        )

    add_import_routes(app.router, reg)
    add_audit_routes(app.router, reg)
    add_outbox_routes(app.router, reg)
    app.include_router(auth_routes(auth))
    add_ui_routes(app, reg)
    for routers in reg.pm.hook.register_routes(registry=reg):
        for router in routers or []:
            app.include_router(router)
    reg.pm.hook.prepare_app(app=app, registry=reg)
    # a request's body has `body_timeout_seconds` to arrive; outside it, heavy requests (exports,
    # imports, large pages) wait for one of `heavy_request_limit` slots (docs/operations.md)
    serving.install(app, settings)
    heavy.install(app, settings)
    # added last: the outermost middleware, it sees every response (Swagger UI's inline script
    # is allowed by its hash on /docs only)
    app.add_middleware(SecurityHeaders, script_hashes={"/docs": script_hashes(docs().body)})
    # outside even that one: request ids, metrics and access lines; `/metrics`, `/ready`
    observability.install(app, reg)
    # each request is matched against the routes that can match its path only
    dispatch.install(app.router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        spec = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = spec.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        schemas["Problem"] = PROBLEM_SCHEMA
        # a token from /api/v1/auth/login, /auth/otp/verify or /auth/token (or the OIDC
        # provider's); anonymous callers get only the `public` operations
        components["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
        }
        # every operation states its own (`finish_operation`): public ones `[{}]`
        spec["security"] = [{"bearer": []}]
        for e in reg.schemas:
            schemas.update(entity_components(e))
        # each operation: who may call it (its route's rule), and what it really answers
        for route in rules.routes_of(app):
            if not getattr(route, "include_in_schema", False):
                continue
            path = spec["paths"].get(getattr(route, "path_format", None) or route.path, {})
            rule = rules.rule_of(route)
            access: dict[str, Any] | None = None
            if rule is not None:
                access = {"rule": rule.who, "description": rule.describe()}
                if rule.roles:
                    access["roles"] = list(rule.roles)
                if rule.entity:
                    access["entity"] = rule.entity
                    access["operation"] = rule.operation
            for method in getattr(route, "methods", None) or ():
                operation = path.get(method.lower())
                if operation is None:
                    continue
                finish_operation(
                    operation,
                    public=None if rule is None else rule.who == "public",
                    access=None if access is None else dict(access),
                    declared=getattr(route, "responses", None),
                )
        for unused in unused_components(spec, ("HTTPValidationError", "ValidationError")):
            del schemas[unused]
        idempotency.document(spec)  # the optional Idempotency-Key header of every write
        # ... and what a write with that header may answer besides (registry/idempotency.py)
        add_problems(
            spec,
            {"$ref": "#/components/parameters/IdempotencyKey"},
            {
                400: "An Idempotency-Key from an anonymous caller, or a malformed one",
                409: "A request with this Idempotency-Key still runs (Retry-After)",
                422: "This Idempotency-Key was used for another request",
            },
        )
        app.openapi_schema = spec
        return spec

    app.openapi = openapi  # type: ignore[method-assign]
    for route in app.routes:
        if getattr(route, "path", None) == app.openapi_url:
            rules.declare_route(route, rules.public("the API's description, as in /docs"))

    return app


__all__ = [
    "Registry",
    "StartupError",
    "StateKey",
    "create_app",
    "freeze_after_startup",
    "open_registry",
]
