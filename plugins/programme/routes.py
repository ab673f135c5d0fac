"""The programme API under `/api/v1/programme/...`: activation and rates, slots and bookings,
enrolment, walk-ins, stock levels, side-effect reports and duplicates.

Every route declares its rule (`registry.auth.rules`, see `access`). Records are read and
written through the caller's gate (`registry.records(principal)[entity]`), the enforcement point
of the generic API: facility staff reach only their facility's records (404 outside) and may not
write records naming another facility (403). Writes are validated, checked by `before_write`
(rates, slots, stock), audited and announced on the outbox like any other record. The two writes
a caller could not make through the generic API (a person enrolling themselves, a booking taking
over the programme's suggested appointment at another facility) check the caller's scope through
their gate first and are then written as `system("programme")`."""

from __future__ import annotations

from datetime import date
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from open_registry.core import BadRequest, Gate, Invalid, NotFound, storage, utcnow
from open_registry.core.api import JSONResponse, read_json
from open_registry.core.auth import rules
from open_registry.core.auth.routes import signed_in
from open_registry.plugins.programme import access, enrolment, stock
from open_registry.plugins.programme.access import RECIPIENT, Principal
from open_registry.plugins.programme.runtime import (
    APPOINTMENT,
    CERTIFICATE,
    FACILITY_PROGRAMME,
    SIDE_EFFECT,
    STOCK,
    Programme,
    runtime,
)
from open_registry.plugins.programme.runtime import (
    RECIPIENT as RECIPIENT_ENTITY,
)
from open_registry.plugins.programme.scheduling import slots
from open_registry.plugins.programme.walkin import walk_in

PREFIX = "/api/v1/programme"
#: the slots route: what it shows is public (the schedules are, and the places left)
SLOTS = rules.public("a facility's public schedule and the places left, to choose a slot")


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


