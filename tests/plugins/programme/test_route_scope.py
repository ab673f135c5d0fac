"""The programme's routes (and the adapters') declare their rules (`registry.auth.rules`) and keep
to the facility scope of the generic API: staff of one facility do not find another facility's
appointments, certificates or stock (404) and may not write records naming another facility
(403, naming the field); nothing changes when they try. Anonymous callers get 401 (the pages
send them to sign in), callers without the role 403."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from open_registry.core import Settings
from open_registry.core.auth import rules
from open_registry.core.auth.rules import rule_of
from tests import authn
from tests.plugins.programme.conftest import (
    FACILITY,
    OTHER_FACILITY,
    PROGRAM,
    VACCINATOR,
    VACCINE,
    Ops,
    at,
    make_ops,
    next_weekday,
    today,
)

A, B = FACILITY, OTHER_FACILITY
MONDAY = next_weekday(0)


class World:
    """Two active facilities with schedules and stock; at A a booked appointment and a
    certificate; `as_(role, ...)` is a client signed in with that role."""

    def __init__(self, ops: Ops):
        self.ops = ops
        self.registry = ops.registry
        ops.activate()
        ops.activate(facility=B)
        ops.schedule()
        ops.schedule(facility=B)
        ops.stock("LOT-A")
        ops.stock("LOT-B", facility=B)
        people = ops.recipients(4)
        self.people = [p["id"] for p in people]
        self.booked = self.book(self.people[0], A)
        vaccination = ops.vaccinate(self.people[1], batch="LOT-A")
        assert vaccination.status_code == 201, vaccination.text
        self.vaccination = vaccination.json()
        ops.deliver()
        [self.certificate] = ops.client.get(
            f"/api/v1/certificate?vaccination={self.vaccination['id']}"
        ).json()["items"]

    def book(self, recipient: str, facility: str, client: TestClient | None = None) -> dict:
        resp = (client or self.ops.client).post(
            "/api/v1/programme/appointments", json=self.booking(recipient, facility)
        )
        assert resp.status_code == 201, resp.text
        return resp.json()

    @staticmethod
    def booking(recipient: str, facility: str, **extra: Any) -> dict[str, Any]:
        return {
            "recipient": recipient,
            "program": PROGRAM,
            "facility": facility,
            "date": MONDAY.isoformat(),
            "slot": "09:00",
            **extra,
        }

    def as_(self, *roles: str, **kw: Any) -> TestClient:
        headers = authn.auth_headers(self.registry, *roles, **kw) if roles else {}
        return TestClient(self.ops.client.app, headers={**headers, "origin": "http://testserver"})

    def staff(self, facility: str, role: str = "facility-staff") -> TestClient:
        return self.as_(role, facility=facility)

    def writes(self) -> int:
        """Record writes so far (every one leaves an outbox event)."""
        with self.registry.db.engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM registry_outbox")).scalar())

    def get(self, path: str) -> dict[str, Any]:
        resp = self.ops.client.get(path)
        assert resp.status_code == 200, resp.text
        return resp.json()


@pytest.fixture
def world(settings: Settings) -> Iterator[World]:
    """A world of the test's own: for the tests that write (or see that a write goes through)."""
    for ops in make_ops(settings):
        yield World(ops)


@pytest.fixture(scope="module")
def shared_world(shared_settings: Settings) -> Iterator[World]:
    """One world for the module's tests that only read or are refused (and check that nothing
    changed)."""
    for ops in make_ops(shared_settings):
        yield World(ops)


# -- every route declares its rule --------------------------------------------------------------

