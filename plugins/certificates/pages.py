"""The certificate page people expect after a dose is recorded:
`/ui/vaccination/{id}/certificate`.

Titled by the person and the dose ("Ravi Lopes: dose 1 of 2"), it shows the certificate as
the recipient would get it: the facts printed on it, its QR code, "Download PDF", the SMART
Health Card and (for vaccines with EU codes) the EU DCC QR codes, the signed credential folded
in a `<details>`, and its earlier revisions (corrections, revocations). The page is keyed by the
vaccination: a certificate is issued by the outbox worker after the write, so until it exists
the page says "being issued" and refreshes itself (`<meta http-equiv="refresh">`, no script
needed); after a correction it shows the replacement.

For the lifecycle roles (`routes.LIFECYCLE_ROLES`, a facility admin for their facility's
certificates) it has revoke, suspend and reinstate forms, each asking for a reason and a
confirmation, posted to `/ui/certificate/{certificate_id}/status`; those who may update the
vaccination get "Correct the record" (the vaccination's edit page; saving it re-issues).

Who may use it: the vaccination entity's `read` rule for the page (the recipient's own, the
facility's staff, administrators, monitoring; records outside the caller's scope are not
found), the lifecycle roles for the status form (then the certificate's own scope: another
facility's is not found). Every record is read through the caller's gates; the status change
is the certificates runtime's own (`Certificates.revoke` / `suspend` / `reinstate`), as the API's.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from open_registry.core import NotFound, Records, RegistryError
from open_registry.core.auth import rules
from open_registry.core.ui.requests import Page, read_form
from open_registry.plugins.certificates.issuance import CERTIFICATE, VACCINATION
from open_registry.plugins.certificates.routes import LIFECYCLE_ROLES
from open_registry.plugins.certificates.runtime import runtime

PAGE = "/vaccination/{id}/certificate"
STATUS = "/certificate/{certificate_id}/status"
#: the page: whoever may read the vaccination (then its certificate through their gate)
READ = rules.entity(VACCINATION, "read", record="id")
#: the status form: the lifecycle roles (then the certificate's scope)
LIFECYCLE = rules.roles(*LIFECYCLE_ROLES)
ACTIONS = ("revoke", "suspend", "reinstate")
#: seconds between two looks while a certificate is being issued
REFRESH_SECONDS = 2
MAX_REASON = 500
#: earlier revisions listed
MAX_REVISIONS = 20


def _one(records: Records, entity: str, field: str, value: Any) -> dict[str, Any] | None:
    """The record of `entity` whose `field` is `value`, if the caller may read it."""
    if value is None or entity not in records.services:
        return None
    g = records[entity]
    if not g.can("read"):
        return None
    if field == "id":
        return g.find(str(value))
    try:
        found = g.search(g.service.parser.from_params([(field, str(value)), ("limit", "1")]))
    except RegistryError:
        return None
    return found.items[0] if found.items else None


def may_change_status(records: Records, certificate: dict[str, Any]) -> bool:
    """Whether the caller may revoke, suspend or reinstate this certificate."""
    g = records[CERTIFICATE]
    if not g.principal.has(*LIFECYCLE_ROLES):
        return False
    try:
        scope = g.access.require_roles(g.principal, LIFECYCLE_ROLES, "revoke")
    except RegistryError:
        return False
    return scope is None or scope.matches(certificate)


def certificate_view(records: Records, vaccination_id: str) -> dict[str, Any]:
    """Everything the page shows, read through the caller's gates (404 outside their scope)."""
    vaccinations = records[VACCINATION]
    vaccination = vaccinations.get(vaccination_id)
    certs: list[dict[str, Any]] = []
    if records[CERTIFICATE].can("read"):
        g = records[CERTIFICATE]
        params = [
            ("vaccination", vaccination_id),
            ("sort", "-revision"),
            ("limit", str(MAX_REVISIONS)),
        ]
        certs = g.search(g.service.parser.from_params(params)).items
    current = next((c for c in certs if c["status"] != "revoked"), certs[0] if certs else None)
    scope = vaccinations.scope("update") if vaccinations.can("update") else None
    can_correct = vaccinations.can("update") and (scope is None or scope.matches(vaccination))
    return {
        "vaccination": vaccination,
        "certificate": current,
        "earlier": [c for c in certs if c is not current],
        "person": _one(records, "recipient", "id", vaccination.get("recipient")),
        "vaccine": _one(records, "vaccine", "code", vaccination.get("vaccine")),
        "facility": _one(records, "facility", "code", vaccination.get("facility")),
        "program": _one(records, "program", "code", vaccination.get("program")),
        "can_change": current is not None and may_change_status(records, current),
        "can_correct": can_correct,
    }