#: the two recipients of a pair of the duplicates list
PAIR = ("recipient", "duplicateOf")


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
        dependencies=[Depends(access.CONTROLLERS)],
        summary="Activate or suspend a facility for a "
        "programme and set its daily rate (controller)",
    )
    async def set_activation(request: Request) -> Response:
        mine = access.records(request)[FACILITY_PROGRAMME]
        body = _object(await read_json(request, max_bytes))
        facility, program = _field(body, "facility"), _field(body, "program")
        changes: dict[str, Any] = {k: body[k] for k in ("status", "rate", "reason") if k in body}

        def upsert() -> tuple[dict[str, Any], int]:
            with storage.write(registry.db.engine) as conn:
                # the programme's own lookup by its natural key, locked for the upsert
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
                    return mine.create(record), 201
                return mine.update(current["id"], changes, patch=True), 200

        record, status = await run_in_threadpool(upsert)
        return JSONResponse(record, status_code=status)

    # -- slots and appointments ---------------------------------------------------------------
    @router.get(
        f"{PREFIX}/slots",
        dependencies=[Depends(SLOTS)],
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
        f"{PREFIX}/appointments",
        dependencies=[Depends(rules.entity(APPOINTMENT, "create"))],
        summary="Book an appointment (the recipient, or staff for them)",
    )
    async def book(request: Request) -> Response:
        who = access.principal(request)
        body = _object(await read_json(request, max_bytes))
        record: dict[str, Any] = {
            k: body[k]
            for k in ("recipient", "program", "facility", "date", "slot", "dose", "vaccine", "note")
            if k in body
        }
        own_recipient(who, record.get("recipient"))
        record["status"] = "Booked"
        mine = registry.records(who)[APPOINTMENT]
        # staff book at their own facility (403 naming the field otherwise), as through the API
        access.check_scope(mine, "create", record)

        def create() -> dict[str, Any]:
            with storage.write(registry.db.engine) as conn:
                suggested = _suggested(conn, record)
                if suggested is None:
                    return mine.create(record)
                # booking the suggested next dose: the suggestion becomes the booking
                change = {**record, "dueFrom": None, "dueUntil": None}
                if access.in_scope(mine, "update", suggested):
                    return mine.update(suggested["id"], change, patch=True)
                # suggested at a facility the caller does not work at; the booking is in their
                # scope (checked above), so the programme moves its own suggestion there
                moved = access.as_programme(registry)[APPOINTMENT].update(
                    suggested["id"], change, patch=True
                )
                return mine.view(moved)

        return JSONResponse(await run_in_threadpool(create), status_code=201)

    def _suggested(conn: Any, record: dict[str, Any]) -> dict[str, Any] | None:
        """The recipient's suggested next dose for the programme (the programme's own record,
        looked up in the booking's transaction whoever books)."""
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

    #: reschedule and cancel: an update of the appointment named in the path
    appointment_rule = rules.entity(APPOINTMENT, "update", record="appointment_id")

    async def _appointment(request: Request, appointment_id: str) -> tuple[Gate, dict]:
        """The caller's gate of appointments and the one named, if they may change it (404
        otherwise: another facility's, another person's)."""
        mine = access.records(request)[APPOINTMENT]
        current = await run_in_threadpool(mine.get, appointment_id)
        if not access.in_scope(mine, "update", current):
            raise NotFound(f"no appointment {appointment_id!r}")
        return mine, current

    @router.post(
        f"{PREFIX}/appointments/{{appointment_id}}/reschedule",
        dependencies=[Depends(appointment_rule)],
        summary="Move a booked appointment to another slot",
    )
    async def reschedule(request: Request, appointment_id: str) -> Response:
        mine, current = await _appointment(request, appointment_id)
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
        # moving it to another facility is the caller's write rule too (403 for staff)
        record = await run_in_threadpool(
            mine.update, appointment_id, patch, if_match=current["_version"], patch=True
        )
        return JSONResponse(record)

    @router.post(
        f"{PREFIX}/appointments/{{appointment_id}}/cancel",
        dependencies=[Depends(appointment_rule)],
        summary="Cancel an appointment (its place is given back)",
    )
    async def cancel(request: Request, appointment_id: str) -> Response:
        mine, current = await _appointment(request, appointment_id)
        if current["status"] in ("Completed", "Cancelled"):
            raise Invalid(
                "the appointment cannot be cancelled",
                errors=[
                    {"pointer": "/status", "message": f"is {current['status']}", "keyword": "const"}
                ],
            )
        record = await run_in_threadpool(
            mine.update, appointment_id, {"status": "Cancelled"}, patch=True
        )
        return JSONResponse(record)

    # -- enrolment -------------------------------------------------------------------------
    @router.post(
        f"{PREFIX}/enrol",
        dependencies=[Depends(access.PEOPLE_AND_STAFF)],
        summary="Enrol a recipient (themselves after OTP login, or "
        "staff); answers the enrolment code",
    )
    async def enrol(request: Request) -> Response:
        who = access.principal(request)
        body = dict(_object(await read_json(request, max_bytes)))
        if who.roles == {RECIPIENT}:  # self-enrolment: the record becomes the caller's
            body["enrollmentType"] = "SELF_ENROLLMENT"
            return await run_in_threadpool(self_enrol, request, who, body)
        body.setdefault("enrollmentType", "PRE_ENROLLMENT")
        mine = registry.records(who)[RECIPIENT_ENTITY]

        def create() -> dict[str, Any]:
            with storage.write(registry.db.engine) as conn:
                enrolment.check_recipient(rt(), conn, body)
                return enrolment.create_with_code(mine, body)

        record = await run_in_threadpool(create)
        return JSONResponse(enrolment.enrolled(record), status_code=201)

    def self_enrol(request: Request, who: Principal, body: dict[str, Any]) -> Response:
        record, linked = enrolment.enrol_self(rt(), who, body)
        return signed_in(registry.auth, request, linked, enrolment.enrolled(record), status=201)

    @router.post(
        f"{PREFIX}/enrol/claim",
        dependencies=[Depends(access.SIGNED_UP)],
        summary="A recipient who signed up takes their pre-enrolment (enrolment code + the "
        "mobile number or email they signed in with)",
    )
    async def claim_enrolment(request: Request) -> Response:
        who = access.principal(request)
        body = _object(await read_json(request, max_bytes))
        code = _field(body, "enrollmentCode")

        def claim() -> Response:
            record, linked = enrolment.claim_enrolment(rt(), who, code, body)
            return signed_in(registry.auth, request, linked, enrolment.enrolled(record))

        return await run_in_threadpool(claim)

    def readable(conn: Any, mine: Gate, ids: set[str]) -> set[str]:
        """Those of the recipients `ids` the caller may read (all of them for callers whose
        read of recipients has no scope)."""
        scope = mine.scope("read")
        if scope is None:
            return set(ids)
        fields = sorted({path.split(".")[0] for path in mine.access.paths.values()} - {"id"})
        found = rt().fields_of(conn, RECIPIENT_ENTITY, "id", ids, fields)
        return {rid for rid, rec in found.items() if scope.matches({**rec, "id": rid})}

    @router.get(
        f"{PREFIX}/duplicates",
        dependencies=[Depends(access.STAFF)],
        summary="Recipients that look like the same person (found after imports)",
    )
    async def duplicates(request: Request) -> Response:
        mine = access.records(request)[RECIPIENT_ENTITY]

        def read() -> list[dict[str, Any]]:
            with storage.read(registry.db.engine) as conn:
                pairs = enrolment.list_duplicates(conn)
                seen = readable(conn, mine, {r[k] for r in pairs for k in PAIR})
            return [r for r in pairs if all(r[k] in seen for k in PAIR)]

        return JSONResponse({"items": await run_in_threadpool(read)})

    @router.post(
        f"{PREFIX}/duplicates/resolve",
        dependencies=[Depends(access.STAFF)],
        summary="Take a pair off the duplicates list",
    )
    async def resolve(request: Request) -> Response:
        mine = access.records(request)[RECIPIENT_ENTITY]
        body = _object(await read_json(request, max_bytes))
        first, second = _field(body, "recipient"), _field(body, "duplicateOf")

        def write() -> bool:
            with storage.write(registry.db.engine) as conn:
                if readable(conn, mine, {first, second}) != {first, second}:
                    return False  # a pair the caller may not see is not listed for them
                return enrolment.resolve_duplicate(conn, first, second)

        if not await run_in_threadpool(write):
            raise NotFound("no such pair in the duplicates list")
        return Response(status_code=204)

    # -- walk-ins --------------------------------------------------------------------------
    @router.post(
        f"{PREFIX}/walk-in",
        dependencies=[Depends(access.STAFF)],
        summary="Enrol a walk-in and record their vaccination in one visit (one transaction)",
    )
    async def record_walk_in(request: Request) -> Response:
        mine = access.records(request)
        body = _object(await read_json(request, max_bytes))
        result = await run_in_threadpool(walk_in, rt(), body, mine)
        return JSONResponse(result, status_code=201)

    # -- stock -----------------------------------------------------------------------------
    @router.get(
        f"{PREFIX}/stock",
        dependencies=[Depends(access.STOCK_READERS)],
        summary="Stock levels by facility and vaccine, with low-stock warnings",
    )
    async def stock_levels(
        request: Request, facility: str | None = None, low: bool = False
    ) -> Response:
        scope = access.records(request)[STOCK].scope("read")
        wanted = [facility] if facility else None
        if scope is not None:  # staff: their own facility's stock (another's is not found)
            own = sorted({key for path, key in scope.alternatives if path == "facility"})
            if facility is not None and facility not in own:
                raise NotFound(f"no stock of facility {facility!r}")
            wanted = [facility] if facility else own

        def read() -> list[dict[str, Any]]:
            with storage.read(registry.db.engine) as conn:
                found = stock.levels(rt(), conn, today(), wanted)
            return [lv.as_dict() for lv in found if lv.low or not low]

        return JSONResponse({"items": await run_in_threadpool(read)})

    # -- side effects ----------------------------------------------------------------------
    @router.post(
        f"{PREFIX}/side-effects",
        dependencies=[Depends(rules.entity(SIDE_EFFECT, "create"))],
        summary="Report a side effect (AEFI) for a certificate (the recipient, or staff)",
    )
    async def report(request: Request) -> Response:
        who = access.principal(request)
        mine = registry.records(who)
        body = dict(_object(await read_json(request, max_bytes)))
        cert_id = _field(body, "certificate")
        # a certificate that does not exist is a bad reference (422, as through the API); one
        # the caller may not read is not found (404: another facility's, another person's)
        certs = access.as_programme(registry)[CERTIFICATE]
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
        if not access.in_scope(mine[CERTIFICATE], "read", cert):
            raise NotFound("no such certificate")
        body.update(
            recipient=cert["recipient"],
            facility=cert["facility"],
            program=cert["program"],
            serious=bool(body.get("seriousness")),
        )
        body.setdefault("reportedBy", "Recipient" if who.roles == {RECIPIENT} else "Staff")
        body.setdefault("reviewStatus", "Open")
        record = await run_in_threadpool(mine[SIDE_EFFECT].create, body)
        return JSONResponse(record, status_code=201)

    @router.get(
        f"{PREFIX}/side-effects/serious",
        dependencies=[Depends(access.MONITORS)],
        summary="Serious side effects, newest first (monitoring)",
    )
    async def serious(request: Request, limit: int = 100) -> Response:
        # the route's rule grants controllers too, who are not among side_effect's readers:
        # read for them on the programme's account (they see every report, as monitoring does)
        reports = access.as_programme(registry)[SIDE_EFFECT]
        search = reports.service.parser.from_params(
            [("serious", "true"), ("sort", "-_createdAt"), ("limit", str(min(max(limit, 1), 1000)))]
        )
        page = await run_in_threadpool(reports.search, search)
        return JSONResponse({"items": page.items})

    return [router]