P = "/api/v1/programme"
MONITORS = rules.roles("monitoring", "controller", "system-admin")
STAFF = rules.roles("facility-admin", "facility-staff", "system-admin")
#: (method, path) -> the rule the route declares
RULES = {
    ("POST", f"{P}/activation"): rules.roles("controller", "system-admin"),
    ("GET", f"{P}/slots"): rules.public(
        "a facility's public schedule and the places left, to choose a slot"
    ),
    ("POST", f"{P}/appointments"): rules.entity("appointment", "create"),
    ("POST", f"{P}/appointments/{{appointment_id}}/reschedule"): rules.entity(
        "appointment", "update", record="appointment_id"
    ),
    ("POST", f"{P}/appointments/{{appointment_id}}/cancel"): rules.entity(
        "appointment", "update", record="appointment_id"
    ),
    ("POST", f"{P}/enrol"): rules.roles(
        "recipient", "facility-admin", "facility-staff", "system-admin"
    ),
    ("POST", f"{P}/enrol/claim"): rules.roles("recipient"),
    ("GET", f"{P}/duplicates"): STAFF,
    ("POST", f"{P}/duplicates/resolve"): STAFF,
    ("POST", f"{P}/walk-in"): STAFF,
    ("GET", f"{P}/stock"): rules.roles(
        "controller", "monitoring", "facility-admin", "facility-staff", "system-admin"
    ),
    ("POST", f"{P}/side-effects"): rules.entity("side_effect", "create"),
    ("GET", f"{P}/side-effects/serious"): MONITORS,
    ("GET", "/api/v1/analytics"): MONITORS,
    ("GET", "/api/v1/analytics/{name}"): MONITORS,
    ("GET", "/ui/dashboard"): MONITORS,
    ("GET", "/ui/dashboard/{name}.csv"): MONITORS,
    ("GET", "/ui/enrol"): rules.roles("recipient"),
    ("POST", "/ui/enrol"): rules.roles("recipient"),
    ("GET", "/api/v1/fhir/vaccinations/{vaccination_id}"): rules.entity(
        "vaccination", "read", record="vaccination_id"
    ),
    ("GET", "/api/v1/people/lookup"): rules.entity("recipient", "create"),
}


def routes_of(routes: Any) -> Iterator[Any]:
    """Every route, through the routers FastAPI keeps nested."""
    for r in routes:
        if hasattr(r, "effective_candidates"):
            yield from routes_of(r.effective_candidates())
        elif hasattr(r, "path"):
            yield r


def test_every_route_declares_its_rule(shared_world: World):
    world = shared_world
    found = {}
    for route in routes_of(world.ops.client.app.routes):
        for method in sorted((getattr(route, "methods", None) or set()) - {"HEAD"}):
            if (method, getattr(route, "path", "")) in RULES:
                found[(method, route.path)] = rule_of(route)
    assert found == RULES


# -- anonymous: 401; a role without the right: 403; nothing changes -----------------------------


def calls(w: World) -> list[tuple[str, str, dict[str, Any] | None, str]]:
    """(method, path, body, a role without the right) for every route."""
    booked, cert = w.booked["id"], w.certificate["id"]
    return [
        ("POST", f"{P}/activation", {"facility": A, "program": PROGRAM, "rate": 1}, "monitoring"),
        ("POST", f"{P}/appointments", w.booking(w.people[2], A), "monitoring"),
        ("POST", f"{P}/appointments/{booked}/reschedule", {"slot": "10:00"}, "monitoring"),
        ("POST", f"{P}/appointments/{booked}/cancel", {}, "monitoring"),
        ("POST", f"{P}/enrol", {"name": "Nobody"}, "monitoring"),
        ("POST", f"{P}/enrol/claim", {"enrollmentCode": "1"}, "facility-staff"),
        ("GET", f"{P}/duplicates", None, "monitoring"),
        ("POST", f"{P}/duplicates/resolve", {"recipient": "a", "duplicateOf": "b"}, "controller"),
        ("POST", f"{P}/walk-in", {"recipientId": w.people[2]}, "controller"),
        ("GET", f"{P}/stock?facility={A}", None, "recipient"),
        ("POST", f"{P}/side-effects", {"certificate": cert}, "monitoring"),
        ("GET", f"{P}/side-effects/serious", None, "facility-staff"),
        ("GET", "/api/v1/analytics", None, "facility-staff"),
        ("GET", "/api/v1/analytics/daily", None, "recipient"),
        ("GET", "/ui/dashboard/daily.csv", None, "facility-admin"),
        ("GET", f"/api/v1/fhir/vaccinations/{w.vaccination['id']}", None, "api-client"),
        ("GET", "/api/v1/people/lookup?identity=NID-1", None, "monitoring"),
    ]


def call(client: TestClient, method: str, path: str, body: Any) -> Any:
    return client.request(method, path, json=body, follow_redirects=False)


def test_anonymous_callers_get_401_and_roles_without_the_right_403(shared_world: World):
    world = shared_world
    w = world
    before = w.writes()
    wrong: list[str] = []
    for method, path, body, role in calls(w):
        anonymous = call(w.as_(), method, path, body)
        if anonymous.status_code != 401:
            wrong.append(f"anonymous {method} {path}: {anonymous.status_code}")
        kw: dict[str, Any] = {"facility": A} if role.startswith("facility") else {}
        if role == "recipient":
            kw = {"recipient": w.people[0]}
        refused = call(w.as_(role, **kw), method, path, body)
        expected = 404 if role == "api-client" else 403  # any caller may own vaccinations
        if refused.status_code != expected:
            wrong.append(f"{role} {method} {path}: {refused.status_code}, expected {expected}")
    assert wrong == []
    assert w.writes() == before
    assert w.get(f"/api/v1/appointment/{w.booked['id']}") == w.booked


