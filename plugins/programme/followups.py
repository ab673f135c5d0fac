"""Work that follows committed writes, done by the outbox worker in its transaction: tell a
facility about its activation or rate, suggest the next dose once a certificate is issued,
complete the appointment a vaccination fulfils, give imported recipients enrolment codes and
list the ones that look like duplicates, and flag serious side effects to monitoring."""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from open_registry.core import Conflict, Invalid, utcnow
from open_registry.plugins.programme import enrolment, notify
from open_registry.plugins.programme.activation import vaccination_day
from open_registry.plugins.programme.runtime import (
    ACTOR,
    APPOINTMENT,
    CERTIFICATE,
    FACILITY_PROGRAMME,
    RECIPIENT,
    SIDE_EFFECT,
    VACCINATION,
    VACCINE,
    Programme,
)
from open_registry.plugins.programme.scheduling import next_dose

log = logging.getLogger("registry.programme")


def _kind(event: dict[str, Any]) -> str:
    return event["event"].rsplit(".", 1)[-1]


def _latest(events: list[dict[str, Any]], entity: str, kinds: tuple[str, ...]) -> list[str]:
    """Record ids of `entity` with an event of one of `kinds` in the batch (once each)."""
    seen: dict[str, None] = {}
    for e in events:
        if e["entity"] == entity and _kind(e) in kinds:
            seen[e["record_id"]] = None
    return list(seen)


def follow_up(
    rt: Programme,
    conn: Connection,
    events: list[dict[str, Any]],
    seen: dict[str, dict[str, dict[str, Any]]] | None = None,
) -> None:
    """The follow-ups of a batch (`seen`: records the rollups read already, by entity and id)."""
    seen = seen or {}
    _tell_facilities(rt, conn, events)
    if rt.has(APPOINTMENT) and (ids := _latest(events, CERTIFICATE, ("created",))):
        _suggest_next_doses(rt, conn, ids)
    if rt.has(APPOINTMENT) and (ids := _latest(events, VACCINATION, ("created",))):
        _complete_appointments(rt, conn, ids, seen.get(VACCINATION))
    if ids := _latest(events, RECIPIENT, ("created",)):
        _settle_enrolments(rt, conn, ids)
    serious_news = [
        e
        for e in events
        if e["entity"] == SIDE_EFFECT
        and {"serious", "seriousness"} & set((e.get("payload") or {}).get("fields") or [])
    ]
    if serious_news:
        _flag_serious(rt, conn, serious_news)


def _tell_facilities(rt: Programme, conn: Connection, events: list[dict[str, Any]]) -> None:
    """A notice to the facility for each change of its activation (queued, sent afterwards)."""
    for event in events:
        if event["entity"] == FACILITY_PROGRAMME and _kind(event) in ("created", "updated"):
            notify.queue(conn, rt.registry, event, notify.FACILITY_CHANGED)


def _suggest_next_doses(rt: Programme, conn: Connection, cert_ids: list[str]) -> None:
    """The next dose's suggested appointment for each first-revision certificate of the batch:
    one query for the appointments already there, then ONE batch write (`create_many`:
    validation, one reference query per reference, `before_write` each, one audit append and
    one outbox insert for the lot), not a record-service call per certificate."""
    certs = [
        c
        for c in rt.fetch(conn, CERTIFICATE, "id", cert_ids).values()
        if (c.get("revision") or 1) == 1
    ]
    vaccinations = rt.fetch(conn, VACCINATION, "id", (c["vaccination"] for c in certs))
    # the batch's vaccines in one query (a few codes for thousands of vaccinations)
    codes = {v["vaccine"] for v in vaccinations.values() if isinstance(v.get("vaccine"), str)}
    vaccines = rt.fetch(conn, VACCINE, "code", codes)
    wanted: dict[tuple[str, str, int], dict[str, Any]] = {}
    for cert in certs:
        v = vaccinations.get(cert["vaccination"])
        if v is None:
            continue
        suggestion = next_dose(rt, conn, v, vaccination_day(rt, v), vaccines)
        if suggestion is not None:
            key = (suggestion["recipient"], suggestion["program"], suggestion["dose"])
            wanted.setdefault(key, suggestion)  # one per recipient, programme and dose
    if not wanted:
        return
    service = rt.services[APPOINTMENT]
    table = service.table
    people = sorted({k[0] for k in wanted})
    for i in range(0, len(people), 500):
        there = conn.execute(
            sa.select(table.c.recipient, table.c.program, table.c.dose).where(
                table.c.recipient.in_(people[i : i + 500]), table.c._deleted_at.is_(None)
            )
        )
        for recipient, program, dose in there:
            wanted.pop((recipient, program, dose), None)
    if wanted:
        service.create_many([(None, s) for s in wanted.values()], actor=ACTOR)


