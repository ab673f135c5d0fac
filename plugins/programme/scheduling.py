"""Schedules, slots and appointments: a facility's weekly schedule per programme gives slots of
`slotMinutes` between `startTime` and `endTime` on its `days`, each with `capacity` places.
Booking takes a place of the slot and the recipient's one open booking for the programme, both
counters taken in the appointment's write transaction, so capacity holds under concurrency;
rescheduling moves the places, cancelling gives them back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection

from open_registry.core import Conflict, Invalid
from open_registry.plugins.programme import counters
from open_registry.plugins.programme.activation import activation
from open_registry.plugins.programme.runtime import SCHEDULE, VACCINE, Programme
from open_registry.plugins.programme.tables import counts

DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
BOOKED = "Booked"
#: statuses that keep the slot's place (a completed or missed appointment still used it)
HOLDS_PLACE = ("Booked", "Completed", "Missed")


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")[:2]
    return int(hours) * 60 + int(minutes)


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _invalid(errors: list[tuple[str, str, str]]) -> Invalid:
    n = len(errors)
    return Invalid(
        f"{n} field{'s' if n != 1 else ''} failed validation",
        errors=[{"pointer": p, "message": m, "keyword": k} for p, m, k in errors],
    )


def _conflict(pointer: str, message: str, keyword: str) -> Conflict:
    return Conflict(message, errors=[{"pointer": pointer, "message": message, "keyword": keyword}])


def slot_times(schedule: dict[str, Any]) -> list[str]:
    """The start times of a schedule's slots on one of its days."""
    start, end = _minutes(schedule["startTime"]), _minutes(schedule["endTime"])
    step = schedule["slotMinutes"]
    return [_hhmm(m) for m in range(start, end - step + 1, step)]


def check_schedule(record: dict[str, Any]) -> None:
    """A schedule's hours make sense (its fields are schema-checked already)."""
    errors = []
    start, end = _minutes(record["startTime"]), _minutes(record["endTime"])
    if end <= start:
        errors.append(("/endTime", "must be after the start time", "minimum"))
    elif end - start < record["slotMinutes"]:
        errors.append(("/slotMinutes", "is longer than the hours from start to end", "maximum"))
    walk_start, walk_end = record.get("walkInStart"), record.get("walkInEnd")
    if (walk_start is None) != (walk_end is None):
        missing = "/walkInEnd" if walk_end is None else "/walkInStart"
        errors.append((missing, "walk-in hours need a start and an end", "required"))
    elif walk_start is not None and walk_end is not None and _minutes(walk_end) <= _minutes(
        walk_start
    ):
        errors.append(("/walkInEnd", "must be after the walk-in start", "minimum"))
    if errors:
        raise _invalid(errors)


def slot_key(facility: str, program: str, day: str, slot: str) -> str:
    return f"{facility}|{program}|{day}|{slot}"


@dataclass
class Slot:
    time: str
    capacity: int
    booked: int

    @property
    def free(self) -> int:
        return max(0, self.capacity - self.booked)


def slots(
    rt: Programme, conn: Connection, facility: str, program: str, day: date
) -> tuple[dict[str, Any] | None, list[Slot]]:
    """A facility's schedule for the programme and its slots on `day`, with places taken."""
    schedule = rt.one(conn, SCHEDULE, facility=facility, program=program)
    if schedule is None or DAYS[day.weekday()] not in schedule["days"]:
        return schedule, []
    times = slot_times(schedule)
    keys = [slot_key(facility, program, day.isoformat(), t) for t in times]
    taken = counts(conn, counters.SLOT, keys)
    return schedule, [
        Slot(t, schedule["capacity"], taken[k]) for t, k in zip(times, keys, strict=True)
    ]


def check_appointment(
    rt: Programme,
    conn: Connection,
    record: dict[str, Any],
    previous: dict[str, Any] | None,
    today: date,
) -> None:
    """Book, move or give back an appointment's places as its status, date and slot say."""
    rid = record["id"]
    status = record["status"]
    if status not in HOLDS_PLACE:
        counters.release(conn, counters.SLOT, rid)
    if status != BOOKED:
        counters.release(conn, counters.BOOKING, rid)
        return
    missing = [
        (f"/{k}", f"a booked appointment needs its {k}", "required")
        for k in ("facility", "date", "slot")
        if not record.get(k)
    ]
    if missing:
        raise _invalid(missing)
    facility, program = record["facility"], record["program"]
    day_text, slot = record["date"], record["slot"]
    key = slot_key(facility, program, day_text, slot)
    same_place = previous is not None and counters.held(conn, counters.SLOT, rid) == key
    if not same_place:
        day = date.fromisoformat(day_text)
        _check_bookable(rt, conn, facility, program, day, slot, today)
        schedule = rt.one(conn, SCHEDULE, facility=facility, program=program)
        assert schedule is not None  # checked by _check_bookable
        if not counters.take(
            conn, counters.SLOT, rid, key, schedule["capacity"], fresh=previous is None
        ):
            raise _conflict(
                "/slot", f"the {slot} slot of {day_text} at {facility} is full", "capacity"
            )
    booking = f"{record['recipient']}|{program}"
    if not counters.take(conn, counters.BOOKING, rid, booking, 1, fresh=previous is None):
        raise _conflict(
            "/recipient",
            f"the recipient already has a booked appointment for programme {program}; "
            "reschedule or cancel it",
            "booking",
        )