def test_the_pages_send_anonymous_visitors_to_sign_in_and_refuse_other_roles(shared_world: World):
    world = shared_world
    for page in ("/ui/dashboard", "/ui/enrol"):
        resp = world.as_().get(page, follow_redirects=False)
        assert resp.status_code == 303 and "/ui/login" in resp.headers["location"], page
    assert world.staff(A).get("/ui/dashboard").status_code == 403
    assert world.staff(A).get("/ui/enrol").status_code == 403
    assert world.as_("controller").get("/ui/dashboard").status_code == 200
    refused = world.as_("system-admin").post("/ui/enrol", data={"name": "X"})
    assert refused.status_code == 403  # the page is for people enrolling themselves


# -- staff of another facility: 404 for its records, 403 for writes naming it ---------------------


def test_staff_cannot_book_at_another_facility(world: World):
    before = world.writes()
    resp = world.staff(B).post(f"{P}/appointments", json=world.booking(world.people[2], A))
    assert resp.status_code == 403, resp.text
    assert [e["pointer"] for e in resp.json()["errors"]] == ["/facility"]
    assert world.writes() == before
    assert world.get(f"/api/v1/appointment?recipient={world.people[2]}")["items"] == []
    # at their own facility they book for anyone
    assert world.book(world.people[2], B, client=world.staff(B))["facility"] == B


def test_a_recipient_books_for_themselves_at_any_facility_only(world: World):
    me = world.as_("recipient", recipient=world.people[2])
    other = me.post(f"{P}/appointments", json=world.booking(world.people[3], A))
    assert other.status_code == 404
    assert world.book(world.people[2], B, client=me)["recipient"] == world.people[2]


def test_staff_cannot_reschedule_or_cancel_another_facilitys_appointment(world: World):
    booked = world.booked
    before = world.writes()
    elsewhere = world.staff(B, "facility-admin")
    path = f"{P}/appointments/{booked['id']}"
    assert elsewhere.post(f"{path}/reschedule", json={"slot": "10:00"}).status_code == 404
    assert elsewhere.post(f"{path}/reschedule", json={"facility": B}).status_code == 404
    assert elsewhere.post(f"{path}/cancel", json={}).status_code == 404
    assert world.writes() == before
    assert world.get(f"/api/v1/appointment/{booked['id']}") == booked


def test_staff_cannot_move_an_appointment_to_another_facility(world: World):
    booked = world.booked
    before = world.writes()
    path = f"{P}/appointments/{booked['id']}/reschedule"
    moved = world.staff(A).post(path, json={"facility": B})
    assert moved.status_code == 403, moved.text
    assert [e["pointer"] for e in moved.json()["errors"]] == ["/facility"]
    assert world.writes() == before
    assert world.get(f"/api/v1/appointment/{booked['id']}") == booked
    later = world.staff(A).post(path, json={"slot": "10:00"})
    assert later.status_code == 200 and later.json()["slot"] == "10:00"


def test_booking_a_suggested_dose_at_another_facility_takes_the_suggestion(world: World):
    person = world.people[1]  # vaccinated at A: their second dose is suggested at A
    world.ops.deliver()
    [suggested] = world.get(f"/api/v1/appointment?recipient={person}")["items"]
    assert (suggested["status"], suggested["facility"]) == ("Suggested", A)
    day = next_weekday(0, after=today() + timedelta(days=28))
    body = world.booking(person, A, date=day.isoformat(), dose=2)
    before = world.writes()
    refused = world.staff(B).post(f"{P}/appointments", json=body)
    assert refused.status_code == 403 and world.writes() == before
    assert world.get(f"/api/v1/appointment/{suggested['id']}") == suggested
    booked = world.staff(B).post(f"{P}/appointments", json={**body, "facility": B})
    assert booked.status_code == 201, booked.text
    got = booked.json()
    assert (got["id"], got["facility"], got["status"]) == (suggested["id"], B, "Booked")