def _complete_appointments(
    rt: Programme,
    conn: Connection,
    vaccination_ids: list[str],
    known: dict[str, dict[str, Any]] | None = None,
) -> None:
    """A vaccination completes its recipient's booked (or suggested) appointment for the
    programme and dose: one query for the batch's open appointments, then ONE batch write of
    every completed one (`write_batch` with each checked as an update would be: the schema,
    the references it changes, `before_write`)."""
    if known is not None and all(i in known for i in vaccination_ids):
        vaccinations = [known[i] for i in vaccination_ids]
    else:
        vaccinations = list(rt.fetch(conn, VACCINATION, "id", vaccination_ids).values())
    if not vaccinations:
        return
    service = rt.services[APPOINTMENT]
    table = service.table
    open_appointments: dict[tuple[str, str], list[tuple[Any, dict[str, Any]]]] = {}
    people = sorted({v["recipient"] for v in vaccinations})
    for i in range(0, len(people), 500):
        stmt = sa.select(table).where(
            table.c.recipient.in_(people[i : i + 500]),
            table.c.status.in_(["Booked", "Suggested"]),
            table.c._deleted_at.is_(None),
        )
        if conn.dialect.name == "postgresql":
            stmt = stmt.with_for_update()  # as `update` locks the row it changes
        for row in conn.execute(stmt).mappings():
            appt = service.codec.to_record(row)
            key = (appt["recipient"], appt["program"])
            open_appointments.setdefault(key, []).append((row, appt))
    updates: dict[str, tuple[Any, dict[str, Any], list[str]]] = {}
    for v in vaccinations:
        for row, appt in open_appointments.get((v["recipient"], v["program"]), []):
            if appt.get("dose") not in (None, v.get("dose")) or appt["id"] in updates:
                continue
            patch = {"status": "Completed", "vaccination": v["id"]}
            if appt["status"] == "Suggested":
                patch.update(facility=v["facility"], date=vaccination_day(rt, v).isoformat())
            old = service.codec.data(row)
            new = {**old, **patch}
            changed = sorted(k for k in new if old.get(k) != new[k])
            if changed:
                updates[appt["id"]] = (row, new, changed)
    if updates:
        _write_updates(service, conn, list(updates.values()))


def _write_updates(
    service: Any, conn: Connection, updates: list[tuple[Any, dict[str, Any], list[str]]]
) -> None:
    """Updates of already-read rows as one `write_batch`, each new record checked against the
    schema and the references among its changed fields (one query per reference)."""
    errors = []
    for i, (_, new, _) in enumerate(updates):
        errors += [{**e.as_dict(), "pointer": f"/{i}{e.pointer}"} for e in service.check_body(new)]
    found = [
        [
            (i, f"/{ref.path}", new[ref.path])
            for i, (_, new, changed) in enumerate(updates)
            if ref.path in changed and new.get(ref.path) is not None
        ]
        for ref in service.entity.references
    ]
    for i, problems in sorted(service.reference_errors(conn, found).items()):
        errors += [{**e.as_dict(), "pointer": f"/{i}{e.pointer}"} for e in problems]
    if errors:
        raise Invalid(f"{len(errors)} field(s) of completed appointments failed", errors=errors)
    service.write_batch(conn, updates=updates, actor=ACTOR, at=utcnow())


def _settle_enrolments(rt: Programme, conn: Connection, ids: list[str]) -> None:
    service = rt.services[RECIPIENT]
    people = list(rt.fetch(conn, RECIPIENT, "id", ids).values())
    for person in people:
        pre_enrolled = person.get("enrollmentType") == "PRE_ENROLLMENT"
        if pre_enrolled and not person.get("enrollmentCode"):  # an agency's import
            for _ in range(5):
                try:
                    service.update(
                        person["id"],
                        {"enrollmentCode": enrolment.new_code()},
                        actor=ACTOR,
                        patch=True,
                    )
                    break
                except Conflict:
                    continue  # the code was taken: draw another
    if rt.config.duplicate_check:
        enrolment.record_duplicates(rt, conn, people)


def _flag_serious(rt: Programme, conn: Connection, events: list[dict[str, Any]]) -> None:
    """Serious side effects: a warning in the log and a notice to monitoring (queued)."""
    ids = [e["record_id"] for e in events]
    reports = rt.fetch(conn, SIDE_EFFECT, "id", ids)
    for event in events:
        report = reports.get(event["record_id"])
        if report is None or not report.get("serious"):
            continue
        log.warning(
            "serious side effect reported: report %s, certificate %s, facility %s",
            report["id"],
            report.get("certificate"),
            report.get("facility"),
        )
        notify.queue(conn, rt.registry, event, notify.SERIOUS_SIDE_EFFECT)
