"""Enrolment: enrolment codes, and duplicate recipients (the same identity, or the same name,
birth year and phone). Where people enrol (the enrol and walk-in endpoints) a duplicate is
refused in the write transaction; every recipient written any other way (the generic API, the
UI, a bulk import) is compared afterwards from the outbox, and look-alikes are listed for staff
to resolve (`GET /api/v1/programme/duplicates`).

Self-enrolment: a person signs up with a one-time code (`otp_signup`), which makes a user with
the `recipient` role and no record; they then enrol (a new record, whose phone or email must be
the one they signed in with) or claim the record an agency pre-enrolled them with (its
enrolment code plus that phone or email). Either way the record is linked to the user in the
same transaction, and they get a new token naming it.
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from open_registry.core import (
    Conflict,
    Forbidden,
    Gate,
    Invalid,
    NotFound,
    Principal,
    Unauthorized,
    storage,
    system,
    utcnow,
)
from open_registry.plugins.programme.runtime import ACTOR, RECIPIENT, Programme
from open_registry.plugins.programme.tables import duplicate, insert_for

CODE_DIGITS = 10
RECIPIENT_ROLE = "recipient"


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


#: values in one IN list of the look-alike queries
_IN_CHUNK = 500


def find_duplicates(
    rt: Programme, conn: Connection, record: dict[str, Any]
) -> list[tuple[str, str]]:
    """(recipient id, reason) of live recipients that look like `record` (not itself)."""
    return find_duplicates_many(rt, conn, [record])[0]


def find_duplicates_many(
    rt: Programme, conn: Connection, records: list[dict[str, Any]]
) -> list[list[tuple[str, str]]]:
    """`find_duplicates` of each of `records` (in their order), in two queries per 500 of
    them: the recipients holding one of their identities, then those with one of their
    names (compared on birth year and phone here), instead of two per record."""
    found: list[list[tuple[str, str]]] = [[] for _ in records]
    _same_identity(rt, conn, records, found)
    _same_name_year_phone(rt, conn, records, found)
    return found


def _same_identity(
    rt: Programme, conn: Connection, records: list[dict[str, Any]], found: list[list[Any]]
) -> None:
    service = rt.services[RECIPIENT]
    if "identity" not in service.codec.blind:
        return
    table = service.table
    col = table.c[service.codec.blind["identity"]]
    wanted: dict[Any, list[int]] = {}  # blind value -> the records that hold it
    for i, record in enumerate(records):
        identity = record.get("identity")
        if isinstance(identity, str) and identity:
            for key in service.lookup_keys("identity", [identity]):
                wanted.setdefault(key, []).append(i)
    keys = list(wanted)
    for n in range(0, len(keys), _IN_CHUNK):
        stmt = sa.select(table.c.id, col).where(
            col.in_(keys[n : n + _IN_CHUNK]), table.c._deleted_at.is_(None)
        )
        for rid, key in conn.execute(stmt):
            found_by = [i for i in wanted.get(key, ()) if rid != records[i].get("id")]
            for i in found_by:
                found[i].append((rid, "identity"))


def _same_name_year_phone(
    rt: Programme, conn: Connection, records: list[dict[str, Any]], found: list[list[Any]]
) -> None:
    service = rt.services[RECIPIENT]
    table = service.table
    by_name: dict[str, list[tuple[int, str, int]]] = {}  # name -> (record, phone, year)
    for i, record in enumerate(records):
        name, phone = record.get("name"), phone_digits(record.get("phone"))
        year = birth_year(record)
        if isinstance(name, str) and phone and year is not None:
            by_name.setdefault(name, []).append((i, phone, year))
    names = list(by_name)
    for n in range(0, len(names), _IN_CHUNK):
        stmt = sa.select(table).where(
            table.c.name.in_(names[n : n + _IN_CHUNK]), table.c._deleted_at.is_(None)
        )
        for row in conn.execute(stmt).mappings():
            other = service.codec.data(row)
            for i, phone, year in by_name[row["name"]]:
                if row["id"] == records[i].get("id") or any(r == row["id"] for r, _ in found[i]):
                    continue
                if birth_year(other) == year and phone_digits(other.get("phone")) == phone:
                    found[i].append((row["id"], "name, birth year and phone"))


def create_with_code(gate: Gate, person: dict[str, Any]) -> dict[str, Any]:
    """Create the recipient through `gate` (the caller's, whose rules apply) with a new
    enrolment code (another one if it was taken), or with the code given."""
    if person.get("enrollmentCode"):
        return gate.create(person)
    for attempt in range(5):
        try:
            return gate.create({**person, "enrollmentCode": new_code()})
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


def record_duplicates(rt: Programme, conn: Connection, records: list[dict[str, Any]]) -> int:
    """List the recipients each of `records` looks like (after an import, from the outbox);
    returns how many pairs."""
    now: datetime = utcnow()
    pairs: dict[tuple[str, str], str] = {}  # two look-alikes of one batch: one pair
    for record, matches in zip(records, find_duplicates_many(rt, conn, records), strict=True):
        for other, reason in matches:
            first, second = sorted((record["id"], other))
            pairs.setdefault((second, first), reason)
    rows = [
        {"recipient_id": second, "duplicate_of": first, "reason": reason, "found_at": now}
        for (second, first), reason in pairs.items()
    ]
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


# -- self-enrolment ------------------------------------------------------------------------------
def enrolled(record: dict[str, Any]) -> dict[str, Any]:
    """What the enrol endpoints answer about the record."""
    return {
        "id": record["id"],
        "enrollmentCode": record["enrollmentCode"],
        "enrollmentType": record.get("enrollmentType"),
    }


def signed_up_user(auth: Any, who: Principal) -> Any:
    """The caller's user row, when they are a user with the recipient role and no recipient
    record yet (else 403 / 409)."""
    if who.kind != "user" or RECIPIENT_ROLE not in who.roles:
        raise Forbidden("only a person signed in with the recipient role enrols themselves")
    if who.recipient:
        raise Conflict(
            f"you are enrolled already (recipient {who.recipient})", fields=["recipient"]
        )
    user = auth.users.get(who.subject)
    if user is None or user["disabled"]:
        raise Unauthorized("sign in again", headers={"WWW-Authenticate": "Bearer"})
    if user["recipient"]:  # enrolled since this token was issued
        raise Conflict("you are enrolled already: sign in again to see your record")
    return user


def check_own_contact(auth: Any, user: Any, body: dict[str, Any]) -> None:
    """A self-enrolled record carries the mobile number or email its person signed in with."""
    users = auth.users
    if users.has_identifier(user, "sms", body.get("phone")) or users.has_identifier(
        user, "email", body.get("email")
    ):
        return
    field, what = ("phone", "mobile number") if user["phone_bi"] else ("email", "email address")
    raise Invalid(
        "1 field failed validation",
        errors=[
            {
                "pointer": f"/{field}",
                "message": f"must be the {what} you signed in with",
                "keyword": "const",
            }
        ],
    )


def _same_contact(field: str, given: Any, stored: Any) -> bool:
    if not isinstance(given, str) or not isinstance(stored, str):
        return False
    if field == "phone":
        return bool(phone_digits(given)) and phone_digits(given) == phone_digits(stored)
    return given.strip().lower() == stored.strip().lower()


def enrol_self(rt: Programme, who: Principal, body: dict[str, Any]) -> tuple[dict, Principal]:
    """Enrol the signed-up caller: a new record (duplicates refused, its phone or email the
    one they signed in with) linked to their user in one transaction; (record, the caller as
    they are now).

    A recipient may not create recipient records through the generic API: the rules here are
    the programme's (a user with the recipient role and no record yet, their own phone or
    email), and the record is written on the programme's account (`system("programme")`),
    the audit log naming the person in the `auth.enrolled` event."""
    auth = rt.registry.auth
    user = signed_up_user(auth, who)
    body = {**body, "enrollmentType": "SELF_ENROLLMENT"}
    check_own_contact(auth, user, body)
    programme = rt.registry.records(system(ACTOR))[RECIPIENT]
    with storage.write(rt.registry.db.engine) as conn:
        check_recipient(rt, conn, body)
        record = create_with_code(programme, body)
        linked = auth.users.link_recipient(user["username"], record["id"])
    auth.event("auth.enrolled", actor=who.actor, recipient=record["id"], how="self")
    return record, linked


def claim_enrolment(
    rt: Programme, who: Principal, code: str, body: dict[str, Any]
) -> tuple[dict, Principal]:
    """Link the signed-up caller to the record pre-enrolled with `code` (see `claimable`);
    attempts are rate limited per user. (record, the caller as they are now)."""
    auth = rt.registry.auth
    user = signed_up_user(auth, who)
    s = auth.settings
    auth.limiter.hit(
        f"enrol-claim:{user['username']}",
        s.otp_max_attempts + 2,
        s.otp_rate_window_seconds,
        "enrolment code attempts",
    )
    with storage.write(rt.registry.db.engine) as conn:
        record = claimable(rt, conn, auth, user, code, body)
        linked = auth.users.link_recipient(user["username"], record["id"])
    auth.event("auth.enrolled", actor=who.actor, recipient=record["id"], how="claim")
    return record, linked


def claimable(
    rt: Programme, conn: Connection, auth: Any, user: Any, code: str, body: dict[str, Any]
) -> dict[str, Any]:
    """The pre-enrolled record with enrolment code `code` whose phone (or email) is the one the
    user signed in with and gives in `body`; one 404 for every mismatch (no oracle of codes)."""
    refused = NotFound(
        "no enrolment with this code for the mobile number or email you signed in with"
    )
    record = rt.one(conn, RECIPIENT, enrollmentCode=code)
    if record is None:
        raise refused
    if not any(
        auth.users.has_identifier(user, channel, body.get(field))
        and _same_contact(field, body.get(field), record.get(field))
        for channel, field in (("sms", "phone"), ("email", "email"))
    ):
        raise refused
    users = auth.users.table
    holder = conn.execute(
        sa.select(users.c.username).where(users.c.recipient == record["id"]).limit(1)
    ).first()
    if holder is not None:
        raise Conflict(
            "this enrolment is linked to another sign-in already; ask the facility",
            fields=["enrollmentCode"],
        )
    return record