def test_staff_cannot_record_a_walk_in_at_another_facility(world: World):
    before = world.writes()
    count = len(world.ops.recipients(100))
    body = {
        "facility": A,
        "recipient": {
            "identity": "did:example:national-id:55500001",
            "name": "Walk In",
            "dob": "1990-01-01",
            "gender": "Female",
        },
        "vaccination": {
            "program": PROGRAM,
            "vaccine": VACCINE,
            "dose": 1,
            "totalDoses": 2,
            "batch": "LOT-A",
            "vaccinator": VACCINATOR,
            "date": at(today()),
        },
    }
    resp = world.staff(B).post(f"{P}/walk-in", json=body)
    assert resp.status_code == 403, resp.text
    assert [e["pointer"] for e in resp.json()["errors"]] == ["/facility"]
    named = world.staff(B).post(
        f"{P}/walk-in",
        json={**body, "facility": None, "vaccination": {**body["vaccination"], "facility": A}},
    )
    assert named.status_code == 403, named.text
    assert world.writes() == before
    assert len(world.ops.recipients(100)) == count
    # at their own facility (theirs when the body names none)
    own = world.staff(A).post(f"{P}/walk-in", json={**body, "facility": None})
    assert own.status_code == 201, own.text
    assert own.json()["vaccination"]["facility"] == A


def test_staff_do_not_read_another_facilitys_stock(shared_world: World):
    world = shared_world
    elsewhere = world.staff(B)
    assert elsewhere.get(f"{P}/stock", params={"facility": A}).status_code == 404
    own = elsewhere.get(f"{P}/stock").json()["items"]
    assert {lv["facility"] for lv in own} == {B}
    mine = elsewhere.get(f"{P}/stock", params={"facility": B}).json()["items"]
    assert {lv["facility"] for lv in mine} == {B}
    # staff without a facility see no facility's stock
    assert world.as_("facility-staff").get(f"{P}/stock").json()["items"] == []
    # controllers and monitoring see every facility's
    every = world.as_("monitoring").get(f"{P}/stock").json()["items"]
    assert {A, B} <= {lv["facility"] for lv in every}


def test_side_effects_are_reported_for_certificates_one_may_read(world: World):
    cert = world.certificate
    body = {
        "certificate": cert["id"],
        "symptoms": ["Fever"],
        "onset": today().isoformat(),
        "severity": "Mild",
    }
    before = world.writes()
    assert world.staff(B).post(f"{P}/side-effects", json=body).status_code == 404
    stranger = world.as_("recipient", recipient=world.people[0])
    assert stranger.post(f"{P}/side-effects", json=body).status_code == 404
    assert world.writes() == before
    assert world.get("/api/v1/side_effect")["items"] == []
    own = world.as_("recipient", recipient=cert["recipient"])
    resp = own.post(f"{P}/side-effects", json=body)
    assert resp.status_code == 201 and resp.json()["reportedBy"] == "Recipient", resp.text
    assert world.staff(A).post(f"{P}/side-effects", json=body).status_code == 201


def test_enrolment_needs_the_right_to_create_recipients(world: World):
    """A recipient who also monitors is no person enrolling themselves: their other roles may
    not create recipients."""
    before = world.writes()
    person = {
        "identity": "did:example:national-id:55500002",
        "name": "Two Hats",
        "dob": "1990-01-01",
        "gender": "Male",
    }
    both = world.as_("recipient", "monitoring")
    assert both.post(f"{P}/enrol", json=person).status_code == 403
    assert world.writes() == before
    assert world.staff(B).post(f"{P}/enrol", json=person).status_code == 201


def test_controllers_activate_any_facility_staff_none(world: World):
    before = world.writes()
    body = {"facility": A, "program": PROGRAM, "rate": 7}
    assert world.staff(A, "facility-admin").post(f"{P}/activation", json=body).status_code == 403
    assert world.writes() == before
    resp = world.as_("controller").post(f"{P}/activation", json=body)
    assert resp.status_code == 200 and resp.json()["rate"] == 7, resp.text


def test_the_fhir_export_is_read_through_the_callers_gate(shared_world: World):
    world = shared_world
    path = f"/api/v1/fhir/vaccinations/{world.vaccination['id']}"
    assert world.staff(B).get(path).status_code == 404
    assert world.staff(A).get(path).status_code == 200
    owner = world.as_("recipient", recipient=world.vaccination["recipient"])
    assert owner.get(path).status_code == 200
    assert world.as_("recipient", recipient="someone").get(path).status_code == 404


def test_the_fhir_export_holds_no_private_field_the_caller_may_not_read(shared_world: World):
    """Staff may read the vaccination but not the recipient's identity: the bundle's Patient
    carries no identifier from it; the recipient themselves gets theirs."""
    world = shared_world
    path = f"/api/v1/fhir/vaccinations/{world.vaccination['id']}"
    recipient = world.registry.services["recipient"].get(world.vaccination["recipient"])
    number = recipient["identity"].split(":")[-1]
    staff = world.staff(A).get(path)
    assert staff.status_code == 200 and number not in staff.text
    owner = world.as_("recipient", recipient=world.vaccination["recipient"]).get(path)
    assert owner.status_code == 200 and number in owner.text
