"""The generated REST API: `/api/v1/{entity}` CRUD + search for every loaded entity.

Request bodies are read and validated by the registry (not by pydantic models), so a schema file
is the only thing that decides what is valid; OpenAPI still shows each entity's real schema
through `openapi_extra`.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any

import anyio
import orjson
from fastapi import APIRouter, Depends, Request, Response
from fastapi.routing import APIRoute
from starlette._utils import get_route_path
from starlette.concurrency import run_in_threadpool
from starlette.responses import StreamingResponse
from starlette.routing import BaseRoute, Match
from starlette.types import Receive, Scope, Send

from open_registry.core import dispatch, storage
from open_registry.core.auth import rules
from open_registry.core.auth.deps import principal_of
from open_registry.core.auth.principal import SYSTEM
from open_registry.core.auth.rules import Rule
from open_registry.core.bodies import read_limited
from open_registry.core.codec import INT64_RANGE, fits_int64
from open_registry.core.errors import (
    BadRequest,
    Forbidden,
    NotFound,
    PreconditionFailed,
    UnsupportedMediaType,
)
from open_registry.core.gate import Gate
from open_registry.core.query import NUL_MESSAGE
from open_registry.core.records import Page
from open_registry.core.responses import JSONResponse
from open_registry.core.settings import Settings
from open_registry.generators.errors import pointer
from open_registry.generators.memo import ContentCache, canonical_key
from open_registry.generators.openapi import (
    component_name,
    condition_parameter,
    entity_responses,
    filter_parameters,
)
from open_registry.generators.schema import EntitySchema

API_PREFIX = "/api/v1"
JSON_TYPES = ("application/json", "application/merge-patch+json")
#: the role that may purge (`DELETE ...?purge=true`): removing a row for good
PURGE_ROLE = "system-admin"


def header_value(scope: Scope, name: bytes) -> str | None:
    """A request header's first value (`name` in lower case), as `request.headers.get` gives
    it, without building the request's `Headers`."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def etag(version: int) -> str:
    return f'"{version}"'


def parse_if_match(header: str | None) -> int | None:
    """The version an `If-Match` header asks for; None when absent or `*`."""
    if header is None or header.strip() == "*":
        return None
    tag = header.split(",")[0].strip()
    if tag.startswith("W/"):
        tag = tag[2:]
    try:
        return int(tag.strip('"'))
    except ValueError:
        raise PreconditionFailed(f"If-Match {header!r} is not an ETag of this record") from None


#: errors listed for one body at most (the first ones, in document order)
MAX_BODY_ERRORS = 20


def filter_params(request: Request, skip: Sequence[str] = ()) -> list[tuple[str, str]]:
    """The query parameters of a list or export request (but those in `skip`); one with no
    name (`?=x`) is a 400, as the search parser says for `?[eq]=x`."""
    params = [(k, v) for k, v in request.query_params.multi_items() if k not in skip]
    if any(not k for k, _ in params):
        message = "a filter needs a field name: write field=value or field[operator]=value"
        raise BadRequest(
            message, errors=[{"pointer": "/filters//eq", "message": message, "keyword": "field"}]
        )
    return params


def body_settings(request: Request) -> Settings:
    """The settings of the registry serving `request` (defaults outside a registry's app)."""
    registry = getattr(request.app.state, "registry", None)
    settings = getattr(registry, "settings", None)
    return settings if isinstance(settings, Settings) else Settings()


