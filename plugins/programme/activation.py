"""Facility activation and daily rates: a vaccination is recorded only at a facility active for
its programme, and only while the facility's count for that day is below its rate.

The facility-programme record is read `FOR SHARE` (a controller suspending the facility waits
for vaccinations in flight, and they for it); the day's count is a counter taken with a
conditional update in the vaccination's own transaction (see `counters`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy.engine import Connection

from open_registry.core import Conflict
from open_registry.core.codec import parse_datetime
from open_registry.plugins.programme import counters
from open_registry.plugins.programme.runtime import FACILITY, FACILITY_PROGRAMME, Programme

ACTIVE = "Active"


@dataclass(frozen=True)
class Activation:
    """A facility's standing in a programme: status, daily rate and where they were read."""

    status: str | None
    rate: int | None
    source: str | None  # "facility_programme", "facility" (its programs[] entry) or None

    @property
    def active(self) -> bool:
        return self.status == ACTIVE


NONE = Activation(None, None, None)


def activation(rt: Programme, conn: Connection, facility: str, program: str) -> Activation:
    """The facility's activation for the programme (its record locked FOR SHARE)."""
    found = rt.one(conn, FACILITY_PROGRAMME, lock="share", facility=facility, program=program)
    if found is not None:
        return Activation(found.get("status"), found.get("rate"), FACILITY_PROGRAMME)
    if not rt.config.facility_programs_fallback:
        return NONE
    fac = rt.one(conn, FACILITY, lock="share", code=facility)
    for entry in (fac or {}).get("programs") or []:
        if entry.get("programId") == program:
            status = "Active" if entry.get("status") == "Active" else "Suspended"
            return Activation(status, entry.get("rate"), FACILITY)
    return NONE


def vaccination_day(rt: Programme, record: dict[str, Any]) -> date:
    """The programme's local day a vaccination was given on."""
    return rt.config.local_day(parse_datetime(record["date"]))


def rate_key(facility: str, program: str, day: date) -> str:
    return f"{facility}|{program}|{day.isoformat()}"


def _refuse(message: str, pointer: str, keyword: str) -> Conflict:
    return Conflict(message, errors=[{"pointer": pointer, "message": message, "keyword": keyword}])


def check_vaccination(
    rt: Programme,
    conn: Connection,
    record: dict[str, Any],
    previous: dict[str, Any] | None,
) -> None:
    """Refuse a vaccination at a facility not active for its programme or beyond its rate."""
    if not rt.config.enforce_activation:
        return
    facility, program = record["facility"], record["program"]
    day = vaccination_day(rt, record)
    key = rate_key(facility, program, day)
    moved = previous is None or counters.held(conn, counters.RATE, record["id"]) != key
    if not moved:
        return  # a correction that keeps facility, programme and day keeps its place
    found = activation(rt, conn, facility, program)
    if not found.active:
        why = "is suspended" if found.status else "is not activated"
        raise _refuse(
            f"facility {facility} {why} for programme {program}: a controller activates it",
            "/facility",
            "activation",
        )
    if not counters.take(
        conn, counters.RATE, record["id"], key, found.rate, fresh=previous is None
    ):
        raise _refuse(
            f"facility {facility} has recorded its daily rate of {found.rate} vaccinations for "
            f"programme {program} on {day.isoformat()}",
            "/date",
            "rate",
        )
