"""The programme API under `/api/v1/programme/...`: activation and rates, slots and bookings,
enrolment, walk-ins, stock levels, side-effect reports and duplicates. Writes go through the
entity services, so they are validated, checked by `before_write`, audited and announced on the
outbox like any other record."""

from __future__ import annotations

from datetime import date
from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from open_registry.core import BadRequest, Invalid, NotFound, storage, utcnow
from open_registry.core.api import JSONResponse, read_json
from open_registry.core.auth.routes import signed_in
from open_registry.plugins.programme import access, enrolment, stock
from open_registry.plugins.programme.access import (
    CONTROLLER,
    FACILITY_ADMIN,
    FACILITY_STAFF,
    MONITORING,
    RECIPIENT,
    Principal,
)
from open_registry.plugins.programme.runtime import (
    APPOINTMENT,
    CERTIFICATE,
    FACILITY_PROGRAMME,
    SIDE_EFFECT,
    Programme,
    runtime,
)
from open_registry.plugins.programme.runtime import (
    RECIPIENT as RECIPIENT_ENTITY,
)
from open_registry.plugins.programme.scheduling import slots
from open_registry.plugins.programme.walkin import walk_in

PREFIX = "/api/v1/programme"
STAFF = (FACILITY_ADMIN, FACILITY_STAFF)


def _field(body: Any, name: str, kind: type | tuple[type, ...] = str, required: bool = True) -> Any:
    value = body.get(name) if isinstance(body, dict) else None
    if value is None and not required:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        expected = getattr(kind, "__name__", "value")
        raise Invalid(
            "1 field failed validation",
            errors=[
                {
                    "pointer": f"/{name}",
                    "message": f"{name} is required ({expected})"
                    if value is None
                    else f"{name} must be a {expected}",
                    "keyword": "required" if value is None else "type",
                }
            ],
        )
    return value


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest("send a JSON object")
    return body