def check_body(body: Any, raw: bytes, max_depth: int) -> None:
    """Refuse (400, each place named by its JSON pointer) what no field can hold and no
    later step can read: nesting deeper than `max_depth` (the body itself is level 1; deep
    documents exhaust recursive validators and serialisers), text or member names with NUL
    (PostgreSQL stores no NUL in text or JSON), and integers beyond 64 bits (no integer column
    holds them). An integer literal beyond 64 bits reaches us as a float (orjson's way), so a
    body holding such a float is read once more to tell `1e23` (a number) from
    `100000000000000000000000` (an integer out of range)."""
    if _plainly_fine(body, raw, max_depth):
        return
    errors: list[dict[str, str]] = []
    suspects = False
    stack: list[tuple[Any, tuple[Any, ...]]] = [(body, ())]
    while stack and len(errors) < MAX_BODY_ERRORS:
        node, where = stack.pop()
        if isinstance(node, dict | list):
            if len(where) >= max_depth:
                message = f"the body nests deeper than {max_depth} levels (setting max_body_depth)"
                at = pointer(*where)
                raise BadRequest(
                    message, errors=[{"pointer": at, "message": message, "keyword": "maxDepth"}]
                )
            items = node.items() if isinstance(node, dict) else enumerate(node)
            children = []
            for key, value in items:
                if isinstance(key, str) and "\x00" in key:
                    errors.append(_nul_error(pointer(*where, key), member=True))
                children.append((value, (*where, key)))
            stack.extend(reversed(children))  # document order
        elif isinstance(node, str):
            if "\x00" in node:
                errors.append(_nul_error(pointer(*where)))
        elif isinstance(node, bool):
            continue
        elif isinstance(node, int):
            if not fits_int64(node):
                errors.append(_range_error(pointer(*where)))
        elif isinstance(node, float) and node.is_integer() and not fits_int64(node):
            suspects = True
    if suspects and len(errors) < MAX_BODY_ERRORS:
        errors.extend(_big_integer_literals(raw)[: MAX_BODY_ERRORS - len(errors)])
    if errors:
        raise BadRequest("; ".join(sorted({e["message"] for e in errors})), errors=errors)


#: what every NUL in a JSON text is written as (a raw one is invalid JSON), and the digits every
#: integer beyond 64 bits has (19 or more); either may also be text, which the full check tells
_NUL_ESCAPE = b"\\u0000"
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"0" * 9)
_LONG_NUMBER = b"0" * 19


def _plainly_fine(body: Any, raw: bytes, max_depth: int) -> bool:
    """Whether `check_body` has nothing to say, found cheaply: no NUL escape and no long run of
    digits in the text (C-speed scans), and no container deeper than `max_depth` (a walk over
    containers only). False means: look closer (it may still be fine)."""
    if _NUL_ESCAPE in raw or _LONG_NUMBER in raw.translate(_DIGITS_AS_ZERO):
        return False
    if raw.count(b"[") + raw.count(b"{") <= max_depth:  # too few brackets to nest too deep
        return True
    stack: list[tuple[Any, int]] = [(body, 1)] if type(body) in (dict, list) else []
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            return False
        for value in node.values() if type(node) is dict else node:
            if type(value) is dict or type(value) is list:
                stack.append((value, depth + 1))
    return True


def _nul_error(at: str, *, member: bool = False) -> dict[str, str]:
    message = f"a member name: {NUL_MESSAGE}" if member else NUL_MESSAGE
    return {"pointer": at, "message": message, "keyword": "nul"}


def _range_error(at: str) -> dict[str, str]:
    message = f"an integer outside the 64-bit range {INT64_RANGE}"
    return {"pointer": at, "message": message, "keyword": "maximum"}


_BIG = object()


def _big_integer_literals(raw: bytes) -> list[dict[str, str]]:
    """Errors for the integer literals of a JSON text that do not fit 64 bits."""

    def parse_int(text: str) -> Any:
        digits = text.lstrip("-")
        if len(digits) > 19:  # beyond what int() reads quickly, and beyond 64 bits anyway
            return _BIG
        value = int(text)
        return value if fits_int64(value) else _BIG

    try:
        doc = json.loads(raw, parse_int=parse_int)
    except (ValueError, RecursionError):  # orjson read it: this does not happen
        return []
    found: list[dict[str, str]] = []
    stack: list[tuple[Any, tuple[Any, ...]]] = [(doc, ())]
    while stack:
        node, where = stack.pop()
        if node is _BIG:
            found.append(_range_error(pointer(*where)))
        elif isinstance(node, dict | list):
            items = node.items() if isinstance(node, dict) else enumerate(node)
            stack.extend(reversed([(v, (*where, k)) for k, v in items]))
    return found


