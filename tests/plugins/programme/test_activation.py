"""Facility activation and daily rates, on SQLite and PostgreSQL: a facility records
vaccinations only for programmes it is active for and only up to its rate per day; changes are
audited entity writes and the facility is told."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from open_registry.core import Settings
from tests.authn import Messages
from tests.plugins.programme.conftest import (
    FACILITY,
    PROGRAM,
    Ops,
    at,
    make_ops,
    today,
)


def problem(resp, status: int) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    return resp.json()


def test_a_facility_not_activated_cannot_vaccinate(ops: Ops):
    person = ops.recipients()[0]["id"]
    body = problem(ops.vaccinate(person), 409)
    assert body["errors"][0]["pointer"] == "/facility"
    assert f"facility {FACILITY} is not activated for programme {PROGRAM}" in body["detail"]
    assert ops.client.get("/api/v1/vaccination").json()["items"] == []


def test_the_daily_rate_holds_and_other_days_are_free(ops: Ops):
    ops.activate(rate=2)
    people = [p["id"] for p in ops.recipients(4)]
    assert ops.vaccinate(people[0]).status_code == 201
    assert ops.vaccinate(people[1]).status_code == 201
    body = problem(ops.vaccinate(people[2]), 409)
    assert body["errors"][0]["pointer"] == "/date"
    assert "daily rate of 2" in body["detail"]
    tomorrow = at(today() + timedelta(days=1))
    assert ops.vaccinate(people[2], when=tomorrow).status_code == 201
    # raising the rate opens places at once
    ops.activate(rate=3)
    assert ops.vaccinate(people[3]).status_code == 201


def test_the_day_is_the_programme_time_zone_day(settings: Settings):
    """23:30 UTC is already the next day in India."""
    for ops in make_ops(settings, timezone="Asia/Kolkata"):
        ops.activate(rate=1)
        a, b = (p["id"] for p in ops.recipients(2))
        day = today() + timedelta(days=1)
        assert ops.vaccinate(a, when=f"{day.isoformat()}T10:00:00+05:30").status_code == 201
        late = f"{(day - timedelta(days=1)).isoformat()}T23:30:00Z"  # 05:00 the next day there
        assert ops.vaccinate(b, when=late).status_code == 409


def test_suspension_stops_vaccinations_and_reactivation_resumes(ops: Ops):
    ops.activate(rate=10)
    a, b = (p["id"] for p in ops.recipients(2))
    assert ops.vaccinate(a).status_code == 201
    ops.activate(rate=10, status="Suspended", reason="cold chain failure")
    body = problem(ops.vaccinate(b), 409)
    assert "is suspended" in body["detail"]
    ops.activate(rate=10, status="Active")
    assert ops.vaccinate(b).status_code == 201


def test_a_correction_keeps_its_place_and_a_deletion_gives_it_back(ops: Ops):
    ops.activate(rate=1)
    a, b = (p["id"] for p in ops.recipients(2))
    first = ops.vaccinate(a).json()
    fixed = ops.client.patch(
        f"/api/v1/vaccination/{first['id']}",
        json={"batch": "B-2"},
        headers={"content-type": "application/merge-patch+json"},
    )
    assert fixed.status_code == 200, fixed.text  # same facility and day: no second place needed
    assert ops.vaccinate(b).status_code == 409
    assert ops.client.delete(f"/api/v1/vaccination/{first['id']}").status_code == 204
    ops.deliver()  # the deletion gives its place back from the outbox
    assert ops.vaccinate(b).status_code == 201


def test_moving_a_vaccination_to_a_full_day_is_refused(ops: Ops):
    ops.activate(rate=1)
    a, b = (p["id"] for p in ops.recipients(2))
    ops.vaccinate(a)
    tomorrow = ops.vaccinate(b, when=at(today() + timedelta(days=1))).json()
    moved = ops.client.patch(
        f"/api/v1/vaccination/{tomorrow['id']}",
        json={"date": at(today())},
        headers={"content-type": "application/merge-patch+json"},
    )
    assert problem(moved, 409)["errors"][0]["pointer"] == "/date"


def test_activation_changes_are_audited_and_the_facility_is_told(settings: Settings):
    messages = Messages()
    for ops in make_ops(settings, extra=(messages,)):
        record = ops.activate(rate=5, reason="opening")
        ops.activate(rate=8, reason="more staff")
        ops.activate(rate=8, reason="more staff", status="Active")  # no change: no write
        audit = ops.registry.db.metadata.tables["registry_audit"]
        with ops.registry.db.engine.connect() as conn:
            actions = conn.execute(
                sa.select(audit.c.action, audit.c.fields)
                .where(audit.c.entity == "facility_programme", audit.c.record_id == record["id"])
                .order_by(audit.c.seq)
            ).all()
        assert [a for a, _ in actions] == ["create", "update"]
        assert actions[1][1] == ["rate", "reason"]
        assert messages.sent == []  # nothing is sent in a write transaction
        ops.deliver()
        assert ops.send() == 2  # one notice per change, sent from the delivery queue
        assert ops.send() == 0  # and only once
        to = {(m["channel"], m["to"]) for m in messages.sent}
        assert ("email", "contact@riverside-district-hospital.health.example") in to
        assert any(channel == "sms" for channel, _ in to)  # the facility's and admins' phones
        assert {m["template"] for m in messages.sent} == {"facility-programme-changed"}
        # the notice is sent with the standing when it is sent (both say rate 8 here)
        assert {m["rate"] for m in messages.sent} == {8}
        assert all(m["idempotency_key"].startswith("programme:") for m in messages.sent)


def test_the_notice_templates_render_in_every_shipped_language():
    from open_registry.plugins.adapters.notifications import _catalogs

    catalogs = _catalogs(None)
    context = {
        "facility": {"code": FACILITY, "name": "Riverside"},
        "program": PROGRAM,
        "status": "Active",
        "rate": 200,
        "reason": "inspection passed",
        "seriousness": ["Hospitalisation"],
        "onset": "2026-03-02",
        "report": "r1",
        "certificate": "c1",
    }
    for locale in ("en", "fr", "hi"):
        for template in ("facility-programme-changed", "serious-side-effect"):
            for part in ("subject", "text", "sms"):
                text = catalogs.render(template, locale, part, context)
                assert text and "{{" not in text
    assert "200" in catalogs.render("facility-programme-changed", "fr", "text", context)
    suspended = catalogs.render(
        "facility-programme-changed", "en", "text", {**context, "status": "Suspended"}
    )
    assert "suspended" in suspended and "200" not in suspended


def test_bad_activation_requests_name_the_field(ops: Ops):
    body = problem(ops.post("/api/v1/programme/activation", {"program": PROGRAM}), 422)
    assert body["errors"][0]["pointer"] == "/facility"
    body = problem(
        ops.post(
            "/api/v1/programme/activation", {"facility": FACILITY, "program": PROGRAM, "rate": -1}
        ),
        422,
    )
    assert body["errors"][0]["pointer"] == "/rate"
    body = problem(
        ops.post(
            "/api/v1/programme/activation", {"facility": "NOPE-1", "program": PROGRAM, "rate": 1}
        ),
        422,
    )
    assert body["errors"][0]["pointer"] == "/facility"
    body = problem(
        ops.post(
            "/api/v1/facility_programme",
            {"facility": FACILITY, "program": PROGRAM, "status": "Active", "rate": 1, "extra": 1},
        ),
        422,
    )
    assert body["errors"][0]["pointer"] == "/extra"


def test_the_facilitys_own_programs_entries_count_until_a_controller_decides(
    settings: Settings,
):
    """DIVOC's shape: the facility record's programs[] (Active, rate 50 for COVID19-2026 at
    NL-HLC-01; Inactive at NL-HLC-02) is read when no facility_programme record exists."""
    for ops in make_ops(settings, facility_programs_fallback=True):
        a, b = (p["id"] for p in ops.recipients(2))
        assert ops.vaccinate(a, facility="NL-HLC-01").status_code == 201
        assert ops.vaccinate(b, facility="NL-HLC-02").status_code == 409
        ops.activate(facility="NL-HLC-01", status="Suspended", rate=50)
        assert ops.vaccinate(b, facility="NL-HLC-01").status_code == 409


def test_enforcement_can_be_switched_off(settings: Settings):
    for ops in make_ops(settings, enforce_activation=False):
        assert ops.vaccinate(ops.recipients(1)[0]["id"]).status_code == 201
