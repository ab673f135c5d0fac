"""`GET /api/v1/audit`: the audit log, filtered, newest first, in keyset pages.

ADMIN ONLY: the route's rule (`registry.auth.rules.roles(REQUIRED_ROLE)`) answers 401 or 403
to anyone else before the handler runs.
"""

from __future__ import annotations

import base64
from datetime import UTC, date, datetime
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool

from open_registry.core.api import JSONResponse
from open_registry.core.audit.chain import AuditQuery, list_entries
from open_registry.core.auth import rules
from open_registry.core.errors import BadRequest

#: The role that may read the audit log (checked by the guard).
REQUIRED_ROLE = "system-admin"
MAX_LIMIT = 1000
FILTERS = {"entity": "entity", "recordId": "record_id", "actor": "actor", "action": "action"}
KNOWN = {*FILTERS, "from", "to", "limit", "cursor", "sort"}


def _bad(name: str, message: str, keyword: str = "type") -> BadRequest:
    return BadRequest(
        message, errors=[{"pointer": f"/{name}", "message": message, "keyword": keyword}]
    )


def _time(name: str, raw: str) -> datetime:
    try:
        if len(raw) == 10:
            d = date.fromisoformat(raw)
            return datetime(d.year, d.month, d.day, tzinfo=UTC)
        dt = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise _bad(name, f"{name} must be a date (YYYY-MM-DD) or an RFC 3339 time") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _cursor(seq: int, ascending: bool) -> str:
    raw = orjson.dumps({"after": seq, "asc": ascending})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def parse_query(params: list[tuple[str, str]]) -> AuditQuery:  # noqa: C901
    """Query parameters -> `AuditQuery`; `BadRequest` naming the parameter when one is wrong."""
    q = AuditQuery()
    seen: set[str] = set()
    for name, raw in params:
        if name not in KNOWN:
            known = ", ".join(sorted(KNOWN))
            raise _bad(name, f"unknown parameter {name!r}; parameters: {known}", "parameter")
        if name in seen:
            raise _bad(name, f"{name} is given more than once", "parameter")
        seen.add(name)
        if name in FILTERS:
            setattr(q, FILTERS[name], raw)
        elif name == "from":
            q.since = _time(name, raw)
        elif name == "to":
            q.until = _time(name, raw)
        elif name == "sort":
            if raw not in ("seq", "-seq"):
                raise _bad(name, "sort must be seq (oldest first) or -seq (newest first)", "enum")
            q.ascending = raw == "seq"
        elif name == "limit":
            try:
                q.limit = int(raw)
            except ValueError:
                raise _bad(name, "limit must be a whole number") from None
            if not 1 <= q.limit <= MAX_LIMIT:
                raise _bad(name, f"limit must be between 1 and {MAX_LIMIT}", "maximum")
    cursor = dict(params).get("cursor")
    if cursor:
        try:
            data = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
            after, asc = int(data["after"]), bool(data["asc"])
        except Exception:
            raise _bad("cursor", "this cursor is not valid (start again without it)") from None
        if asc != q.ascending:
            raise _bad("cursor", "this cursor belongs to the other sort order", "cursor")
        q.after_seq = after
    if q.since and q.until and q.since >= q.until:
        raise _bad("to", "to must be later than from", "range")
    return q


def add_audit_routes(
    router: APIRouter,
    registry: Any,
    *,
    prefix: str = "/api/v1",
) -> None:
    """Add `GET {prefix}/audit`, for `REQUIRED_ROLE` only (`registry.auth.rules`)."""

    async def audit_log(request: Request) -> JSONResponse:
        query = parse_query(list(request.query_params.multi_items()))
        items, last = await run_in_threadpool(list_entries, registry.db.engine, query)
        cursor = _cursor(last, query.ascending) if last is not None else None
        headers = {}
        if cursor:
            headers["Link"] = f'<{request.url.include_query_params(cursor=cursor)}>; rel="next"'
        return JSONResponse({"items": items, "next": cursor}, headers=headers)

    router.add_api_route(
        f"{prefix}/audit",
        audit_log,
        methods=["GET"],
        dependencies=[Depends(rules.roles(REQUIRED_ROLE))],
        tags=["audit"],
        summary="The audit log (administrators)",
        description="Who created, changed, deleted or exported what, and when; which fields "
        "changed, never their values. Filters: `entity`, `recordId`, `actor`, `action`, "
        "`from`/`to` (date or RFC 3339 time; `to` exclusive). Newest first (`sort=seq` for "
        "oldest first); `limit` (1-1000, default 100) and `cursor` (the `next` of the previous "
        "page). Each entry carries its hash in the chain; `registry audit verify` checks it.",
        response_model=None,
        openapi_extra={"parameters": PARAMETERS},
    )


def _param(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


PARAMETERS = [
    _param("entity", "Only entries about this entity", {"type": "string"}),
    _param("recordId", "Only entries about this record", {"type": "string"}),
    _param("actor", "Only entries by this actor", {"type": "string"}),
    _param("action", "Only this action (create, update, delete, export, ...)", {"type": "string"}),
    _param("from", "From this date or time (inclusive)", {"type": "string"}),
    _param("to", "Up to this date or time (exclusive)", {"type": "string"}),
    _param(
        "sort",
        "-seq: newest first (default); seq: oldest first",
        {"type": "string", "enum": ["-seq", "seq"]},
    ),
    _param("limit", "Entries per page", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}),
    _param("cursor", "The `next` of the previous page", {"type": "string"}),
]
