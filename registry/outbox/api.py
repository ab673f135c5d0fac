"""The outbox seen by administrators: events and deliveries by status (dead ones above all), and
putting dead ones back in the queue.

- `GET /api/v1/outbox?status=dead` events; `POST /api/v1/outbox/{seq}/retry`, `.../retry-dead`;
- `GET /api/v1/outbox/deliveries?status=dead&sink=...` deliveries (SMS, email, webhooks, vault);
  `POST /api/v1/outbox/deliveries/{id}/retry`, `POST /api/v1/outbox/deliveries/retry-dead`.

ADMIN ONLY: every route calls `guard(request, REQUIRED_ROLE)` first; authentication supplies the
guard (it raises `Forbidden`/`Unauthorized`). Until then the routes are as open as every other.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import orjson
import sqlalchemy as sa
from fastapi import APIRouter, Depends, Path, Request
from fastapi.concurrency import run_in_threadpool

from open_registry.core.api import JSONResponse
from open_registry.core.auth import rules
from open_registry.core.codec import camel, format_datetime
from open_registry.core.errors import BadRequest, Conflict, NotFound
from open_registry.core.outbox import deliveries
from open_registry.core.outbox import worker as outbox

#: The role that may see and retry the outbox (checked by the guard once roles exist).
REQUIRED_ROLE = "system-admin"
MAX_LIMIT = 1000
EVENT_STATUSES = ("pending", "done", "dead")


#: an event's or a delivery's number in a path: a 64-bit row id (beyond it: 400, not a 500)
RowNumber = Annotated[int, Path(ge=1, le=2**63 - 1)]


def _bad(name: str, message: str, keyword: str = "type") -> BadRequest:
    return BadRequest(
        message, errors=[{"pointer": f"/{name}", "message": message, "keyword": keyword}]
    )


def _camel(row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in row.items():
        out[camel(key)] = format_datetime(value) if isinstance(value, datetime) else value
    return out


def _paging(request: Request, statuses: tuple[str, ...], extra: tuple[str, ...] = ()) -> Any:
    params = request.query_params
    known = {"status", "limit", "after", *extra}
    for name in params:
        if name not in known:
            raise _bad(name, f"unknown parameter {name!r}; parameters: {', '.join(sorted(known))}")
    status = params.get("status")
    if status is not None and status not in statuses:
        raise _bad("status", f"status must be one of {', '.join(statuses)}", "enum")
    try:
        limit = int(params.get("limit", "100"))
    except ValueError:
        raise _bad("limit", "limit must be a whole number") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise _bad("limit", f"limit must be between 1 and {MAX_LIMIT}", "maximum")
    after_raw = params.get("after")
    try:
        after = int(after_raw) if after_raw is not None else None
    except ValueError:
        raise _bad("after", "after must be a whole number (the last seq or id seen)") from None
    return status, limit, after


async def _options(request: Request, known: tuple[str, ...] = ()) -> dict[str, Any]:
    """A POST's optional JSON object body (empty is fine); 400 naming what is wrong."""
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _bad("", "the request body is not valid JSON", "json") from None
    if not isinstance(body, dict):
        raise _bad("", "the request body must be a JSON object", "type")
    for name in body:
        if name not in known:
            allowed = ", ".join(known) or "none"
            raise _bad(name, f"unknown field {name!r}; fields: {allowed}", "additionalProperties")
    return body


def _deliveries(
    registry: Any, status: str | None, sink: str | None, limit: int, after: int | None
) -> list[dict[str, Any]]:
    t = deliveries.delivery_table(registry.db.metadata)
    cols = [c for c in t.c if c.name != "payload"]
    stmt = sa.select(*cols).order_by(t.c.id).limit(limit)
    if status:
        stmt = stmt.where(t.c.status == status)
    if sink:
        stmt = stmt.where(t.c.sink == sink)
    if after is not None:
        stmt = stmt.where(t.c.id > after)
    with registry.db.engine.connect() as conn:
        return [dict(r) for r in conn.execute(stmt).mappings()]


