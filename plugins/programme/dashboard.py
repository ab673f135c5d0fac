"""The monitoring dashboard: `GET /api/v1/analytics[/{table}]` (JSON, or CSV with `.csv` or
`?format=csv`) and the page `/ui/dashboard` (server-rendered, charts as inline SVG, every table
downloadable as CSV at `/ui/dashboard/{table}.csv`). Both read the rollups only. Every route
declares the rule `access.MONITORS` (monitoring, controller, system-admin); the page checks it
itself (`rules.declare`) to send anonymous visitors to sign in."""

from __future__ import annotations

from datetime import date
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool
from starlette.routing import BaseRoute

from open_registry.core import Forbidden, NotFound, Unauthorized, storage, utcnow
from open_registry.core.api import JSONResponse
from open_registry.core.auth import rules
from open_registry.plugins.programme import charts
from open_registry.plugins.programme.access import MONITORS
from open_registry.plugins.programme.analytics import TABLES, Analytics, Period, Table, period
from open_registry.plugins.programme.runtime import runtime
from open_registry.plugins.programme.verifications import flush

API = "/api/v1/analytics"
PAGE = "/ui/dashboard"
#: tables drawn on the page, in order (the others are linked as CSV)
SHOWN_ROWS = 15


def _csv(table: Table) -> Response:
    return Response(
        table.csv(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{table.name}.csv"'},
    )


def _compute(registry: Any, when: Period, today: date, names: tuple[str, ...]) -> dict[str, Table]:
    rt = runtime(registry)
    if "verifications" in names:
        flush(rt)  # the counts kept in memory, before the read's snapshot begins
    with storage.read(registry.db.engine) as conn:
        analytics = Analytics(rt, conn, when, today)
        return {name: analytics.table(name) for name in names}


def analytics_routes(registry: Any) -> APIRouter:
    router = APIRouter(tags=["analytics"])

    def today() -> date:
        return runtime(registry).config.local_day(utcnow())

    def when(request: Request) -> Period:
        q = request.query_params
        return period(today(), q.get("from"), q.get("to"), q.get("program"))

    @router.get(
        API,
        dependencies=[Depends(MONITORS)],
        summary="Every aggregate of the dashboard for a period (monitoring)",
    )
    async def all_tables(request: Request) -> Response:
        p = when(request)
        tables = await run_in_threadpool(_compute, registry, p, today(), TABLES)
        return JSONResponse(
            {"period": p.query(), "tables": {n: t.as_dict() for n, t in tables.items()}}
        )

    @router.get(
        API + "/{name}",
        dependencies=[Depends(MONITORS)],
        summary="One aggregate as JSON, or CSV (`.csv` or `?format=csv`)",
    )
    async def one_table(request: Request, name: str) -> Response:
        as_csv = name.endswith(".csv") or request.query_params.get("format") == "csv"
        name = name.removesuffix(".csv")
        if name not in TABLES:
            raise NotFound(f"no aggregate {name!r}; known: {', '.join(TABLES)}")
        p = when(request)
        table = (await run_in_threadpool(_compute, registry, p, today(), (name,)))[name]
        return _csv(table) if as_csv else JSONResponse({"period": p.query(), **table.as_dict()})

    return router


def _charts(tables: dict[str, Table]) -> dict[str, str]:
    daily = tables["daily"].rows
    certs = tables["certificates"].rows
    aefi = tables["side_effects"].rows
    labels = [r[0][5:] for r in daily]
    people = tables["people"].rows
    states = tables["states"].rows[:SHOWN_ROWS]
    progs = tables["programmes"].rows[:SHOWN_ROWS]
    util = sorted(tables["utilisation"].rows, key=lambda r: -(r[8] or 0))[:SHOWN_ROWS]
    return {
        "daily": charts.columns(
            "c-daily", "Vaccinations per day", labels, [("vaccinations", [r[1] for r in daily])]
        ),
        "states": charts.bars(
            "c-states",
            "Vaccinations by state",
            [r[0] or "(none)" for r in states],
            [r[1] for r in states],
        ),
        "programmes": charts.bars(
            "c-programmes",
            "Vaccinations by programme, vaccine and dose",
            [f"{p} {v} dose {d}" for p, v, d, _ in progs],
            [r[3] for r in progs],
        ),
        "people": charts.bars(
            "c-people",
            "Vaccinations by gender and age band",
            [f"{g} {b}" for g, b, _ in people],
            [r[2] for r in people],
        ),
        "certificates": charts.columns(
            "c-certs",
            "Certificates per day",
            labels,
            [
                (k, [r[i + 1] for r in certs])
                for i, k in enumerate(("issued", "corrected", "revoked"))
            ],
        ),
        "side_effects": charts.columns(
            "c-aefi",
            "Side-effect reports per day",
            labels,
            [("reports", [r[1] for r in aefi]), ("serious", [r[2] for r in aefi])],
        ),
        "utilisation": charts.bars(
            "c-util",
            "Today's vaccinations against the daily rate (%)",
            [f"{r[0]} {r[1]}" for r in util],
            [r[8] or 0 for r in util],
            unit="%",
        ),
    }


def add_dashboard_page(app: FastAPI, registry: Any) -> None:
    """Mount `/ui/dashboard` ahead of the generated `/ui/{entity}` pages."""
    ui = getattr(app.state, "ui", None)
    if ui is None:
        return

    @rules.declare(MONITORS)
    async def page(request: Request) -> Response:
        view = ui.page(request)
        try:
            MONITORS.check(request)
        except Unauthorized:  # not signed in: the sign-in page, then back here
            target = urlencode({"next": request.url.path})
            return RedirectResponse(f"{ui.prefix}/login?{target}", 303)
        except Forbidden:
            return ui.error_page(view, 403, "The dashboard is for the monitoring role.")
        rt = runtime(registry)
        today = rt.config.local_day(utcnow())
        q = request.query_params
        try:
            p = period(today, q.get("from"), q.get("to"), q.get("program"))
        except Exception as exc:  # shown on the page, with the form to fix it
            return ui.error_page(
                view,
                400,
                getattr(exc, "detail", str(exc))
                + ": "
                + "; ".join(
                    f"{e['pointer'][1:]} {e['message']}" for e in getattr(exc, "errors", []) or []
                ),
            )
        tables = await run_in_threadpool(_compute, registry, p, today, TABLES)
        totals = {
            "vaccinations": sum(r[1] for r in tables["daily"].rows),
            "certificates": sum(r[1] + r[2] for r in tables["certificates"].rows),
            "revoked": sum(r[3] for r in tables["certificates"].rows),
            "verifications": sum(r[1] for r in tables["verifications"].rows),
            "side_effects": sum(r[1] for r in tables["side_effects"].rows),
            "serious": sum(r[2] for r in tables["side_effects"].rows),
            "low_stock": len(tables["low_stock"].rows),
        }
        programs = sorted(
            {r[0] for r in tables["programmes"].rows} | ({p.program} if p.program else set())
        )
        query = "&".join(f"{k}={v}" for k, v in p.query().items())
        return ui.html(
            view,
            "programme/dashboard.html",
            period=p,
            programs=programs,
            tables=tables,
            charts=_charts(tables),
            totals=totals,
            shown=SHOWN_ROWS,
            query=query,
            page_url=PAGE,
        )

    async def csv_file(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in TABLES:
            raise NotFound(f"no table {name!r}")
        rt = runtime(registry)
        today = rt.config.local_day(utcnow())
        q = request.query_params
        p = period(today, q.get("from"), q.get("to"), q.get("program"))
        table = (await run_in_threadpool(_compute, registry, p, today, (name,)))[name]
        return _csv(table)

    app.add_api_route(
        PAGE,
        page,
        methods=["GET"],
        include_in_schema=False,
        response_class=HTMLResponse,
        name="ui:dashboard",
    )
    app.add_api_route(
        PAGE + "/{name}.csv",
        csv_file,
        methods=["GET"],
        dependencies=[Depends(MONITORS)],
        include_in_schema=False,
        name="ui:dashboard_csv",
    )
    _move_first(app, {"ui:dashboard", "ui:dashboard_csv"})


def _move_first(app: FastAPI, names: set[str]) -> None:
    """Put the named routes before the others (`/ui/{entity}` would catch them otherwise)."""
    routes: list[BaseRoute] = app.router.routes
    mine = [r for r in routes if getattr(r, "name", None) in names]
    rest = [r for r in routes if getattr(r, "name", None) not in names]
    routes[:] = [*mine, *rest]