async def read_json(request: Request, max_bytes: int, *, patch: bool = False) -> Any:
    """The request body as JSON, with clear errors for the wrong type, size or syntax, and
    for what no field can hold (`check_body`)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in JSON_TYPES and not (ctype.endswith("+json")):
        expected = (
            "application/merge-patch+json or application/json" if patch else "application/json"
        )
        raise UnsupportedMediaType(
            f"send the body as {expected} (got {ctype or 'no content type'})"
        )
    body = await read_limited(request, max_bytes)
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(
            f"the body is not valid JSON: {exc}",
            errors=[{"pointer": "", "message": str(exc), "keyword": "json"}],
        ) from None
    check_body(value, body, body_settings(request).max_body_depth)
    return value


def _body(ref: str, media: str = "application/json") -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {media: {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
        }
    }


def swap_routes(router: APIRouter, routes: Sequence[BaseRoute]) -> None:
    """Put `routes` in place of the router's routes of the same names (or append them)."""
    names = {getattr(r, "name", None) for r in routes}
    out: list[BaseRoute] = []
    placed = False
    for r in router.routes:
        if getattr(r, "name", None) in names:
            if not placed:
                out.extend(routes)
                placed = True
            continue
        out.append(r)
    if not placed:
        out.extend(routes)
    router.routes[:] = out
    dispatch.invalidate(router)


def _inline_read(db: Any) -> bool:
    """Whether a read by id runs in the event loop rather than in a worker thread: on SQLite,
    where it is a lookup in a local file (microseconds) and handing it to a thread and back
    costs several times the read (~0.25 ms of CPU, most of such a request: docs/scaling.md).
    It reads on a connection of its own (`storage.ReadConnections`), unless a statement
    listener is on the engine: then it needs one of the pool's, and runs inline only while
    one is free (else the loop would wait for one: the thread waits). PostgreSQL's round trip
    is waited for in a thread, as every other database call."""
    if db.dialect != "sqlite":
        return False
    if not storage.pooled_one_row_reads(db.engine):
        return True
    pool = db.engine.pool
    size, busy = getattr(pool, "size", None), getattr(pool, "checkedout", None)
    return callable(size) and callable(busy) and busy() < size()


class GuardedRoute(APIRoute):
    """An API route of the app's own router (`create_app` makes it the router's route class)
    that refuses a path not starting with its literal part (up to its first parameter) without
    running its regular expression: the app tries its ~180 routes in turn, and a refusal used
    to cost about as much as a match (`docs/scaling.md`). Such a route is never in an included
    router, whose prefix would come first."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **options: Any) -> None:
        super().__init__(path, endpoint, **options)
        #: the path up to its first parameter: a path without it cannot match (`matches`)
        self.literal = self.path_format.split("{", 1)[0]

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] == "http" and not get_route_path(scope).startswith(self.literal):
            return Match.NONE, {}
        return super().matches(scope)


class RuleRoute(GuardedRoute):
    """An API route whose handler is called without FastAPI's dependency solving when all it
    takes is the request and text path parameters, and all its dependencies are `Rule`s (a
    read by id): the rules are checked, then the handler called with the path's values, which
    is what FastAPI's solving does for such a route at a quarter of its cost (`docs/scaling.md`).
    Any other route (a query or body parameter, another dependency, a typed path parameter) is
    handled by FastAPI as usual. The route, its OpenAPI and its declared rule are unchanged."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **options: Any) -> None:
        super().__init__(path, endpoint, **options)  # asks `get_route_handler`
        if self.lean is not None:
            self.app = _lean_app(self.lean)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        #: the lean handler, when the route qualifies
        self.lean = _lean_handler(self.dependant)
        return self.lean if self.lean is not None else super().get_route_handler()