def add_outbox_routes(
    router: APIRouter,
    registry: Any,
    *,
    prefix: str = "/api/v1",
) -> None:
    """Add the outbox routes, each for `REQUIRED_ROLE` only (`registry.auth.rules`)."""
    rule = rules.roles(REQUIRED_ROLE)

    async def events(request: Request) -> JSONResponse:
        status, limit, after = _paging(request, EVENT_STATUSES)
        items = await run_in_threadpool(
            outbox.list_events, registry, status, limit=limit, after=after
        )
        counts = await run_in_threadpool(outbox.counts, registry)
        nxt = items[-1]["seq"] if len(items) == limit else None
        return JSONResponse({"counts": counts, "items": [_camel(i) for i in items], "next": nxt})

    async def retry_event(request: Request, seq: RowNumber) -> JSONResponse:
        await _options(request)
        try:
            event = await run_in_threadpool(outbox.retry_event, registry, seq)
        except ValueError as exc:
            raise Conflict(str(exc), fields=["status"]) from None
        if event is None:
            raise NotFound(f"no outbox event with seq {seq}")
        return JSONResponse(_camel(event))

    async def retry_dead_events(request: Request) -> JSONResponse:
        await _options(request)
        return JSONResponse({"queued": await run_in_threadpool(outbox.retry_dead, registry)})

    async def delivery_list(request: Request) -> JSONResponse:
        status, limit, after = _paging(request, deliveries.STATUSES, ("sink",))
        sink = request.query_params.get("sink")
        items = await run_in_threadpool(_deliveries, registry, status, sink, limit, after)
        counts = await run_in_threadpool(deliveries.counts, registry)
        nxt = items[-1]["id"] if len(items) == limit else None
        return JSONResponse({"counts": counts, "items": [_camel(i) for i in items], "next": nxt})

    async def retry_delivery(request: Request, delivery_id: RowNumber) -> JSONResponse:
        await _options(request)
        found = await run_in_threadpool(_deliveries, registry, None, None, 1, delivery_id - 1)
        if not found or found[0]["id"] != delivery_id:
            raise NotFound(f"no delivery with id {delivery_id}")
        if found[0]["status"] != "dead":
            raise Conflict(
                f"delivery {delivery_id} is {found[0]['status']}, not dead: nothing to retry",
                fields=["status"],
            )
        await run_in_threadpool(deliveries.retry, registry, delivery_id)
        found = await run_in_threadpool(_deliveries, registry, None, None, 1, delivery_id - 1)
        return JSONResponse(_camel(found[0]))

    async def retry_dead_deliveries(request: Request) -> JSONResponse:
        sink = (await _options(request, ("sink",))).get("sink")
        if sink is not None and not isinstance(sink, str):
            raise _bad("sink", "sink must be a string (the sender's name)")
        queued = await run_in_threadpool(deliveries.retry, registry, None, sink)
        return JSONResponse({"queued": queued})

    routes: list[tuple[str, Any, str, str]] = [
        ("/outbox", events, "GET", "Outbox events by status (administrators)"),
        ("/outbox/retry-dead", retry_dead_events, "POST", "Queue every dead event again"),
        ("/outbox/{seq}/retry", retry_event, "POST", "Queue one dead event again"),
        ("/outbox/deliveries", delivery_list, "GET", "Deliveries (SMS, email, webhooks, ...)"),
        (
            "/outbox/deliveries/retry-dead",
            retry_dead_deliveries,
            "POST",
            "Queue every dead delivery again",
        ),
        (
            "/outbox/deliveries/{delivery_id}/retry",
            retry_delivery,
            "POST",
            "Queue one dead delivery again",
        ),
    ]
    for path, endpoint, method, summary in routes:
        router.add_api_route(
            prefix + path,
            endpoint,
            methods=[method],
            dependencies=[Depends(rule)],
            tags=["outbox"],
            summary=summary,
            response_model=None,
        )
