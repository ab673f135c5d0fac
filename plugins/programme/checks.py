"""The write-time checks of the programme entities, run by `before_write` inside each write's
transaction: what a vaccination, appointment, schedule, batch, recipient or side-effect report
must satisfy before it is stored. (Recipients are checked for duplicates where people enrol:
the enrol and walk-in endpoints; the generic API and imports are checked afterwards, see
`followups`.)"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from open_registry.core import Invalid, utcnow
from open_registry.plugins.programme import activation, scheduling, stock
from open_registry.plugins.programme.runtime import (
    APPOINTMENT,
    CERTIFICATE,
    SCHEDULE,
    SIDE_EFFECT,
    STOCK,
    VACCINATION,
    Programme,
)


def check(
    rt: Programme,
    entity: str,
    action: str,
    record: dict[str, Any],
    previous: dict[str, Any] | None,
    conn: Connection,
    now: datetime | None = None,
) -> None:
    """Refuse the write (raise) when `record` breaks a programme rule."""
    if entity == VACCINATION:
        _vaccination(rt, conn, record, previous)
    elif entity == APPOINTMENT:
        today = rt.config.local_day(now or utcnow())
        scheduling.check_appointment(rt, conn, record, previous, today)
    elif entity == SCHEDULE:
        scheduling.check_schedule(record)
    elif entity == STOCK and previous is not None:
        stock.check_stock_change(rt, conn, record, previous)
    elif entity == SIDE_EFFECT:
        _side_effect(rt, conn, record)


def _vaccination(
    rt: Programme, conn: Connection, record: dict[str, Any], previous: dict[str, Any] | None
) -> None:
    activation.check_vaccination(rt, conn, record, previous)
    day = activation.vaccination_day(rt, record)
    moved = previous is None or any(
        record.get(k) != previous.get(k) for k in ("facility", "vaccine", "batch", "date")
    )
    stock.consume(rt, conn, record, day, moved, fresh=previous is None)


def _side_effect(rt: Programme, conn: Connection, record: dict[str, Any]) -> None:
    """A report's recipient, facility and programme are its certificate's; `serious` says
    whether a seriousness criterion is given."""
    errors = []
    cert = rt.fetch(conn, CERTIFICATE, "id", [record.get("certificate")]).get(
        record.get("certificate")
    )
    if cert is not None:
        for field in ("recipient", "facility", "program"):
            if field in record and record[field] != cert.get(field):
                errors.append(
                    {
                        "pointer": f"/{field}",
                        "message": f"must be the certificate's {field} ({cert.get(field)})",
                        "keyword": "const",
                    }
                )
    serious = bool(record.get("seriousness"))
    if record.get("serious", serious) != serious or (serious and "serious" not in record):
        errors.append(
            {
                "pointer": "/serious",
                "message": f"must be {str(serious).lower()}: it says whether a seriousness "
                "criterion applies",
                "keyword": "const",
            }
        )
    if errors:
        raise Invalid(f"{len(errors)} field(s) failed validation", errors=errors)