def _lean_app(handler: Callable[[Request], Coroutine[Any, Any, Response]]) -> Any:
    """The ASGI app of a lean handler: FastAPI's wraps each call in two exit stacks (for
    dependencies with `yield`, which these routes have none of) and the exception handlers
    (which the app's `ExceptionMiddleware` around the router applies to what it raises)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        response = await handler(Request(scope, receive, send))
        await response(scope, receive, send)

    return app


def _lean_handler(dependant: Any) -> Callable[[Request], Coroutine[Any, Any, Response]] | None:
    """The lean handler of `dependant` (`RuleRoute`), or None when it does not qualify."""
    endpoint = dependant.call
    others = (
        dependant.query_params, dependant.header_params, dependant.cookie_params,
        dependant.body_params,
    )  # fmt: skip
    if any(others) or dependant.request_param_name != "request":
        return None
    if not inspect.iscoroutinefunction(endpoint):
        return None
    names = [(f.name, f.alias) for f in dependant.path_params]
    if any(getattr(getattr(f, "field_info", None), "annotation", None) is not str
           for f in dependant.path_params):  # fmt: skip
        return None
    checks: list[Rule] = []
    for sub in dependant.dependencies:
        if not isinstance(sub.call, Rule) or sub.dependencies or sub.path_params:
            return None
        checks.append(sub.call)
    names_used = {"request", *(name for name, _ in names)}
    if set(inspect.signature(endpoint).parameters) != names_used:
        return None

    async def handler(request: Request) -> Response:
        for rule in checks:
            rule.check(request)
        values = request.path_params
        return await endpoint(request, **{name: values[alias] for name, alias in names})

    return handler


#: the routes of an entity, by what they are made of (`entity_routes`)
_ROUTES: ContentCache[tuple[BaseRoute, ...]] = ContentCache(512)


def add_entity_routes(router: APIRouter, entity: EntitySchema, *, max_body_bytes: int) -> None:
    """Add all routes of one entity to `router` (the app's own router, so they stay flat).

    Each request uses the entity's service of that moment in the app's registry
    (`request.app.state.registry`), so a schema reloaded without a restart is served at once.
    Every route checks the caller (`request.state.principal`, anonymous when none) against the
    entity's access rules: rows outside the caller's scope are not found, private fields left
    out where the caller has no grant.

    The routes hold no registry, so the routes of one entity definition are built once per
    process (FastAPI's analysis of ~10 routes per entity is most of an app's start-up) and
    shared by every app that serves it.
    """
    key = canonical_key(entity.name, entity.title, filter_parameters(entity), max_body_bytes)
    router.routes.extend(_ROUTES.get(key, lambda: _entity_routes(entity, max_body_bytes)))


def _entity_routes(  # noqa: C901
    entity: EntitySchema, max_body_bytes: int
) -> tuple[BaseRoute, ...]:
    router = APIRouter(default_response_class=JSONResponse, route_class=RuleRoute)
    name = entity.name

    def gate(request: Request) -> Gate:
        """The entity's records as the caller (`request.state.principal`) may use them."""
        registry = request.app.state.registry
        svc = registry.services.get(name)
        if svc is None:
            raise NotFound(f"no entity {name!r}")
        return Gate(svc, registry.auth.policy(svc.entity), principal_of(request))

    comp = component_name(name)
    base = f"{API_PREFIX}/{name}"
    tags: list[str | Any] = [name]

    def record_response(record: dict[str, Any], status: int = 200) -> JSONResponse:
        headers = {"ETag": etag(record["_version"])}
        if status == 201:
            headers["Location"] = f"{base}/{record['id']}"
        return JSONResponse(record, status_code=status, headers=headers)

    def page_response(request: Request, page: Page) -> JSONResponse:
        body: dict[str, Any] = {"items": page.items, "next": page.next_cursor}
        if page.total is not None:
            body["total"] = page.total
        headers = {}
        if page.next_cursor and request.method == "GET":
            url = request.url.include_query_params(cursor=page.next_cursor)
            headers["Link"] = f'<{url}>; rel="next"'
        return JSONResponse(body, headers=headers)

    async def create(request: Request) -> Response:
        g = gate(request)
        g.scope("create")  # 401/403 before the body is read
        body = await read_json(request, max_body_bytes)
        record = await run_in_threadpool(g.create, body)
        return record_response(record, 201)

    async def list_(request: Request) -> Response:
        g = gate(request)
        g.scope("read")
        search = g.service.parser.from_params(filter_params(request))
        return page_response(request, await run_in_threadpool(g.search, search))

    async def search(request: Request) -> Response:
        g = gate(request)
        g.scope("read")
        search = g.service.parser.from_body(await read_json(request, max_body_bytes))
        return page_response(request, await run_in_threadpool(g.search, search))

    async def export_(request: Request) -> Response:
        from open_registry.core.exports import EXPORT_FORMATS, Exporter

        g = gate(request)
        scope = g.scope("read")
        fmt = request.query_params.get("format", "csv")
        if fmt not in EXPORT_FORMATS:
            raise BadRequest(f"format must be one of {', '.join(EXPORT_FORMATS)}")
        where = [f"{k}={v}" for k, v in filter_params(request, skip=("format",))]
        access, p = g.access, g.principal
        exporter = Exporter(
            g.service,
            where,
            scope=scope,
            view=g.view,
            hide=access.private if access.never_sees_private(p) else (),
        )
        g.check_filters(exporter.search, scope)

        chunks = exporter.stream(fmt, where=where, actor=p.actor)

        async def body() -> AsyncIterator[bytes]:
            # each chunk is read in a thread (database, CSV); closing the iterator there too
            # ends the snapshot and audits the export, also when the client went away
            try:
                while (chunk := await run_in_threadpool(next, chunks, None)) is not None:
                    yield chunk.encode()
            finally:
                with anyio.CancelScope(shield=True):
                    await run_in_threadpool(chunks.close)

        media = "text/csv" if fmt == "csv" else "application/x-ndjson"
        return StreamingResponse(
            body(),
            media_type=f"{media}; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}.{fmt}"'},
        )

    async def read(request: Request, id: str) -> Response:
        g = gate(request)
        if _inline_read(request.app.state.registry.db):
            record = g.get(id)
        else:
            record = await g.get_async(id)
        if header_value(request.scope, b"if-none-match") == etag(record["_version"]):
            return Response(status_code=304, headers={"ETag": etag(record["_version"])})
        return record_response(record)

    async def change(request: Request, id: str, *, patch: bool) -> Response:
        g = gate(request)
        g.scope("update")
        body = await read_json(request, max_body_bytes, patch=patch)
        version = parse_if_match(request.headers.get("if-match"))
        record = await run_in_threadpool(g.update, id, body, if_match=version, patch=patch)
        return record_response(record)

    async def replace(request: Request, id: str) -> Response:
        return await change(request, id, patch=False)

    async def patch(request: Request, id: str) -> Response:
        return await change(request, id, patch=True)

    async def delete(request: Request, id: str, purge: bool = False) -> Response:
        g = gate(request)
        g.scope("delete")
        if purge and g.principal.kind != SYSTEM and not g.principal.has(PURGE_ROLE):
            raise Forbidden(
                f"purge=true removes the record for good: only {PURGE_ROLE} may; "
                "leave it out to delete (soft)",
                errors=[{"pointer": "/purge", "message": f"only {PURGE_ROLE} may purge",
                         "keyword": "forbidden"}],
            )  # fmt: skip
        version = parse_if_match(request.headers.get("if-match"))
        await run_in_threadpool(g.delete, id, if_match=version, purge=purge)
        return Response(status_code=204)

    title = entity.title

    def rule_for(operation: str, record: str | None = None) -> Rule:
        return rules.entity(name, operation, record=record)

    router.add_api_route(
        base,
        create,
        methods=["POST"],
        dependencies=[Depends(rule_for("create"))],
        tags=tags,
        status_code=201,
        name=f"create_{name}",
        summary=f"Create a {title}",
        response_class=JSONResponse,
        openapi_extra=_body(f"{comp}Input"),
        responses=entity_responses(name, "create"),
    )
    router.add_api_route(
        base,
        list_,
        methods=["GET"],
        dependencies=[Depends(rule_for("read"))],
        tags=tags,
        name=f"list_{name}",
        summary=f"List and filter {title}",
        response_class=JSONResponse,
        openapi_extra={"parameters": filter_parameters(entity)},
        responses=entity_responses(name, "list"),
    )
    router.add_api_route(
        f"{base}/search",
        search,
        methods=["POST"],
        dependencies=[Depends(rule_for("read"))],
        tags=tags,
        name=f"search_{name}",
        summary=f"Search {title}",
        response_class=JSONResponse,
        openapi_extra=_body(f"{comp}Search"),
        responses=entity_responses(name, "search"),
    )
    router.add_api_route(  # before /{id}: "export" is not an id
        f"{base}/export",
        export_,
        methods=["GET"],
        dependencies=[Depends(rule_for("read"))],
        tags=tags,
        name=f"export_{name}",
        summary=f"Export {title} as CSV or JSON Lines (the rows and fields you may read)",
        openapi_extra={
            "parameters": [
                {"name": "format", "in": "query", "schema": {"enum": ["csv", "jsonl"]}},
                *filter_parameters(entity),
            ]
        },
        responses=entity_responses(name, "export"),
    )
    router.add_api_route(
        f"{base}/{{id}}",
        read,
        methods=["GET"],
        dependencies=[Depends(rule_for("read", record="id"))],
        tags=tags,
        name=f"read_{name}",
        summary=f"Read a {title}",
        response_class=JSONResponse,
        openapi_extra={"parameters": [condition_parameter("If-None-Match")]},
        responses=entity_responses(name, "read"),
    )
    router.add_api_route(
        f"{base}/{{id}}",
        replace,
        methods=["PUT"],
        dependencies=[Depends(rule_for("update", record="id"))],
        tags=tags,
        name=f"replace_{name}",
        summary=f"Replace a {title}",
        response_class=JSONResponse,
        openapi_extra={
            **_body(f"{comp}Input"),
            "parameters": [condition_parameter("If-Match")],
        },
        responses=entity_responses(name, "replace"),
    )
    router.add_api_route(
        f"{base}/{{id}}",
        patch,
        methods=["PATCH"],
        dependencies=[Depends(rule_for("update", record="id"))],
        tags=tags,
        name=f"patch_{name}",
        summary=f"Change fields of a {title} (JSON merge patch)",
        response_class=JSONResponse,
        openapi_extra={
            **_body(f"{comp}Patch", "application/merge-patch+json"),
            "parameters": [condition_parameter("If-Match")],
        },
        responses=entity_responses(name, "patch"),
    )
    router.add_api_route(
        f"{base}/{{id}}",
        delete,
        methods=["DELETE"],
        dependencies=[Depends(rule_for("delete", record="id"))],
        tags=tags,
        status_code=204,
        name=f"delete_{name}",
        summary=f"Delete a {title} (soft; purge=true removes it)",
        description=(
            "Without `purge`: a soft delete (the record is no longer found; its row stays). "
            f"With `purge=true` ({PURGE_ROLE} only): the row is removed for good, a live record "
            "or one deleted before; the audit log records the purge."
        ),
        openapi_extra={"parameters": [condition_parameter("If-Match")]},
        responses=entity_responses(name, "delete"),
    )
    return tuple(router.routes)
