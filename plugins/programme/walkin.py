"""Walk-ins: a person who comes without an appointment is enrolled (or found by id or enrolment
code) and vaccinated in one visit and one transaction: if the vaccination is refused, no
recipient is left behind. Both records are written through the caller's gates: staff record
walk-ins at their own facility only (403 naming the facility otherwise, before anything is
written)."""

from __future__ import annotations

import contextlib
from typing import Any

from open_registry.core import Gate, Invalid, Records, RegistryError, storage, utcnow
from open_registry.core.codec import format_datetime, parse_datetime
from open_registry.plugins.programme import access, enrolment
from open_registry.plugins.programme.runtime import RECIPIENT, VACCINATION, Programme
from open_registry.plugins.programme.scheduling import check_walk_in


def _prefixed(exc: RegistryError, prefix: str) -> RegistryError:
    """The same error with its pointers under `prefix` (`/name` -> `/recipient/name`)."""
    if exc.errors:
        exc.errors = [
            {
                **e,
                "pointer": e["pointer"]
                if e["pointer"].startswith(prefix + "/")
                else prefix + e["pointer"],
            }
            for e in exc.errors
        ]
    return exc


def _missing(pointer: str, message: str) -> Invalid:
    return Invalid(
        "1 field failed validation",
        errors=[{"pointer": pointer, "message": message, "keyword": "required"}],
    )


def walk_in(rt: Programme, body: dict[str, Any], records: Records) -> dict[str, Any]:
    """Enrol (or find) the recipient and record the vaccination, all or nothing; `records`:
    the caller's (`registry.records(principal)`)."""
    vaccination = body.get("vaccination")
    if not isinstance(vaccination, dict):
        raise _missing("/vaccination", "the vaccination to record (an object) is required")
    facility = body.get("facility") or vaccination.get("facility") or records.principal.facility
    if not isinstance(facility, str):
        raise _missing("/facility", "the facility's code is required")
    vaccinations = records[VACCINATION]
    # at the caller's own facility (403 naming /facility), before anything else is looked at
    access.check_scope(vaccinations, "create", {"facility": facility})
    program = vaccination.get("program")
    when = vaccination.get("date") or format_datetime(utcnow())
    engine = rt.registry.db.engine
    with storage.write(engine) as conn:
        rt.ensure(conn)
        if isinstance(program, str) and isinstance(when, str):
            # a bad date is named by the vaccination's own validation
            with contextlib.suppress(ValueError):
                check_walk_in(rt, conn, facility, program, parse_datetime(when))
        person = _recipient(rt, conn, body, records[RECIPIENT])
        record = {**vaccination, "recipient": person["id"], "facility": facility, "date": when}
        try:
            done = vaccinations.create(record)
        except RegistryError as exc:
            raise _prefixed(exc, "/vaccination") from None
    return {
        "recipient": {
            "id": person["id"],
            "name": person.get("name"),
            "enrollmentCode": person.get("enrollmentCode"),
            "enrolled": person.get("_new", False),
        },
        "vaccination": done,
    }


def _recipient(rt: Programme, conn: Any, body: dict[str, Any], people: Gate) -> dict[str, Any]:
    """The person of the walk-in: found by id or enrolment code among those the caller may
    read, or enrolled through the caller's gate `people`."""
    if body.get("recipientId"):
        found = rt.one(conn, RECIPIENT, id=body["recipientId"])
        if found is None or not access.in_scope(people, "read", found):
            raise Invalid(
                "1 field failed validation",
                errors=[
                    {
                        "pointer": "/recipientId",
                        "message": "no such recipient",
                        "keyword": "reference",
                    }
                ],
            )
        return found
    if body.get("enrollmentCode"):
        found = rt.one(conn, RECIPIENT, enrollmentCode=body["enrollmentCode"])
        if found is None or not access.in_scope(people, "read", found):
            raise Invalid(
                "1 field failed validation",
                errors=[
                    {
                        "pointer": "/enrollmentCode",
                        "message": "no recipient has this enrolment code",
                        "keyword": "reference",
                    }
                ],
            )
        return found
    person = body.get("recipient")
    if not isinstance(person, dict):
        raise _missing(
            "/recipient",
            "the person to enrol (an object), a recipientId or an enrollmentCode is required",
        )
    person = {"enrollmentType": "WALK_IN", **person}
    try:
        enrolment.check_recipient(rt, conn, person)
        created = enrolment.create_with_code(people, person)
    except RegistryError as exc:
        raise _prefixed(exc, "/recipient") from None
    return {**created, "_new": True}
