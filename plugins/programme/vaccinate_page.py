"""`/ui/vaccinate`: record a vaccination in one screen, the facility's task.

1. Find the person by enrolment code, mobile number or name (or enrol them on the spot);
2. record the dose with what the registry already knows filled in: the staff member's own
   facility, the date and time now (the programme's time zone), the facility's stock batches
   (unexpired, with doses left, first to expire first; the vaccine comes from the batch), the
   programme of the recipient's earlier doses (else the active one with that vaccine), the
   dose number from their history and the total from the vaccine's schedule (`doseIntervals`).
   Staff choose the batch; everything else may stay as filled in.

The page lives in the programme plugin: the defaults are the programme's data (stock,
schedules, history) and the write is the programme's walk-in (`walkin.walk_in`: a new person
and their dose in one transaction, nobody left behind when the dose is refused). The
vaccination entity itself is the certificates plugin's; after saving, the visitor lands on its
certificate page (`/ui/vaccination/{id}/certificate`, `certificates/pages.py`).

Who may use it: the vaccination entity's `create` rule (facility staff and admins, system
administrators); anonymous visitors are sent to sign in, other roles get "not found". Records
are read and written through the caller's gates. One search goes beneath them, on purpose: the
mobile number is a private field facility staff may not search by through the API, so a phone
search compares the numbers of the `PHONE_SCAN` most recently enrolled people and of those
with appointments at the caller's facility around today (last 10 digits, as
`enrolment.phone_digits`), and answers only what the caller's own gate shows of the people
found (never the number). It is for roles that may record vaccinations only, and bounded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.responses import RedirectResponse, Response
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool

from open_registry.core import Gate, NotFound, Records, RegistryError, storage, utcnow
from open_registry.core.auth import rules
from open_registry.core.codec import format_datetime
from open_registry.core.ui.messages import people_errors
from open_registry.core.ui.render import FormView
from open_registry.core.ui.requests import Page, read_form
from open_registry.core.ui.tasks import Task
from open_registry.generators.formdata import form_to_json
from open_registry.plugins.programme import access, counters
from open_registry.plugins.programme.dashboard import _move_first
from open_registry.plugins.programme.enrolment import phone_digits
from open_registry.plugins.programme.offline import add_offline_routes, offline_person
from open_registry.plugins.programme.runtime import (
    APPOINTMENT,
    RECIPIENT,
    STOCK,
    VACCINATION,
    VACCINE,
    Programme,
    runtime,
)
from open_registry.plugins.programme.tables import counts
from open_registry.plugins.programme.walkin import walk_in

PAGE = "/vaccinate"
#: who may use the page: whoever may create vaccinations (at their own facility)
RULE = rules.entity(VACCINATION, "create")
#: characters of a search, people answered
MAX_QUERY = 100
MAX_FOUND = 10
#: a phone search compares the numbers of this many most recently enrolled people...
PHONE_SCAN = 5000
#: ...and of those with appointments at the facility this many days around today
APPOINTMENT_DAYS = 30
#: stock batches, programmes, vaccinators and facilities offered (the pickers search beyond)
MAX_CHOICES = 100
#: set by the registry, never asked for when enrolling on the spot
SERVER_FIELDS = ("enrollmentCode", "enrollmentType")
#: the dose form's own inputs (the vaccination's fields)
DOSE_FIELDS = ("batch", "program", "dose", "totalDoses", "date", "vaccinator")
_PHONE_LIKE = re.compile(r"^\+?[0-9][0-9 ()-]{5,}$")
_CODE_LIKE = re.compile(r"^[A-Za-z0-9_-]{2,32}$")


@dataclass
class Desk:
    """What the dose form offers and fills in, for one facility and one person."""

    facility: str | None
    batches: list[dict[str, Any]] = field(default_factory=list)
    programs: list[dict[str, Any]] = field(default_factory=list)
    vaccinators: list[dict[str, Any]] = field(default_factory=list)
    facilities: list[dict[str, Any]] = field(default_factory=list)
    values: dict[str, str] = field(default_factory=dict)


def _search(g: Gate, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
    return g.search(g.service.parser.from_params(params)).items


def _local_now(rt: Programme) -> str:
    return utcnow().astimezone(rt.config.tz).strftime("%Y-%m-%dT%H:%M")


def _instant(rt: Programme, text: str) -> str:
    """A `datetime-local` value (the programme's time zone) as an RFC 3339 instant; other
    text is passed on for the validator to name."""
    try:
        local = datetime.fromisoformat(text)
    except ValueError:
        return text
    if local.tzinfo is None:
        local = local.replace(tzinfo=rt.config.tz)
    return format_datetime(local)


def total_doses(vaccine: dict[str, Any] | None) -> int | None:
    """Doses of a vaccine's schedule: one more than its intervals between doses."""
    if not vaccine:
        return None
    intervals = vaccine.get("doseIntervals")
    return len(intervals) + 1 if isinstance(intervals, list) else 1


class Vaccinate:
    """The page's reads (through the caller's gates) and its write (`walk_in`)."""

    def __init__(self, registry: Any, records: Records):
        self.registry = registry
        self.rt = runtime(registry)
        self.records = records
        self.principal = records.principal

    # -- finding the person -----------------------------------------------------------------
    def find(self, text: str, facility: str | None) -> list[dict[str, Any]]:
        """People the caller may read matching `text`: an enrolment code, a mobile number,
        or part of a name; as the caller may see them."""
        people = self.records[RECIPIENT]
        text = text.strip()
        found: dict[str, dict[str, Any]] = {}
        if _CODE_LIKE.match(text):
            for r in _search(people, [("enrollmentCode", text), ("limit", "1")]):
                found[r["id"]] = r
        if _PHONE_LIKE.match(text) and len(phone_digits(text)) >= 7:
            for rid in self._by_phone(text, facility):
                rec = people.find(rid)
                if rec is not None:
                    found[rid] = rec
        if not found and not text.replace(" ", "").isdigit():
            for r in _search(
                people, [("name[icontains]", text), ("sort", "name"), ("limit", str(MAX_FOUND))]
            ):
                found[r["id"]] = r
        return list(found.values())[:MAX_FOUND]

    def _by_phone(self, text: str, facility: str | None) -> list[str]:
        """Ids of recipients whose mobile number ends like `text` (see the module docstring)."""
        self.records[RECIPIENT].scope("read")  # the caller may read recipients at all
        wanted = phone_digits(text)
        service = self.rt.services[RECIPIENT]
        table, codec = service.table, service.codec
        if "phone" not in table.c:
            return []
        recent = (
            sa.select(table.c.id)
            .where(table.c._deleted_at.is_(None))
            .order_by(table.c._created_at.desc())
            .limit(PHONE_SCAN)
        )
        ids: set[str] = set()
        with storage.read(self.registry.db.engine) as conn:
            ids.update(r[0] for r in conn.execute(recent))
            if facility and self.rt.has(APPOINTMENT):
                appointments = self.rt.services[APPOINTMENT].table
                today = self.rt.config.local_day(utcnow())
                near = sa.select(appointments.c.recipient).where(
                    appointments.c.facility == facility,
                    appointments.c.date.between(
                        today - timedelta(days=APPOINTMENT_DAYS),
                        today + timedelta(days=APPOINTMENT_DAYS),
                    ),
                    appointments.c._deleted_at.is_(None),
                )
                ids.update(r[0] for r in conn.execute(near.limit(PHONE_SCAN)))
            out = []
            listed = sorted(ids)
            for i in range(0, len(listed), 500):
                stmt = sa.select(table.c.id, table.c.phone).where(
                    table.c.id.in_(listed[i : i + 500]), table.c.phone.is_not(None)
                )
                for rid, sealed in conn.execute(stmt):
                    if phone_digits(codec.cipher.open("phone", rid, sealed)) == wanted:
                        out.append(rid)
        return sorted(out)[:MAX_FOUND]

    # -- the dose form ----------------------------------------------------------------------
    def facility_of(self, asked: str | None) -> str | None:
        """The caller's own facility, or (roles not bound to one) the one they chose."""
        return self.principal.facility or (asked or None)

    def desk(self, facility: str | None, person: dict[str, Any] | None) -> Desk:
        """The choices and the filled-in values of the dose form."""
        desk = Desk(facility)
        if self.principal.facility is None:
            desk.facilities = _search(
                self.records["facility"],
                [("status", "Active"), ("sort", "name"), ("limit", str(MAX_CHOICES))],
            )
        desk.values["date"] = _local_now(self.rt)
        if facility is None:
            return desk
        today = self.rt.config.local_day(utcnow())
        desk.batches = self.batches(facility, today)
        stocked = {b["vaccine"] for b in desk.batches}
        programs = _search(
            self.records["program"],
            [("status", "Active"), ("sort", "name"), ("limit", str(MAX_CHOICES))],
        )
        desk.programs = programs
        history = self.history(person["id"]) if person else []
        earlier = [h["program"] for h in sorted(history, key=lambda h: h.get("date", ""))]
        chosen = next(
            (
                p["code"]
                for code in reversed(earlier)
                for p in programs
                if p["code"] == code and stocked & set(p.get("vaccineIds") or [])
            ),
            None,
        ) or next((p["code"] for p in programs if stocked & set(p.get("vaccineIds") or [])), None)
        if chosen:
            desk.values["program"] = chosen
            done = [h.get("dose", 0) for h in history if h.get("program") == chosen]
            desk.values["dose"] = str(max(done, default=0) + 1)
        totals = {b["total"] for b in desk.batches if b["total"]}
        if len(totals) == 1:
            desk.values["totalDoses"] = str(totals.pop())
        if self.records["vaccinator"].can("read"):
            desk.vaccinators = _search(
                self.records["vaccinator"],
                [("facilityIds", facility), ("sort", "name"), ("limit", str(MAX_CHOICES))],
            )
        return desk

    def batches(self, facility: str, today: date) -> list[dict[str, Any]]:
        """The facility's usable batches (the caller's stock gate), first to expire first, with
        the doses left and their vaccine's name and schedule."""
        if not self.rt.has(STOCK) or not self.records[STOCK].can("read"):
            return []
        lots = _search(
            self.records[STOCK],
            [("facility", facility), ("sort", "expiry"), ("limit", str(MAX_CHOICES))],
        )
        if not lots:
            return []
        with storage.read(self.registry.db.engine) as conn:
            used = counts(conn, counters.BATCH, [lot["id"] for lot in lots])
        vaccines = {
            v["code"]: v
            for v in _search(
                self.records[VACCINE],
                [
                    ("code[in]", ",".join(sorted({lot["vaccine"] for lot in lots}))),
                    ("limit", "100"),
                ],
            )
        }
        out = []
        for lot in lots:
            left = lot["quantity"] - used.get(lot["id"], 0)
            if left <= 0 or date.fromisoformat(lot["expiry"]) < today:
                continue
            vaccine = vaccines.get(lot["vaccine"])
            out.append(
                {
                    "batch": lot["batch"],
                    "vaccine": lot["vaccine"],
                    "vaccine_name": (vaccine or {}).get("name", lot["vaccine"]),
                    "left": left,
                    "expiry": lot["expiry"],
                    "total": total_doses(vaccine),
                }
            )
        return out

    def history(self, recipient_id: str) -> list[dict[str, Any]]:
        """The person's live vaccinations (every facility's: only their programme, dose and
        date are used, for the next dose's number)."""
        with storage.read(self.registry.db.engine) as conn:
            rows = self.rt.fetch_all(conn, VACCINATION, "recipient", [recipient_id])
        return [{k: r.get(k) for k in ("program", "dose", "date", "vaccine")} for r in rows]

    # -- saving -------------------------------------------------------------------------------
    def complete(self, dose: dict[str, Any], facility: str, recipient_id: str | None) -> None:
        """Fill in what the form left blank: the vaccine of the batch, the programme, the dose
        number and the total doses (as the form's defaults would)."""
        if dose.get("batch") and not dose.get("vaccine"):
            lots = _search(
                self.records[STOCK],
                [("facility", facility), ("batch", str(dose["batch"])), ("limit", "1")],
            )
            if lots:
                dose["vaccine"] = lots[0]["vaccine"]
        vaccine = None
        if dose.get("vaccine"):
            found = _search(self.records[VACCINE], [("code", str(dose["vaccine"])), ("limit", "1")])
            vaccine = found[0] if found else None
        history = self.history(recipient_id) if recipient_id else []
        if not dose.get("program") and vaccine is not None:
            active = _search(
                self.records["program"], [("status", "Active"), ("limit", str(MAX_CHOICES))]
            )
            fits = [p["code"] for p in active if vaccine["code"] in (p.get("vaccineIds") or [])]
            earlier = [h["program"] for h in history if h.get("program") in fits]
            if earlier or fits:
                dose["program"] = (earlier or fits)[-1 if earlier else 0]
        if dose.get("dose") is None and dose.get("program"):
            done = [h.get("dose") or 0 for h in history if h.get("program") == dose["program"]]
            dose["dose"] = max(done, default=0) + 1
        if dose.get("totalDoses") is None and vaccine is not None:
            dose["totalDoses"] = total_doses(vaccine)

    def record(self, body: dict[str, Any]) -> dict[str, Any]:
        return walk_in(self.rt, body, self.records)


def _dose_body(rt: Programme, form: dict[str, str]) -> dict[str, Any]:
    """The vaccination fields of the submitted form (blank ones left out)."""
    dose: dict[str, Any] = {}
    for name in DOSE_FIELDS:
        value = form.get(name, "").strip()
        if not value:
            continue
        if name in ("dose", "totalDoses"):
            dose[name] = int(value) if value.isdigit() else value
        elif name == "date":
            dose[name] = _instant(rt, value)
        else:
            dose[name] = value
    return dose


def _strip(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Walk-in pointers (`/vaccination/batch`, `/recipient/name`) as the form's names."""
    out = []
    for e in errors:
        pointer = str(e.get("pointer", ""))
        for prefix in ("/vaccination", "/recipient"):
            if pointer.startswith(prefix + "/"):
                pointer = pointer[len(prefix) :]
        out.append({**e, "pointer": pointer})
    return out


def add_vaccinate_page(app: FastAPI, registry: Any) -> None:  # noqa: C901
    """Mount `/ui/vaccinate` (ahead of `/ui/{entity}`) and add the facility's tasks to the
    home page."""
    ui = getattr(app.state, "ui", None)
    if ui is None or ui.route is None or not runtime(registry).has(VACCINATION, RECIPIENT):
        return
    prefix = ui.prefix
    max_bytes = registry.settings.max_body_bytes
    here = f"{prefix}{PAGE}"

    def person_fields(locale: str) -> tuple[Any, ...]:
        entity = registry.services[RECIPIENT].entity
        return tuple(f for f in ui.fields(entity, locale) if f.key not in SERVER_FIELDS)

    def dose_fields(locale: str) -> dict[str, Any]:
        entity = registry.services[VACCINATION].entity
        return {f.key: f for f in ui.fields(entity, locale)}

    def person_html(page: Page, values: dict[str, Any], errors: dict[str, list[str]]) -> Markup:
        view = FormView(person_fields(page.locale), values, errors, {}, new=True)
        html = ui.env.get_template("programme/_person_fields.html").render(view=view, t=page.t)
        return Markup(html)

    async def render(
        page: Page,
        desk_of: Vaccinate,
        *,
        status: int = 200,
        values: dict[str, Any] | None = None,
        errors: dict[str, list[str]] | None = None,
    ) -> Response:
        q = page.request.query_params
        text = q.get("q", "")[:MAX_QUERY]
        facility = desk_of.facility_of(q.get("facility") or (values or {}).get("facility"))
        chosen_id = q.get("recipient") or (values or {}).get("recipient") or None
        new = q.get("new") == "1" or (values or {}).get("_new") == "1"
        found: list[dict[str, Any]] | None = None
        if text and not chosen_id and not new:
            found = await run_in_threadpool(desk_of.find, text, facility)
        person = None
        if chosen_id:
            person = await run_in_threadpool(desk_of.records[RECIPIENT].find, chosen_id)
            if person is None:
                raise NotFound(f"recipient {chosen_id}")
        desk = await run_in_threadpool(desk_of.desk, facility, person)
        form_values = {**desk.values, **{k: v for k, v in (values or {}).items() if v != ""}}
        errors = errors or {}
        labels = dose_fields(page.locale)
        genders = {
            str(o.value): o.label
            for f in person_fields(page.locale)
            if f.key == "gender"
            for o in f.options
        }
        program_name = next(
            (p["name"] for p in desk.programs if p["code"] == form_values.get("program")),
            page.t("vaccinate.automatic"),
        )
        facility_name = facility or ""
        if facility:
            named = await run_in_threadpool(
                _search, desk_of.records["facility"], [("code", facility), ("limit", "1")]
            )
            facility_name = named[0].get("name", facility) if named else facility
        return ui.html(
            page,
            "programme/vaccinate.html",
            status,
            page_url=here,
            query=text,
            found=found,
            person=person,
            new=new,
            desk=desk,
            facility=facility,
            values=form_values,
            errors=errors,
            labels={k: f.label for k, f in labels.items()},
            helps={k: f.description for k, f in labels.items()},
            person_html=person_html(page, values or {}, errors) if new else None,
            summary=[(name, m) for name, ms in errors.items() for m in ms],
            birth_of=lambda r: page.t(
                "vaccinate.born", year=str(r.get("dob") or r.get("yob") or "?")[:4]
            ),
            gender_of=lambda g: genders.get(str(g), str(g)),
            program_name=program_name,
            facility_name=facility_name,
            offline_person=offline_person(person, form_values) if person else None,
            new_url=here
            + "?"
            + urlencode({"new": "1", **({"facility": facility} if facility else {})}),
            choose_url=lambda rid: (
                here
                + "?"
                + urlencode({"recipient": rid, **({"facility": facility} if facility else {})})
            ),
        )

    async def vaccinate_page(page: Page) -> Response:
        records = ui.records(page.request)
        desk_of = Vaccinate(registry, records)
        if page.request.method == "GET":
            return await render(page, desk_of)
        pairs = await read_form(page.request, max_bytes)
        form = dict(pairs)
        facility = desk_of.facility_of(form.get("facility"))
        dose = _dose_body(desk_of.rt, form)
        body: dict[str, Any] = {"vaccination": dose}
        if facility:
            body["facility"] = facility
        fields = person_fields(page.locale)
        kept: dict[str, Any] = {}
        recipient_id = form.get("recipient") or None
        if recipient_id:
            body["recipientId"] = recipient_id
        else:
            person, kept = form_to_json(fields, pairs)
            body["recipient"] = person
        try:
            if facility:
                await run_in_threadpool(desk_of.complete, dose, facility, recipient_id)
            done = await run_in_threadpool(desk_of.record, body)
        except RegistryError as exc:
            problems = _strip(exc.errors or [{"pointer": "", "message": exc.detail}])
            all_fields = (*fields, *dose_fields(page.locale).values())
            errors = people_errors(all_fields, problems, page.t)
            values = {
                **kept,
                **{k: form.get(k, "") for k in DOSE_FIELDS},
                "recipient": recipient_id or "",
                "facility": facility or "",
                "_new": "" if recipient_id else "1",
            }
            return await render(page, desk_of, status=exc.status, values=values, errors=errors)
        vaccination = done["vaccination"]["id"]
        return RedirectResponse(
            f"{prefix}/vaccination/{vaccination}/certificate?notice=recorded", 303
        )

    ui.route(PAGE, ["GET", "POST"], RULE)(vaccinate_page)
    add_offline_routes(app, registry, prefix, registry.settings.title)  # offline.py
    _move_first(app, {"ui:vaccinate_page"})
    today = f"{prefix}/appointments/today"

    async def appointments_today(page: Page) -> Response:
        """Today's appointments at the visitor's facility (the appointment list, filtered)."""
        day = runtime(registry).config.local_day(datetime.now(UTC)).isoformat()
        query = urlencode([("date[gte]", day), ("date[lte]", day), ("sort", "slot")])
        return RedirectResponse(f"{prefix}/{APPOINTMENT}?{query}", 303)

    if runtime(registry).has(APPOINTMENT):
        ui.route("/appointments/today", ["GET"], rules.entity(APPOINTMENT, "read"))(
            appointments_today
        )
        _move_first(app, {"ui:appointments_today"})
    ui.add_task(Task("vaccinate", here, RULE, order=10, nav=True))
    ui.add_task(Task("enrol", f"{prefix}/{RECIPIENT}/new", rules.entity(RECIPIENT, "create"), 20))
    if runtime(registry).has(APPOINTMENT):
        ui.add_task(Task("appointments", today, access.STAFF, order=30))
    if runtime(registry).has(STOCK):
        ui.add_task(Task("stock", f"{prefix}/{STOCK}", access.STAFF, order=40))
    ui.add_task(
        Task("dashboard", f"{prefix}/dashboard", access.MONITORS, order=50, landing=True, nav=True)
    )
