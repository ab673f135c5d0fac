"""The generated REST API: `/api/v1/{entity}` CRUD + search for every loaded entity.

Request bodies are read and validated by the registry (not by pydantic models), so a schema file
is the only thing that decides what is valid; OpenAPI still shows each entity's real schema
through `openapi_extra`.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.routing import BaseRoute

from open_registry.core.auth import rules
from open_registry.core.auth.access import Policy
from open_registry.core.auth.deps import principal_of
from open_registry.core.auth.rules import Rule
from open_registry.core.errors import (
    PROBLEM_JSON,
    BadRequest,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    UnsupportedMediaType,
)
from open_registry.core.gate import Gate
from open_registry.core.records import EntityService, Page
from open_registry.core.responses import JSONResponse
from open_registry.generators.openapi import component_name, filter_parameters

API_PREFIX = "/api/v1"
JSON_TYPES = ("application/json", "application/merge-patch+json")


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


async def read_json(request: Request, max_bytes: int, *, patch: bool = False) -> Any:
    """The request body as JSON, with clear errors for the wrong type, size or syntax."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in JSON_TYPES and not (ctype.endswith("+json")):
        expected = (
            "application/merge-patch+json or application/json" if patch else "application/json"
        )
        raise UnsupportedMediaType(
            f"send the body as {expected} (got {ctype or 'no content type'})"
        )
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"the body is larger than {max_bytes} bytes")
    body = await request.body()
    if len(body) > max_bytes:
        raise PayloadTooLarge(f"the body is larger than {max_bytes} bytes")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(
            f"the body is not valid JSON: {exc}",
            errors=[{"pointer": "", "message": str(exc), "keyword": "json"}],
        ) from None


def _responses(name: str, *codes: int) -> dict[int | str, dict[str, Any]]:
    problem = {"content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
    descriptions = {
        400: "Bad request",
        401: "Sign-in needed (a bearer token)",
        403: "Your roles may not do this",
        404: "Not found (or outside your scope)",
        409: "Conflict (unique field taken)",
        412: "Stale If-Match",
        413: "Body too large",
        415: "Not JSON",
        422: "Validation failed: every failing field listed",
    }
    return {c: {"description": descriptions[c], **problem} for c in (*codes, 401, 403)}


def _body(ref: str, media: str = "application/json") -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {media: {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
        }
    }


def _ok(ref: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
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


def add_entity_routes(  # noqa: C901
    router: APIRouter,
    service: EntityService,
    *,
    max_body_bytes: int,
    services: Mapping[str, EntityService] | None = None,
    policy: Policy | None = None,
) -> None:
    """Add all routes of one entity to `router` (the app's own router, so they stay flat).

    With `services` (the registry's live mapping) each request uses the entity's service of
    that moment, so a schema reloaded without a restart is served at once. Every route checks
    the caller (`request.state.principal`, anonymous when none) against the entity's access
    rules: rows outside the caller's scope are not found, private fields left out where the
    caller has no grant.
    """
    policy = policy or Policy()
    entity = service.entity
    name = entity.name

    def current() -> EntityService:
        if services is None:
            return service
        found = services.get(name)
        if found is None:
            raise NotFound(f"no entity {name!r}")
        return found

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

    def gate(request: Request) -> Gate:
        """The entity's records as the caller (`request.state.principal`) may use them."""
        svc = current()
        return Gate(svc, policy(svc.entity), principal_of(request))

    async def create(request: Request) -> Response:
        g = gate(request)
        g.scope("create")  # 401/403 before the body is read
        body = await read_json(request, max_body_bytes)
        record = await run_in_threadpool(g.create, body)
        return record_response(record, 201)

    async def list_(request: Request) -> Response:
        g = gate(request)
        g.scope("read")
        search = g.service.parser.from_params(list(request.query_params.multi_items()))
        return page_response(request, await run_in_threadpool(g.search, search))

    async def search(request: Request) -> Response:
        g = gate(request)
        g.scope("read")
        search = g.service.parser.from_body(await read_json(request, max_body_bytes))
        return page_response(request, await run_in_threadpool(g.search, search))

    async def export_(request: Request) -> Response:
        from open_registry.core.exports import EXPORT_FORMATS, Exporter, export

        g = gate(request)
        scope = g.scope("read")
        fmt = request.query_params.get("format", "csv")
        if fmt not in EXPORT_FORMATS:
            raise BadRequest(f"format must be one of {', '.join(EXPORT_FORMATS)}")
        where = [f"{k}={v}" for k, v in request.query_params.multi_items() if k not in ("format",)]
        access, p = g.access, g.principal
        exporter = Exporter(
            g.service,
            where,
            scope=scope,
            view=g.view,
            hide=access.private if access.never_sees_private(p) else (),
        )
        g.check_filters(exporter.search, scope)

        def run() -> str:
            out = io.StringIO()
            export(g.service, out, fmt, where, actor=p.actor, exporter=exporter)
            return out.getvalue()

        text = await run_in_threadpool(run)
        media = "text/csv" if fmt == "csv" else "application/x-ndjson"
        return Response(
            text,
            media_type=f"{media}; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}.{fmt}"'},
        )

    async def read(request: Request, id: str) -> Response:
        record = await run_in_threadpool(gate(request).get, id)
        if request.headers.get("if-none-match") == etag(record["_version"]):
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
        openapi_extra={
            **_body(f"{comp}Input"),
            "responses": {"201": _ok(comp, "Created; Location and ETag headers set")},
        },
        responses=_responses(comp, 400, 409, 413, 415, 422),
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
        openapi_extra={
            "parameters": filter_parameters(entity),
            "responses": {"200": _ok(f"{comp}Page", "A page of records")},
        },
        responses=_responses(comp, 400),
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
        openapi_extra={
            **_body(f"{comp}Search"),
            "responses": {"200": _ok(f"{comp}Page", "A page of records")},
        },
        responses=_responses(comp, 400, 413, 415),
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
        responses=_responses(comp, 400),
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
        openapi_extra={"responses": {"200": _ok(comp, "The record")}},
        responses=_responses(comp, 404),
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
            "responses": {"200": _ok(comp, "The record after the change")},
        },
        responses=_responses(comp, 400, 404, 409, 412, 413, 415, 422),
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
            "responses": {"200": _ok(comp, "The record after the change")},
        },
        responses=_responses(comp, 400, 404, 409, 412, 413, 415, 422),
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
        responses=_responses(comp, 404, 412),
    )