def add_certificate_pages(app: FastAPI, registry: Any) -> None:
    """Mount the certificate page and its status form (the UI's `route`, see the module)."""
    ui = getattr(app.state, "ui", None)
    if ui is None or ui.route is None or CERTIFICATE not in registry.services:
        return
    prefix = ui.prefix
    max_bytes = registry.settings.max_body_bytes

    async def show(
        page: Page, id: str, *, status: int = 200, errors: dict[str, str] | None = None
    ) -> Response:
        records = ui.records(page.request)
        try:
            data = await run_in_threadpool(certificate_view, records, id)
        except RegistryError as exc:  # outside the caller's scope, or no such record
            raise NotFound(f"vaccination {id}") from exc
        vaccination, cert = data["vaccination"], data["certificate"]
        person = data["person"] or {}
        name = person.get("name") or page.t("certificate.someone")
        title = page.t(
            "certificate.title",
            name=name,
            dose=vaccination.get("dose", "?"),
            total=vaccination.get("totalDoses", "?"),
        )
        api = f"/api/v1/certificates/{cert['id']}" if cert else ""
        vaccine = data["vaccine"] or {}
        return ui.html(
            page,
            "certificates/page.html",
            status,
            title=title,
            data=data,
            person=person,
            vaccine=vaccine,
            cert=cert,
            refresh=REFRESH_SECONDS if cert is None else None,
            api=api,
            pdf_url=f"{api}?{urlencode({'format': 'pdf', 'lang': page.locale})}",
            has_eu=bool(vaccine.get("euMp")),
            credential=json.dumps(cert["credential"], ensure_ascii=False, indent=2) if cert else "",
            status_url=f"{prefix}/certificate/{cert['id']}/status" if cert else "",
            errors=errors or {},
            actions=ACTIONS,
        )

    async def certificate_page(page: Page, id: str) -> Response:
        ui.gate(page.request, VACCINATION, "read")
        return await show(page, id)

    async def certificate_status(page: Page, certificate_id: str) -> Response:
        records = ui.records(page.request)
        cert = _one(records, CERTIFICATE, "id", certificate_id)
        if cert is None or not may_change_status(records, cert):
            raise NotFound(f"certificate {certificate_id}")
        form = dict(await read_form(page.request, max_bytes))
        action = form.get("action", "")
        reason = " ".join(form.get("reason", "").split())
        errors: dict[str, str] = {}
        if action not in ACTIONS:
            errors[""] = page.t("certificate.bad_action")
        if action in ("revoke", "suspend") and not reason:
            errors["reason"] = page.t("certificate.reason_required")
        if len(reason) > MAX_REASON:
            errors["reason"] = page.t("valid.max_length", n=MAX_REASON)
        if form.get("confirm") != "yes":
            errors["confirm"] = page.t("certificate.confirm_required")
        if errors:
            errors["action"] = action
            return await show(page, cert["vaccination"], status=422, errors=errors)
        rt = runtime(registry)
        actor = records.principal.actor
        try:
            if action == "revoke":
                await run_in_threadpool(rt.revoke, certificate_id, reason, actor)
            elif action == "suspend":
                await run_in_threadpool(rt.suspend, certificate_id, reason, None, actor)
            else:
                await run_in_threadpool(rt.reinstate, certificate_id, actor)
        except RegistryError as exc:  # e.g. revoked already: a revocation is final
            errors = {"": exc.detail, "action": action}
            return await show(page, cert["vaccination"], status=exc.status, errors=errors)
        notice = {"revoke": "revoked", "suspend": "suspended", "reinstate": "reinstated"}[action]
        return RedirectResponse(
            f"{prefix}/vaccination/{cert['vaccination']}/certificate?notice={notice}", 303
        )

    ui.route(PAGE, ["GET"], READ)(certificate_page)
    ui.route(STATUS, ["POST"], LIFECYCLE)(certificate_status)