def programme_routes(registry: Any) -> list[APIRouter]:  # noqa: C901
    router = APIRouter(tags=["programme"])
    max_bytes = registry.settings.max_body_bytes

    def rt() -> Programme:
        return runtime(registry)

    def today() -> date:
        return rt().config.local_day(utcnow())

    # -- activation and rates --------------------------------------------------------------
    @router.post(
        f"{PREFIX}/activation",
        summary="Activate or suspend a facility for a "
        "programme and set its daily rate (controller)",
    )
    async def set_activation(request: Request) -> Response:
        who = access.require(request, CONTROLLER)
        body = _object(await read_json(request, max_bytes))
        facility, program = _field(body, "facility"), _field(body, "program")
        changes: dict[str, Any] = {k: body[k] for k in ("status", "rate", "reason") if k in body}

        def upsert() -> tuple[dict[str, Any], int]:
            service = rt().services[FACILITY_PROGRAMME]
            with storage.write(registry.db.engine) as conn:
                current = rt().one(
                    conn, FACILITY_PROGRAMME, lock="update", facility=facility, program=program
                )
                if current is None:
                    record = {
                        "facility": facility,
                        "program": program,
                        "status": "Active",
                        **changes,
                    }
                    return service.create(record, actor=who.actor), 201
                return service.update(current["id"], changes, actor=who.actor, patch=True), 200

        record, status = await run_in_threadpool(upsert)
        return JSONResponse(record, status_code=status)

    # -- slots and appointments ---------------------------------------------------------------
    @router.get(
        f"{PREFIX}/slots",
        summary="A facility's slots for a programme on a day, with the places left",
    )
    async def list_slots(facility: str, program: str, day: str | None = None) -> Response:
        try:
            when = date.fromisoformat(day) if day else today()
        except ValueError:
            raise Invalid(
                "invalid day",
                errors=[
                    {
                        "pointer": "/day",
                        "message": "must be a date (YYYY-MM-DD)",
                        "keyword": "format",
                    }
                ],
            ) from None

        def read() -> dict[str, Any]:
            with storage.read(registry.db.engine) as conn:
                schedule, found = slots(rt(), conn, facility, program, when)
            if schedule is None:
                raise NotFound(f"facility {facility} has no schedule for programme {program}")
            return {
                "facility": facility,
                "program": program,
                "day": when.isoformat(),
                "slots": [
                    {"time": s.time, "capacity": s.capacity, "booked": s.booked, "free": s.free}
                    for s in found
                ],
                "walkIn": {
                    "days": schedule.get("walkInDays") or schedule["days"],
                    "start": schedule.get("walkInStart"),
                    "end": schedule.get("walkInEnd"),
                }
                if schedule.get("walkInStart")
                else None,
            }

        return JSONResponse(await run_in_threadpool(read))

    def own_recipient(who: Principal, recipient: str | None) -> None:
        access.check_recipient(who, recipient, "recipient")

    @router.post(
        f"{PREFIX}/appointments", summary="Book an appointment (the recipient, or staff for them)"
    )
    async def book(request: Request) -> Response:
        who = access.require(request, RECIPIENT, *STAFF)
        body = _object(await read_json(request, max_bytes))
        record: dict[str, Any] = {
            k: body[k]
            for k in ("recipient", "program", "facility", "date", "slot", "dose", "vaccine", "note")
            if k in body
        }
        own_recipient(who, record.get("recipient"))
        record["status"] = "Booked"

        def create() -> dict[str, Any]:
            service = rt().services[APPOINTMENT]
            suggested = None
            with storage.write(registry.db.engine) as conn:
                suggested = _suggested(conn, record)
                if suggested is not None:  # booking the suggested next dose
                    return service.update(
                        suggested["id"],
                        {**record, "dueFrom": None, "dueUntil": None},
                        actor=who.actor,
                        patch=True,
                    )
                return service.create(record, actor=who.actor)

        return JSONResponse(await run_in_threadpool(create), status_code=201)

    def _suggested(conn: Any, record: dict[str, Any]) -> dict[str, Any] | None:
        service = rt().services[APPOINTMENT]
        t = service.table
        stmt = t.select().where(
            t.c.recipient == record.get("recipient"),
            t.c.program == record.get("program"),
            t.c.status == "Suggested",
            t.c._deleted_at.is_(None),
        )
        row = conn.execute(stmt.limit(1)).mappings().first()
        return service.codec.to_record(row) if row is not None else None

    async def _appointment(request: Request, appointment_id: str) -> tuple[Principal, dict]:
        who = access.require(request, RECIPIENT, *STAFF)
        service = rt().services[APPOINTMENT]
        current = await run_in_threadpool(service.get, appointment_id)
        own_recipient(who, current.get("recipient"))
        access.check_facility(who, current.get("facility"), "appointment")
        return who, current

    @router.post(
        f"{PREFIX}/appointments/{{appointment_id}}/reschedule",
        summary="Move a booked appointment to another slot",
    )
    async def reschedule(request: Request, appointment_id: str) -> Response:
        who, current = await _appointment(request, appointment_id)
        body = _object(await read_json(request, max_bytes))
        if current["status"] != "Booked":
            raise Invalid(
                "only a booked appointment can be rescheduled",
                errors=[
                    {"pointer": "/status", "message": f"is {current['status']}", "keyword": "const"}
                ],
            )
        patch = {k: body[k] for k in ("facility", "date", "slot") if k in body}
        if not patch:
            raise Invalid(
                "nothing to change",
                errors=[
                    {
                        "pointer": "/date",
                        "message": "send a new date, slot or facility",
                        "keyword": "required",
                    }
                ],
            )
        service = rt().services[APPOINTMENT]
        record = await run_in_threadpool(
            service.update,
            appointment_id,
            patch,
            actor=who.actor,
            if_match=current["_version"],
            patch=True,
        )
        return JSONResponse(record)

    @router.post(
        f"{PREFIX}/appointments/{{appointment_id}}/cancel",
        summary="Cancel an appointment (its place is given back)",
    )
    async def cancel(request: Request, appointment_id: str) -> Response:
        who, current = await _appointment(request, appointment_id)
        if current["status"] in ("Completed", "Cancelled"):
            raise Invalid(
                "the appointment cannot be cancelled",
                errors=[
                    {"pointer": "/status", "message": f"is {current['status']}", "keyword": "const"}
                ],
            )
        service = rt().services[APPOINTMENT]
        record = await run_in_threadpool(
            service.update, appointment_id, {"status": "Cancelled"}, actor=who.actor, patch=True
        )
        return JSONResponse(record)

    # -- enrolment -------------------------------------------------------------------------
    @router.post(
        f"{PREFIX}/enrol",
        summary="Enrol a recipient (themselves after OTP login, or "
        "staff); answers the enrolment code",
    )
    async def enrol(request: Request) -> Response:
        who = access.require(request, RECIPIENT, *STAFF)
        body = dict(_object(await read_json(request, max_bytes)))
        service = rt().services[RECIPIENT_ENTITY]
        if who.roles == {RECIPIENT}:  # self-enrolment: the record becomes the caller's
            body["enrollmentType"] = "SELF_ENROLLMENT"
            return await run_in_threadpool(self_enrol, request, who, body)
        body.setdefault("enrollmentType", "PRE_ENROLLMENT")

        def create() -> dict[str, Any]:
            with storage.write(registry.db.engine) as conn:
                enrolment.check_recipient(rt(), conn, body)
                return enrolment.create_with_code(service, body, who.actor)

        record = await run_in_threadpool(create)
        return JSONResponse(enrolment.enrolled(record), status_code=201)

    def self_enrol(request: Request, who: Principal, body: dict[str, Any]) -> Response:
        record, linked = enrolment.enrol_self(rt(), who, body)
        return signed_in(registry.auth, request, linked, enrolment.enrolled(record), status=201)

    @router.post(
        f"{PREFIX}/enrol/claim",
        summary="A recipient who signed up takes their pre-enrolment (enrolment code + the "
        "mobile number or email they signed in with)",
    )
    async def claim_enrolment(request: Request) -> Response:
        who = access.require(request, RECIPIENT)
        body = _object(await read_json(request, max_bytes))
        code = _field(body, "enrollmentCode")

        def claim() -> Response:
            record, linked = enrolment.claim_enrolment(rt(), who, code, body)
            return signed_in(registry.auth, request, linked, enrolment.enrolled(record))

        return await run_in_threadpool(claim)

    @router.get(
        f"{PREFIX}/duplicates",
        summary="Recipients that look like the same person (found after imports)",
    )
    async def duplicates(request: Request) -> Response:
        access.require(request, *STAFF)

        def read() -> list[dict[str, Any]]:
            with storage.read(registry.db.engine) as conn:
                return enrolment.list_duplicates(conn)

        return JSONResponse({"items": await run_in_threadpool(read)})

    @router.post(f"{PREFIX}/duplicates/resolve", summary="Take a pair off the duplicates list")
    async def resolve(request: Request) -> Response:
        access.require(request, *STAFF)
        body = _object(await read_json(request, max_bytes))
        first, second = _field(body, "recipient"), _field(body, "duplicateOf")

        def write() -> bool:
            with storage.write(registry.db.engine) as conn:
                return enrolment.resolve_duplicate(conn, first, second)

        if not await run_in_threadpool(write):
            raise NotFound("no such pair in the duplicates list")
        return Response(status_code=204)

    # -- walk-ins --------------------------------------------------------------------------
    @router.post(
        f"{PREFIX}/walk-in",
        summary="Enrol a walk-in and record their vaccination in one visit (one transaction)",
    )
    async def record_walk_in(request: Request) -> Response:
        who = access.require(request, *STAFF)
        body = _object(await read_json(request, max_bytes))
        result = await run_in_threadpool(walk_in, rt(), body, who)
        return JSONResponse(result, status_code=201)

    # -- stock -----------------------------------------------------------------------------
    @router.get(
        f"{PREFIX}/stock", summary="Stock levels by facility and vaccine, with low-stock warnings"
    )
    async def stock_levels(
        request: Request, facility: str | None = None, low: bool = False
    ) -> Response:
        who = access.require(request, CONTROLLER, MONITORING, *STAFF)
        if access.only_facility_roles(who):
            facility = who.facility  # staff see their own facility's stock

        def read() -> list[dict[str, Any]]:
            with storage.read(registry.db.engine) as conn:
                found = stock.levels(rt(), conn, today(), [facility] if facility else None)
            return [lv.as_dict() for lv in found if lv.low or not low]

        return JSONResponse({"items": await run_in_threadpool(read)})

    # -- side effects ----------------------------------------------------------------------
    @router.post(
        f"{PREFIX}/side-effects",
        summary="Report a side effect (AEFI) for a certificate (the recipient, or staff)",
    )
    async def report(request: Request) -> Response:
        who = access.require(request, RECIPIENT, *STAFF)
        body = dict(_object(await read_json(request, max_bytes)))
        cert_id = _field(body, "certificate")
        certs = rt().services[CERTIFICATE]
        try:
            cert = await run_in_threadpool(certs.get, cert_id)
        except NotFound:
            raise Invalid(
                "1 field failed validation",
                errors=[
                    {
                        "pointer": "/certificate",
                        "message": "no such certificate",
                        "keyword": "reference",
                    }
                ],
            ) from None
        own_recipient(who, cert.get("recipient"))
        access.check_facility(who, cert.get("facility"), "certificate")
        body.update(
            recipient=cert["recipient"],
            facility=cert["facility"],
            program=cert["program"],
            serious=bool(body.get("seriousness")),
        )
        body.setdefault("reportedBy", "Recipient" if who.roles == {RECIPIENT} else "Staff")
        body.setdefault("reviewStatus", "Open")
        service = rt().services[SIDE_EFFECT]
        record = await run_in_threadpool(service.create, body, actor=who.actor)
        return JSONResponse(record, status_code=201)

    @router.get(
        f"{PREFIX}/side-effects/serious", summary="Serious side effects, newest first (monitoring)"
    )
    async def serious(request: Request, limit: int = 100) -> Response:
        access.require(request, MONITORING, CONTROLLER)
        service = rt().services[SIDE_EFFECT]
        search = service.parser.from_params(
            [("serious", "true"), ("sort", "-_createdAt"), ("limit", str(min(max(limit, 1), 1000)))]
        )
        page = await run_in_threadpool(service.search, search)
        return JSONResponse({"items": page.items})

    return [router]
