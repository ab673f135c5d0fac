"""Sign-in pages of the web UI: `/ui/login` (password, or a one-time code by email or mobile),
`/ui/logout`, and `/ui/users` where administrators add users (a system-admin any user; a
facility-admin the staff of their own facility, never linked to a recipient record: the rules
are `registry.auth.users.check_grant`, applied by `Users.add(by=...)`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from open_registry.core.auth import rules
from open_registry.core.auth.deps import client_address, principal_of
from open_registry.core.auth.principal import FACILITY_ADMIN, RECIPIENT, SYSTEM_ADMIN
from open_registry.core.auth.routes import otp_login, otp_send, password_login, set_session
from open_registry.core.auth.tokens import SESSION_COOKIE
from open_registry.core.auth.users import grantable_roles
from open_registry.core.errors import NotFound, RegistryError
from open_registry.core.ui.requests import SignInFirst, read_form


def _safe_next(target: str | None, prefix: str) -> str:
    if not target or not target.startswith(prefix) or target.startswith("//"):
        return f"{prefix}/"
    return target


def _enrols_next(app: Any, p: Any) -> bool:
    """A recipient without a record yet goes on to a plugin's enrolment page (`ui:enrol`)."""
    if p.roles != {RECIPIENT} or p.recipient:
        return False
    return any(getattr(r, "name", None) == "ui:enrol" for r in app.router.routes)


def add_auth_pages(ui: Any, route: Callable[[str, list[str], Any], Any]) -> None:  # noqa: C901
    """Mount the sign-in and users pages through the UI's `route` decorator."""

    prefix = ui.prefix
    auth = ui.registry.auth
    max_bytes = 16_384

    def login_page(page: Any, status: int = 200, **context: Any) -> Response:
        values = {
            "next": _safe_next(page.request.query_params.get("next"), prefix),
            "error": None,
            "code_sent": False,
            "channel": "",
            "to": "",
            **context,
        }
        return ui.html(page, "login.html", status, **values)

    @route("/login", ["GET", "POST"], rules.public("signing in; bounded by the rate limits"))
    async def login(page: Any) -> Response:
        request = page.request
        if request.method == "GET":
            return login_page(page)
        form = dict(await read_form(request, max_bytes))
        target = _safe_next(form.get("next"), prefix)
        address = client_address(request)
        mode = form.get("mode", "password")
        try:
            if mode == "otp-send":
                channel, to = form.get("channel", ""), form.get("to", "")
                await run_in_threadpool(otp_send, auth, channel, to, address)
                return login_page(page, code_sent=True, channel=channel, to=to, next=target)
            if mode == "otp":
                channel, to = form.get("channel", ""), form.get("to", "")
                outcome = await run_in_threadpool(
                    otp_login, auth, channel, to, form.get("code", ""), address
                )
                p = outcome.principal
                assert p is not None  # otp_login returns only outcomes with a principal
                if target == f"{prefix}/" and _enrols_next(request.app, p):
                    target = f"{prefix}/enrol"
            else:
                p = await run_in_threadpool(
                    password_login,
                    auth,
                    form.get("username", "")[:100],
                    form.get("password", "")[:1000],
                    address,
                )
        except RegistryError as exc:
            otp = mode in ("otp", "otp-send")
            return login_page(
                page,
                exc.status if exc.status in (401, 429) else 400,
                error=page.t("login.failed") if exc.status == 401 else exc.detail,
                code_sent=mode == "otp",
                channel=form.get("channel", "") if otp else "",
                to=form.get("to", "") if otp else "",
                next=target,
            )
        resp = RedirectResponse(target, 303)
        set_session(auth, request, resp, p)
        return resp

    @route("/logout", ["POST"], rules.public("only clears the visitor's own session"))
    async def logout(page: Any) -> Response:
        resp = RedirectResponse(f"{prefix}/", 303)
        resp.delete_cookie(SESSION_COOKIE, path="/")
        return resp

    def manager(page: Any) -> tuple[Any, list[str], str | None]:
        """(the visitor, the roles they may give, the facility they are limited to) for the
        users page: only those `grantable_roles` gives some role may use it."""
        p = principal_of(page.request)
        roles = list(grantable_roles(p))
        if not roles:
            if not p.authenticated:
                raise SignInFirst()
            raise NotFound("users")
        return p, roles, None if SYSTEM_ADMIN in p.roles else p.facility

    @route("/users", ["GET", "POST"], rules.roles(SYSTEM_ADMIN, FACILITY_ADMIN))
    async def users(page: Any) -> Response:
        p, roles, facility = manager(page)
        error, values, status = None, {}, 200
        if page.request.method == "POST":
            form = await read_form(page.request, max_bytes)
            values = dict(form)
            chosen = [v for k, v in form if k == "roles"]
            try:
                if any(r not in roles for r in chosen):  # a choice the form never offered
                    raise NotFound("role")
                # `by`: the users table refuses (403, naming the field) what the visitor may
                # not create: another facility's user, a link to a recipient record, ...
                await run_in_threadpool(
                    lambda: auth.users.add(
                        values.get("username", ""),
                        roles=chosen,
                        password=values.get("password") or None,
                        facility=values.get("facility") or None,
                        recipient=values.get("recipient") or None,
                        email=values.get("email") or None,
                        phone=values.get("phone") or None,
                        actor=p.actor,
                        by=p,
                    )
                )
            except RegistryError as exc:
                error = (
                    "; ".join(
                        f"{e['pointer'].strip('/')}: {e['message']}" for e in exc.errors or []
                    )
                    or exc.detail
                )
                status = exc.status if exc.status != 404 else 400
            else:
                await run_in_threadpool(
                    auth.event, "user.add", actor=p.actor, username=values.get("username")
                )
                query = urlencode({"notice": "user_added"})
                return RedirectResponse(f"{prefix}/users?{query}", 303)
        listed = await run_in_threadpool(auth.users.list, facility)
        return ui.html(
            page,
            "users.html",
            status,
            users=listed,
            roles=roles,
            facility=facility,
            error=error,
            values={k: v for k, v in values.items() if k != "password"},
        )
