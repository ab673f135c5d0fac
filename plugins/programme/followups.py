"""Work that follows committed writes, done by the outbox worker in its transaction: tell a
facility about its activation or rate, suggest the next dose once a certificate is issued,
complete the appointment a vaccination fulfils, give imported recipients enrolment codes and
list the ones that look like duplicates, and flag serious side effects to monitoring."""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from open_registry.core import Conflict
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
    certs = [
        c
        for c in rt.fetch(conn, CERTIFICATE, "id", cert_ids).values()
        if (c.get("revision") or 1) == 1
    ]
    vaccinations = rt.fetch(conn, VACCINATION, "id", (c["vaccination"] for c in certs))
    service = rt.services[APPOINTMENT]
    table = service.table
    for cert in certs:
        v = vaccinations.get(cert["vaccination"])
        if v is None:
            continue
        suggestion = next_dose(rt, conn, v, vaccination_day(rt, v))
        if suggestion is None:
            continue
        exists = conn.execute(
            sa.select(table.c.id)
            .where(
                table.c.recipient == v["recipient"],
                table.c.program == v["program"],
                table.c.dose == suggestion["dose"],
                table.c._deleted_at.is_(None),
            )
            .limit(1)
        ).first()
        if exists is None:
            service.create(suggestion, actor=ACTOR)


def _complete_appointments(
    rt: Programme,
    conn: Connection,
    vaccination_ids: list[str],
    known: dict[str, dict[str, Any]] | None = None,
) -> None:
    """A vaccination completes its recipient's booked (or suggested) appointment for the
    programme and dose (one query for the batch, an update per appointment completed)."""
    if known is not None and all(i in known for i in vaccination_ids):
        vaccinations = [known[i] for i in vaccination_ids]
    else:
        vaccinations = list(rt.fetch(conn, VACCINATION, "id", vaccination_ids).values())
    if not vaccinations:
        return
    service = rt.services[APPOINTMENT]
    table = service.table
    open_appointments: dict[tuple[str, str], list[dict[str, Any]]] = {}
    people = sorted({v["recipient"] for v in vaccinations})
    for i in range(0, len(people), 500):
        rows = conn.execute(
            sa.select(table).where(
                table.c.recipient.in_(people[i : i + 500]),
                table.c.status.in_(["Booked", "Suggested"]),
                table.c._deleted_at.is_(None),
            )
        ).mappings()
        for row in rows:
            appt = service.codec.to_record(row)
            open_appointments.setdefault((appt["recipient"], appt["program"]), []).append(appt)
    for v in vaccinations:
        for appt in open_appointments.get((v["recipient"], v["program"]), []):
            if appt.get("dose") not in (None, v.get("dose")):
                continue
            patch = {"status": "Completed", "vaccination": v["id"]}
            if appt["status"] == "Suggested":
                patch.update(facility=v["facility"], date=vaccination_day(rt, v).isoformat())
            service.update(appt["id"], patch, actor=ACTOR, patch=True)


def _settle_enrolments(rt: Programme, conn: Connection, ids: list[str]) -> None:
    service = rt.services[RECIPIENT]
    for person in rt.fetch(conn, RECIPIENT, "id", ids).values():
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
            enrolment.record_duplicates(rt, conn, person)


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
