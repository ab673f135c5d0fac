"""Enrolment: enrolment codes, and duplicate recipients (the same identity, or the same name,
birth year and phone). Where people enrol (the enrol and walk-in endpoints) a duplicate is
refused in the write transaction; every recipient written any other way (the generic API, the
UI, a bulk import) is compared afterwards from the outbox, and look-alikes are listed for staff
to resolve (`GET /api/v1/programme/duplicates`).
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from plugins.programme.runtime import RECIPIENT, Programme
from plugins.programme.tables import duplicate, insert_for
from registry import Conflict, utcnow

CODE_DIGITS = 10


def new_code() -> str:
    """A random enrolment code of 10 digits (DIVOC's shape); uniqueness is the table's."""
    return "".join(secrets.choice("0123456789") for _ in range(CODE_DIGITS))


def phone_digits(phone: Any) -> str:
    """A phone number compared by its last 10 digits (country prefixes and spacing vary)."""
    return re.sub(r"\D", "", str(phone or ""))[-10:]


def birth_year(record: dict[str, Any]) -> int | None:
    """The year of birth (None when not given or not valid: validation reports that)."""
    dob = str(record.get("dob") or "")
    if dob[:4].isdigit():
        return int(dob[:4])
    yob = record.get("yob")
    return yob if isinstance(yob, int) and not isinstance(yob, bool) else None


def find_duplicates(
    rt: Programme, conn: Connection, record: dict[str, Any]
) -> list[tuple[str, str]]:
    """(recipient id, reason) of live recipients that look like `record` (not itself)."""
    service = rt.services[RECIPIENT]
    table = service.table
    own = record.get("id")
    found: list[tuple[str, str]] = []
    identity = record.get("identity")
    if isinstance(identity, str) and identity and "identity" in service.codec.blind:
        keys = service.lookup_keys("identity", [identity])
        col = table.c[service.codec.blind["identity"]]
        stmt = sa.select(table.c.id).where(col.in_(list(keys)), table.c._deleted_at.is_(None))
        found += [(rid, "identity") for (rid,) in conn.execute(stmt) if rid != own]
    phone, year = phone_digits(record.get("phone")), birth_year(record)
    if isinstance(record.get("name"), str) and phone and year is not None:
        stmt = sa.select(table).where(table.c.name == record["name"], table.c._deleted_at.is_(None))
        for row in conn.execute(stmt).mappings():
            if row["id"] == own or any(rid == row["id"] for rid, _ in found):
                continue
            other = service.codec.data(row)
            if birth_year(other) == year and phone_digits(other.get("phone")) == phone:
                found.append((row["id"], "name, birth year and phone"))
    return found


def create_with_code(service: Any, person: dict[str, Any], actor: str | None) -> dict[str, Any]:
    """Create the recipient with a new enrolment code (another one if it was taken), or with
    the code given."""
    if person.get("enrollmentCode"):
        return service.create(person, actor=actor)
    for attempt in range(5):
        try:
            return service.create({**person, "enrollmentCode": new_code()}, actor=actor)
        except Conflict as exc:
            if exc.extra.get("fields") != ["enrollmentCode"] or attempt == 4:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def check_recipient(rt: Programme, conn: Connection, record: dict[str, Any]) -> None:
    """Refuse a recipient who is enrolled already (409 naming the matching fields)."""
    if not rt.config.duplicate_check:
        return
    matches = find_duplicates(rt, conn, record)
    if not matches:
        return
    reason = matches[0][1]
    fields = ["identity"] if reason == "identity" else ["name", "dob", "phone"]
    raise Conflict(
        f"this person is enrolled already (same {reason})",
        fields=fields,
        errors=[
            {
                "pointer": f"/{f}",
                "message": f"matches an enrolled recipient ({reason})",
                "keyword": "duplicate",
            }
            for f in fields
        ],
    )


def record_duplicates(rt: Programme, conn: Connection, record: dict[str, Any]) -> int:
    """List the recipients `record` looks like (after an import); returns how many."""
    matches = find_duplicates(rt, conn, record)
    now: datetime = utcnow()
    rows = []
    for other, reason in matches:
        first, second = sorted((record["id"], other))
        rows.append(
            {"recipient_id": second, "duplicate_of": first, "reason": reason, "found_at": now}
        )
    if rows:
        conn.execute(insert_for(conn, duplicate).on_conflict_do_nothing(), rows)
    return len(rows)


def list_duplicates(conn: Connection, limit: int = 500) -> list[dict[str, Any]]:
    stmt = sa.select(duplicate).order_by(duplicate.c.found_at.desc()).limit(limit)
    return [
        {
            "recipient": r["recipient_id"],
            "duplicateOf": r["duplicate_of"],
            "reason": r["reason"],
            "foundAt": r["found_at"].isoformat(),
        }
        for r in conn.execute(stmt).mappings()
    ]


def resolve_duplicate(conn: Connection, recipient: str, duplicate_of: str) -> bool:
    """Take a pair off the list (staff merged or kept both); False if it was not listed."""
    result = conn.execute(
        sa.delete(duplicate).where(
            duplicate.c.recipient_id == recipient, duplicate.c.duplicate_of == duplicate_of
        )
    )
    return bool(result.rowcount)