def _check_bookable(
    rt: Programme,
    conn: Connection,
    facility: str,
    program: str,
    day: date,
    slot: str,
    today: date,
) -> None:
    if day < today:
        raise _invalid([("/date", f"{day.isoformat()} is in the past", "minimum")])
    horizon = rt.config.booking_horizon_days
    if day > today + timedelta(days=horizon):
        raise _invalid([("/date", f"bookings open {horizon} days ahead", "maximum")])
    if not activation(rt, conn, facility, program).active:
        raise _conflict(
            "/facility", f"facility {facility} is not active for programme {program}", "activation"
        )
    schedule = rt.one(conn, SCHEDULE, facility=facility, program=program)
    if schedule is None:
        raise _conflict(
            "/facility",
            f"facility {facility} has no schedule for programme {program}",
            "schedule",
        )
    if DAYS[day.weekday()] not in schedule["days"]:
        open_days = ", ".join(schedule["days"])
        raise _invalid(
            [
                (
                    "/date",
                    f"the facility has no appointments on {DAYS[day.weekday()]} "
                    f"(open: {open_days})",
                    "schedule",
                )
            ]
        )
    if slot not in slot_times(schedule):
        raise _invalid(
            [
                (
                    "/slot",
                    f"{slot} is not a slot start of this schedule "
                    f"({schedule['startTime']}-{schedule['endTime']} every "
                    f"{schedule['slotMinutes']} min)",
                    "schedule",
                )
            ]
        )


def check_walk_in(
    rt: Programme, conn: Connection, facility: str, program: str, when: datetime
) -> None:
    """A walk-in must come on the schedule's walk-in days and hours (when it has them)."""
    schedule = rt.one(conn, SCHEDULE, facility=facility, program=program)
    if schedule is None or not schedule.get("walkInStart"):
        return
    local = when.astimezone(rt.config.tz)
    days = schedule.get("walkInDays") or schedule["days"]
    minutes = local.hour * 60 + local.minute
    inside = _minutes(schedule["walkInStart"]) <= minutes < _minutes(schedule["walkInEnd"])
    if DAYS[local.weekday()] not in days or not inside:
        raise _conflict(
            "/vaccination/date",
            f"facility {facility} takes walk-ins for programme {program} on "
            f"{', '.join(days)} from {schedule['walkInStart']} to {schedule['walkInEnd']}",
            "walk-in",
        )


def next_dose(
    rt: Programme,
    conn: Connection,
    vaccination: dict[str, Any],
    day: date,
    vaccines: Mapping[str, dict[str, Any]] | None = None,
) -> dict[str, Any] | None:
    """The suggested appointment for the next dose after `vaccination` (given on `day`), from
    its vaccine's `doseIntervals`; None when the schedule is complete or has no interval.
    `vaccines`: the vaccines by code, read beforehand for a batch (else read here)."""
    dose, total = vaccination.get("dose"), vaccination.get("totalDoses")
    if not isinstance(dose, int) or not isinstance(total, int) or dose >= total:
        return None
    code = vaccination.get("vaccine")
    if vaccines is None:
        vaccines = rt.fetch(conn, VACCINE, "code", [code])
    vaccine = vaccines.get(code) if isinstance(code, str) else None
    intervals = (vaccine or {}).get("doseIntervals") or []
    if len(intervals) < dose:
        return None
    interval = intervals[dose - 1]
    suggestion = {
        "recipient": vaccination["recipient"],
        "program": vaccination["program"],
        "dose": dose + 1,
        "facility": vaccination["facility"],
        "vaccine": vaccination["vaccine"],
        "status": "Suggested",
        "dueFrom": (day + timedelta(days=interval["min"])).isoformat(),
    }
    if interval.get("max") is not None:
        suggestion["dueUntil"] = (day + timedelta(days=interval["max"])).isoformat()
    return suggestion
