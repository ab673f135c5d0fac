"""Who may do what in the programme routes: controllers
activate; staff work at their own facility; recipients book and report for themselves only;
monitoring reads the analytics and the dashboard. Outside one's scope is 404, not 403."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from open_registry.core import Settings
from tests import authn
from tests.plugins.programme.conftest import (
    FACILITY,
    OTHER_FACILITY,
    PROGRAM,
    Ops,
    make_ops,
    next_weekday,
)


@pytest.fixture
def world(settings: Settings) -> Iterator[tuple[Ops, Any]]:
    for ops in make_ops(settings):
        ops.activate()
        ops.activate(facility=OTHER_FACILITY)
        ops.schedule()
        ops.schedule(facility=OTHER_FACILITY)

        def as_(*roles: str, ops: Ops = ops, **kw: Any) -> TestClient:
            return TestClient(
                ops.client.app, headers=authn.auth_headers(ops.registry, *roles, **kw)
            )

        yield ops, as_


def test_only_controllers_activate_facilities(world):
    ops, as_ = world
    body = {"facility": FACILITY, "program": PROGRAM, "rate": 5}
    assert as_("controller").post("/api/v1/programme/activation", json=body).status_code == 200
    staff = as_("facility-admin", facility=FACILITY)
    assert staff.post("/api/v1/programme/activation", json=body).status_code == 403
    assert TestClient(ops.client.app).post(
        "/api/v1/programme/activation", json=body
    ).status_code in (401, 403)


def test_recipients_book_for_themselves_and_staff_at_their_facility(world):
    ops, as_ = world
    me, other = (p["id"] for p in ops.recipients(2))
    monday = next_weekday(0).isoformat()
    booking = {"program": PROGRAM, "facility": FACILITY, "date": monday, "slot": "09:00"}
    recipient = as_("recipient", recipient=me)
    assert (
        recipient.post(
            "/api/v1/programme/appointments", json={**booking, "recipient": other}
        ).status_code
        == 404
    )
    mine = recipient.post("/api/v1/programme/appointments", json={**booking, "recipient": me})
    assert mine.status_code == 201, mine.text
    elsewhere = as_("facility-staff", facility=OTHER_FACILITY)
    cancel = f"/api/v1/programme/appointments/{mine.json()['id']}/cancel"
    assert elsewhere.post(cancel, json={}).status_code == 404
    assert as_("facility-staff", facility=FACILITY).post(cancel, json={}).status_code == 200


def test_analytics_and_the_dashboard_are_for_monitoring(world):
    ops, as_ = world
    assert as_("monitoring").get("/api/v1/analytics/daily").status_code == 200
    assert as_("recipient", recipient="x").get("/api/v1/analytics/daily").status_code == 403
    assert as_("monitoring").get("/ui/dashboard").status_code == 200
    assert as_("facility-staff", facility=FACILITY).get("/ui/dashboard").status_code == 403
    anonymous = TestClient(ops.client.app).get("/ui/dashboard", follow_redirects=False)
    assert anonymous.status_code == 303 and "/ui/login" in anonymous.headers["location"]


def test_a_recipient_with_a_record_cannot_enrol_again(world):
    """(Signing up and enrolling oneself: test_self_enrolment.py.)"""
    _, as_ = world
    person = {
        "identity": "did:example:national-id:91000001",
        "name": "Lata Iyer",
        "dob": "1990-02-02",
        "gender": "Female",
    }
    resp = as_("recipient", recipient="self").post("/api/v1/programme/enrol", json=person)
    assert resp.status_code == 409 and "enrolled already" in resp.json()["detail"], resp.text
    monitoring = as_("monitoring").post("/api/v1/programme/enrol", json=person)
    assert monitoring.status_code == 403
