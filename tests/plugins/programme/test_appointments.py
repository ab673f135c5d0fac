"""Schedules, slots and appointments: booking, rescheduling and cancelling keep slot places
and one open booking per recipient right; the next dose is suggested from the vaccine's dose
intervals once a certificate is issued; recording the dose completes the appointment."""

from __future__ import annotations

from datetime import date, timedelta

import sqlalchemy as sa

from open_registry.plugins.programme.followups import _suggest_next_doses
from open_registry.plugins.programme.runtime import runtime
from tests.plugins.programme.conftest import (
    FACILITY,
    PROGRAM,
    Ops,
    at,
    next_weekday,
    today,
)


def book(ops: Ops, recipient: str, day: date, slot: str = "09:00", **extra):
    return ops.client.post(
        "/api/v1/programme/appointments",
        json={
            "recipient": recipient,
            "program": PROGRAM,
            "facility": FACILITY,
            "date": day.isoformat(),
            "slot": slot,
            **extra,
        },
    )


def slots(ops: Ops, day: date) -> dict[str, dict]:
    resp = ops.client.get(
        "/api/v1/programme/slots", params={"facility": FACILITY, "program": PROGRAM, "day": day}
    )
    assert resp.status_code == 200, resp.text
    return {s["time"]: s for s in resp.json()["slots"]}


def test_slots_come_from_the_weekly_schedule(ops: Ops):
    ops.activate()
    ops.schedule(
        days=["Mon", "Wed"],
        startTime="09:00",
        endTime="11:00",
        slotMinutes=45,
        capacity=3,
        walkInStart="14:00",
        walkInEnd="16:00",
    )
    monday = next_weekday(0)
    found = ops.client.get(
        "/api/v1/programme/slots", params={"facility": FACILITY, "program": PROGRAM, "day": monday}
    ).json()
    assert [s["time"] for s in found["slots"]] == ["09:00", "09:45"]  # 10:30 would end at 11:15
    assert found["walkIn"] == {"days": ["Mon", "Wed"], "start": "14:00", "end": "16:00"}
    assert slots(ops, next_weekday(1)) == {}  # no appointments on Tuesdays


def test_bad_schedules_are_refused_naming_the_field(ops: Ops):
    base = {
        "facility": FACILITY,
        "program": PROGRAM,
        "days": ["Mon"],
        "startTime": "12:00",
        "endTime": "09:00",
        "slotMinutes": 30,
        "capacity": 5,
    }
    resp = ops.client.post("/api/v1/schedule", json=base)
    assert resp.status_code == 422 and resp.json()["errors"][0]["pointer"] == "/endTime"
    resp = ops.client.post("/api/v1/schedule", json={**base, "endTime": "12:20"})
    assert resp.json()["errors"][0]["pointer"] == "/slotMinutes"
    resp = ops.client.post(
        "/api/v1/schedule", json={**base, "endTime": "13:00", "walkInStart": "14:00"}
    )
    assert resp.json()["errors"][0]["pointer"] == "/walkInEnd"
    resp = ops.client.post("/api/v1/schedule", json={**base, "startTime": "9am"})
    assert resp.json()["errors"][0]["pointer"] == "/startTime"


def test_book_reschedule_and_cancel_keep_the_places_right(ops: Ops):
    ops.activate()
    ops.schedule(capacity=2)
    a, b, c = (p["id"] for p in ops.recipients(3))
    monday, tuesday = next_weekday(0), next_weekday(1)
    first = book(ops, a, monday)
    assert first.status_code == 201, first.text
    assert first.json()["status"] == "Booked"
    assert book(ops, b, monday).status_code == 201
    full = book(ops, c, monday)
    assert full.status_code == 409 and full.json()["errors"][0]["pointer"] == "/slot"
    assert slots(ops, monday)["09:00"]["free"] == 0
    # one open booking per recipient and programme
    twice = book(ops, a, tuesday)
    assert twice.status_code == 409 and twice.json()["errors"][0]["pointer"] == "/recipient"
    # rescheduling frees the old place and takes the new one
    moved = ops.post(
        f"/api/v1/programme/appointments/{first.json()['id']}/reschedule",
        {"date": tuesday.isoformat(), "slot": "10:30"},
    )
    assert moved.status_code == 200, moved.text
    assert slots(ops, monday)["09:00"]["booked"] == 1
    assert slots(ops, tuesday)["10:30"]["booked"] == 1
    assert book(ops, c, monday).status_code == 201
    # cancelling gives the place and the booking back
    cancelled = ops.post(f"/api/v1/programme/appointments/{first.json()['id']}/cancel", {})
    assert cancelled.json()["status"] == "Cancelled"
    assert slots(ops, tuesday)["10:30"]["booked"] == 0
    assert book(ops, a, monday, slot="11:30").status_code == 201
    again = ops.post(f"/api/v1/programme/appointments/{first.json()['id']}/cancel", {})
    assert again.status_code == 422


