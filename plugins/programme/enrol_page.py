"""`/ui/enrol`: where a person who signed up with a one-time code enrols themselves (the
recipient form the schema generates, without the fields the registry sets) or claims the record
an agency pre-enrolled them with (enrolment code and mobile number). Same rules as
`POST /api/v1/programme/enrol[/claim]`; on success the session names the record and the person
lands on their record's page. The page declares the rule `access.SIGNED_UP` (the recipient
role) and checks it itself (`rules.declare`): anonymous visitors are sent to sign in."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from open_registry.core import Forbidden, RegistryError, Unauthorized
from open_registry.core.auth import rules
from open_registry.core.auth.routes import set_session
from open_registry.core.ui.pages import rows_changed
from open_registry.core.ui.render import FormView, render_form
from open_registry.core.ui.requests import read_form, same_origin
from open_registry.generators.formdata import errors_by_name, form_to_json
from open_registry.plugins.programme import enrolment
from open_registry.plugins.programme.access import RECIPIENT, SIGNED_UP
from open_registry.plugins.programme.dashboard import _move_first
from open_registry.plugins.programme.runtime import RECIPIENT as RECIPIENT_ENTITY
from open_registry.plugins.programme.runtime import runtime

PAGE = "/ui/enrol"
#: set by the registry, never asked for on the page
SERVER_FIELDS = ("enrollmentCode", "enrollmentType")


def add_enrol_page(app: FastAPI, registry: Any) -> None:
    """Mount `/ui/enrol` ahead of the generated `/ui/{entity}` pages."""
    ui = getattr(app.state, "ui", None)
    if ui is None or RECIPIENT_ENTITY not in registry.services:
        return
    max_bytes = registry.settings.max_body_bytes

    def form_fields(locale: str) -> tuple[Any, ...]:
        entity = registry.services[RECIPIENT_ENTITY].entity
        return tuple(f for f in ui.fields(entity, locale) if f.key not in SERVER_FIELDS)

    def render(view: Any, status: int = 200, **context: Any) -> HTMLResponse:
        fields = form_fields(view.locale)
        form = FormView(fields, context.pop("values", {}), context.pop("errors", {}), {}, new=True)
        return ui.html(
            view,
            "programme/enrol.html",
            status,
            form_html=render_form(ui.env, form, view.t, action=PAGE),
            claim=context.pop("claim", {}),
            claim_error=context.pop("claim_error", None),
            **context,
        )

    @rules.declare(SIGNED_UP)
    async def page(request: Request) -> Response:
        view = ui.page(request)
        try:
            who = SIGNED_UP.check(request)
        except Unauthorized:
            target = urlencode({"next": PAGE})
            return RedirectResponse(f"{ui.prefix}/login?{target}", 303)
        except Forbidden:
            who = None
        if who is None or who.roles != {RECIPIENT}:
            return ui.error_page(
                view,
                403,
                "This page is for people enrolling themselves after signing in with a code. "
                "Staff enrol people on the recipient pages or at a walk-in.",
            )
        if who.recipient:
            return RedirectResponse(f"{ui.prefix}/{RECIPIENT_ENTITY}/{who.recipient}", 303)
        if request.method == "GET":
            return render(view)
        if not same_origin(request):
            return ui.error_page(view, 403, view.t("error.forbidden"))
        pairs = await read_form(request, max_bytes)
        changed = rows_changed(pairs)  # a row added or removed (no JavaScript)
        if changed is not None:
            return render(view, values=changed)
        form = dict(pairs)
        rt = runtime(registry)
        if form.get("_mode") == "claim":
            claim = {k: form.get(k, "") for k in ("enrollmentCode", "phone")}
            try:
                record, linked = await run_in_threadpool(
                    enrolment.claim_enrolment, rt, who, claim["enrollmentCode"], claim
                )
            except RegistryError as exc:
                return render(view, exc.status, claim=claim, claim_error=exc.detail)
        else:
            fields = form_fields(view.locale)
            body, kept = form_to_json(fields, pairs)
            try:
                record, linked = await run_in_threadpool(enrolment.enrol_self, rt, who, body)
            except RegistryError as exc:
                whole = [{"pointer": "", "message": exc.detail}]
                return render(
                    view,
                    exc.status,
                    values=kept,
                    errors=errors_by_name(fields, exc.errors or whole),
                )
        resp = RedirectResponse(
            f"{ui.prefix}/{RECIPIENT_ENTITY}/{record['id']}?notice=created", 303
        )
        set_session(registry.auth, request, resp, linked)
        return resp

    app.add_api_route(
        PAGE,
        page,
        methods=["GET", "POST"],
        include_in_schema=False,
        response_class=HTMLResponse,
        name="ui:enrol",
    )
    _move_first(app, {"ui:enrol"})