def test_bookings_must_fit_the_schedule_and_the_calendar(ops: Ops):
    ops.activate()
    ops.schedule()
    a = ops.recipients(1)[0]["id"]
    saturday = next_weekday(5)
    cases = {
        "/date": book(ops, a, saturday),
        "/slot": book(ops, a, next_weekday(0), slot="09:10"),
    }
    yesterday = book(ops, a, today() - timedelta(days=1))
    cases["/date "] = yesterday
    far = book(ops, a, today() + timedelta(days=400))
    cases["/date  "] = far
    for pointer, resp in cases.items():
        assert resp.status_code == 422, resp.text
        assert resp.json()["errors"][0]["pointer"] == pointer.strip()
    missing = ops.client.post(
        "/api/v1/programme/appointments", json={"recipient": a, "program": PROGRAM}
    )
    assert missing.status_code == 422
    assert {e["pointer"] for e in missing.json()["errors"]} == {"/facility", "/date", "/slot"}


def test_no_booking_without_activation_or_schedule(ops: Ops):
    a = ops.recipients(1)[0]["id"]
    monday = next_weekday(0)
    resp = book(ops, a, monday)
    assert resp.status_code == 409 and "not active" in resp.json()["detail"]
    ops.activate()
    resp = book(ops, a, monday)
    assert resp.status_code == 409 and "no schedule" in resp.json()["detail"]


def test_a_deleted_appointment_gives_its_place_back_from_the_outbox(ops: Ops):
    ops.activate()
    ops.schedule(capacity=1)
    a, b = (p["id"] for p in ops.recipients(2))
    monday = next_weekday(0)
    first = book(ops, a, monday).json()
    assert book(ops, b, monday).status_code == 409
    assert ops.client.delete(f"/api/v1/appointment/{first['id']}").status_code == 204
    ops.deliver()
    assert book(ops, b, monday).status_code == 201


def test_the_next_dose_is_suggested_after_the_certificate_and_can_be_booked(ops: Ops):
    ops.activate()
    ops.schedule()
    a = ops.recipients(1)[0]["id"]
    given = today()
    assert ops.vaccinate(a, when=at(given)).status_code == 201
    ops.deliver()  # certificate issued, then the suggestion
    ops.deliver()
    items = ops.client.get(f"/api/v1/appointment?recipient={a}").json()["items"]
    [suggested] = items
    assert suggested["status"] == "Suggested" and suggested["dose"] == 2
    assert suggested["dueFrom"] == (given + timedelta(days=28)).isoformat()  # CVX-AV: 28-84
    assert suggested["dueUntil"] == (given + timedelta(days=84)).isoformat()
    # booking the next dose takes up the suggestion
    day = next_weekday(2, after=given + timedelta(days=28))
    booked = book(ops, a, day, dose=2)
    assert booked.status_code == 201, booked.text
    assert booked.json()["id"] == suggested["id"] and booked.json()["status"] == "Booked"
    # recording the dose completes it
    assert ops.vaccinate(a, dose=2, when=at(day)).status_code == 201
    ops.deliver()
    done = ops.client.get(f"/api/v1/appointment/{suggested['id']}").json()
    assert done["status"] == "Completed" and done["vaccination"]
    assert slots(ops, day)["09:00"]["booked"] == 1  # a completed appointment used its place


def test_the_next_doses_of_a_batch_read_its_vaccines_once(ops: Ops):
    """Five certificates of one batch: each recipient gets its suggestion, and the step that
    makes them reads the vaccine table in one query, not once per vaccination."""
    ops.activate()
    ops.schedule()
    people = [p["id"] for p in ops.recipients(5)]
    for person in people:
        assert ops.vaccinate(person, when=at(today())).status_code == 201
    ops.deliver()
    ops.deliver()
    for person in people:
        items = ops.client.get(f"/api/v1/appointment?recipient={person}").json()["items"]
        assert [(a["status"], a["dose"]) for a in items] == [("Suggested", 2)], person
    registry = ops.registry
    certificates = registry.db.metadata.tables["certificate"]
    vaccine = registry.db.metadata.tables["vaccine"].name
    statements: list[str] = []

    def seen(conn, cursor, statement, *args) -> None:
        statements.append(statement)

    with registry.db.engine.begin() as conn:
        ids = [r[0] for r in conn.execute(sa.select(certificates.c.id))]
        assert len(ids) == 5
        sa.event.listen(registry.db.engine, "before_cursor_execute", seen)
        try:
            _suggest_next_doses(runtime(registry), conn, ids)  # all there: nothing new
        finally:
            sa.event.remove(registry.db.engine, "before_cursor_execute", seen)
    reads = [s for s in statements if f"FROM {vaccine} " in s or f'FROM "{vaccine}"' in s]
    assert len(reads) == 1, statements


def test_a_next_dose_message_reads_as_one():
    from open_registry.plugins.adapters.notifications import _catalogs

    record = {
        "status": "Suggested",
        "dose": 2,
        "dueFrom": "2026-03-29",
        "dueUntil": "2026-05-24",
        "facility": FACILITY,
    }
    for locale in ("en", "fr", "hi"):
        text = _catalogs(None).render("appointment-booked", locale, "sms", {"record": record})
        assert "2026-03-29" in text and "2026-05-24" in text
    booked = {"status": "Booked", "date": "2026-03-02", "facility": FACILITY}
    text = _catalogs(None).render("appointment-booked", "en", "sms", {"record": booked})
    assert text == f"Appointment booked for 2026-03-02 at {FACILITY}."
