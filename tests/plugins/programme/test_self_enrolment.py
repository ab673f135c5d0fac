"""Self-enrolment with a one-time code (`otp_signup`): a person unknown to the registry asks for a
code, signs up by verifying it (a user with the recipient role and no record), then enrols
themselves (the record's phone must be the one they signed in with) or claims the record an
agency pre-enrolled them with (its enrolment code plus that phone). The record is linked to the
user in the enrolment's transaction and a new token names it; they then see only their own
record and book for themselves."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from open_registry.core import Settings
from open_registry.core.audit.chain import AuditQuery, list_entries
from tests.authn import Messages
from tests.plugins.programme.conftest import FACILITY, PROGRAM, Ops, make_ops, next_weekday
from tests.registry.test_imports_api import finished

PHONE = "+99 98765 43210"
PERSON = {
    "identity": "did:example:national-id:80000001",
    "name": "Mira Rao",
    "dob": "1991-02-03",
    "gender": "Female",
    "phone": PHONE,
}


@pytest.fixture
def codes() -> Messages:
    return Messages()


@pytest.fixture
def ops(settings: Settings, codes: Messages) -> Iterator[Ops]:
    yield from make_ops(settings.with_(otp_signup=True), extra=(codes,))


class Person:
    """A phone's owner using the API with their own client (no administrator's token)."""

    def __init__(self, ops: Ops, codes: Messages, phone: str = PHONE):
        self.http = TestClient(ops.client.app)
        self.codes = codes
        self.phone = phone
        self.token = ""

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def sign_up(self) -> dict[str, Any]:
        sent = self.http.post("/api/v1/auth/otp", json={"channel": "sms", "to": self.phone})
        assert sent.status_code == 202, sent.text
        digits = "+" + "".join(c for c in self.phone if c.isdigit())
        resp = self.http.post(
            "/api/v1/auth/otp/verify",
            json={"channel": "sms", "to": self.phone, "code": self.codes.last_code(digits)},
        )
        assert resp.status_code == 200, resp.text
        self.token = resp.json()["access_token"]
        return resp.json()

    def me(self) -> dict[str, Any]:
        return self.http.get("/api/v1/auth/me", headers=self.headers()).json()

    def post(self, path: str, body: Any) -> Any:
        resp = self.http.post(path, json=body, headers=self.headers())
        if resp.status_code in (200, 201) and "access_token" in resp.json():
            self.token = resp.json()["access_token"]
        return resp

    def get(self, path: str, **params: Any) -> Any:
        return self.http.get(path, params=params, headers=self.headers())


def audit(ops: Ops, action: str) -> list[dict[str, Any]]:
    items, _ = list_entries(ops.registry.db.engine, AuditQuery(action=action, limit=100))
    return items


def test_a_new_person_signs_up_enrols_and_books_for_themselves(ops: Ops, codes: Messages):
    person = Person(ops, codes)
    body = person.sign_up()
    assert body["signedUp"] is True
    me = person.me()
    assert me["roles"] == ["recipient"] and me["recipient"] is None
    assert len(audit(ops, "auth.signup")) == 1
    # no record yet: they see none, not everybody's
    listed = person.get("/api/v1/recipient")
    assert listed.status_code == 200 and listed.json()["items"] == []

    resp = person.post("/api/v1/programme/enrol", PERSON)
    assert resp.status_code == 201, resp.text
    enrolled = resp.json()
    assert enrolled["enrollmentType"] == "SELF_ENROLLMENT"
    assert len(enrolled["enrollmentCode"]) == 10
    assert "registry_session=" in resp.headers.get("set-cookie", "")  # the pages too
    # the new token names their record; they see it, private fields included, and only it
    assert person.me()["recipient"] == enrolled["id"]
    mine = person.get(f"/api/v1/recipient/{enrolled['id']}")
    assert mine.status_code == 200 and mine.json()["phone"] == PHONE
    assert [r["id"] for r in person.get("/api/v1/recipient").json()["items"]] == [enrolled["id"]]
    assert audit(ops, "auth.enrolled")[0]["fields"]["how"] == "self"

    # they book for themselves, and not for anyone else
    ops.activate()
    ops.schedule(capacity=5)
    day = next_weekday(0).isoformat()
    booking = {"program": PROGRAM, "facility": FACILITY, "date": day, "slot": "09:00"}
    resp = person.post("/api/v1/programme/appointments", {**booking, "recipient": enrolled["id"]})
    assert resp.status_code == 201, resp.text
    other = ops.recipients(1)[0]["id"]
    resp = person.post("/api/v1/programme/appointments", {**booking, "recipient": other})
    assert resp.status_code == 404, resp.text

    # enrolling twice is refused, with the new token and with a stale one
    again = person.post("/api/v1/programme/enrol", {**PERSON, "identity": "did:example:x:2"})
    assert again.status_code == 409 and "enrolled already" in again.json()["detail"]


def test_the_record_must_carry_the_phone_signed_in_with(ops: Ops, codes: Messages):
    person = Person(ops, codes)
    person.sign_up()
    stale = person.token
    resp = person.post("/api/v1/programme/enrol", {**PERSON, "phone": "+99 11111 22222"})
    assert resp.status_code == 422, resp.text
    [error] = resp.json()["errors"]
    assert error["pointer"] == "/phone" and "signed in with" in error["message"]
    # spacing and the plus sign do not matter
    ok = person.post("/api/v1/programme/enrol", {**PERSON, "phone": "+9998765 43210"})
    assert ok.status_code == 201, ok.text
    person.token = stale  # a token from before the enrolment
    again = person.post("/api/v1/programme/enrol", PERSON)
    assert again.status_code == 409 and "sign in again" in again.json()["detail"]


def test_a_person_enrolled_already_is_refused_and_stays_unlinked(ops: Ops, codes: Messages):
    staff = ops.client.post("/api/v1/programme/enrol", json=PERSON)
    assert staff.status_code == 201, staff.text
    person = Person(ops, codes)
    person.sign_up()
    resp = person.post("/api/v1/programme/enrol", PERSON)  # the same identity
    assert resp.status_code == 409 and resp.json()["errors"][0]["pointer"] == "/identity"
    assert person.me()["recipient"] is None
    user = ops.registry.auth.users.get(person.me()["subject"])
    assert user["recipient"] is None
    total = ops.client.get("/api/v1/recipient?count=true&identity=" + PERSON["identity"]).json()
    assert total["total"] == 1


def pre_enrol(ops: Ops, phone: str = PHONE) -> dict[str, Any]:
    """An agency's CSV pre-enrolment; the outbox gives the person their enrolment code."""
    csv = (
        "identity,name,dob,gender,phone,enrollmentType\n"
        f"{PERSON['identity']},{PERSON['name']},{PERSON['dob']},Female,{phone},PRE_ENROLLMENT\n"
    )
    resp = ops.client.post(
        "/api/v1/recipient/imports", content=csv.encode(), headers={"content-type": "text/csv"}
    )
    job = finished(ops.client, ops.registry, resp.headers["location"])
    assert job["inserted"] == 1, job
    ops.deliver()
    found = ops.client.get("/api/v1/recipient", params={"identity": PERSON["identity"]}).json()
    [record] = found["items"]
    assert record["enrollmentCode"]
    return record


def test_a_pre_enrolled_person_claims_their_record(ops: Ops, codes: Messages):
    record = pre_enrol(ops, phone="9876543210")  # the agency wrote no country code
    person = Person(ops, codes)
    person.sign_up()
    claim = {"enrollmentCode": record["enrollmentCode"], "phone": PHONE}
    wrong_code = person.post("/api/v1/programme/enrol/claim", {**claim, "enrollmentCode": "0"})
    assert wrong_code.status_code == 404
    not_mine = person.post("/api/v1/programme/enrol/claim", {**claim, "phone": "+99 1234 567890"})
    assert not_mine.status_code == 404
    assert wrong_code.json()["detail"] == not_mine.json()["detail"]  # no oracle
    resp = person.post("/api/v1/programme/enrol/claim", claim)
    assert resp.status_code == 200, resp.text
    assert resp.json()["id"] == record["id"]
    assert person.me()["recipient"] == record["id"]
    assert person.get(f"/api/v1/recipient/{record['id']}").status_code == 200
    assert audit(ops, "auth.enrolled")[0]["fields"]["how"] == "claim"

    # someone else with the code but another phone cannot take it; nor can a second sign-up
    # for the same record
    other = Person(ops, codes, phone="+99 55555 66666")
    other.sign_up()
    taken = other.post("/api/v1/programme/enrol/claim", {**claim, "phone": other.phone})
    assert taken.status_code == 404


def test_claim_attempts_are_limited(ops: Ops, codes: Messages):
    pre_enrol(ops)
    person = Person(ops, codes)
    person.sign_up()
    answers = [
        person.post(
            "/api/v1/programme/enrol/claim", {"enrollmentCode": f"99{i}", "phone": PHONE}
        ).status_code
        for i in range(7)
    ]
    assert answers[:5] == [404] * 5 and answers[-1] == 429


def test_without_otp_signup_unknown_people_get_no_code(settings: Settings, codes: Messages):
    for ops in make_ops(settings, extra=(codes,)):
        http = TestClient(ops.client.app)
        sent = http.post("/api/v1/auth/otp", json={"channel": "sms", "to": PHONE})
        assert sent.status_code == 202
        assert codes.sent == []
        resp = http.post(
            "/api/v1/auth/otp/verify", json={"channel": "sms", "to": PHONE, "code": "000000"}
        )
        assert resp.status_code == 401


def test_staff_cannot_use_the_claim_endpoint(ops: Ops):
    resp = ops.client.post("/api/v1/programme/enrol/claim", json={"enrollmentCode": "1"})
    assert resp.status_code == 403


# -- the pages -----------------------------------------------------------------------------------
def page_sign_up(ops: Ops, codes: Messages, phone: str = PHONE) -> TestClient:
    """Sign up on /ui/login with a code; returns the browser-like client (session cookie)."""
    # a browser: its posts carry the page's origin
    web = TestClient(
        ops.client.app, follow_redirects=False, headers={"origin": "http://testserver"}
    )
    sent = web.post("/ui/login", data={"mode": "otp-send", "channel": "sms", "to": phone})
    assert sent.status_code == 200 and "code" in sent.text
    digits = "+" + "".join(c for c in phone if c.isdigit())
    resp = web.post(
        "/ui/login",
        data={
            "mode": "otp",
            "channel": "sms",
            "to": phone,
            "code": codes.last_code(digits),
            "next": "/ui/",
        },
    )
    assert resp.status_code == 303, resp.text
    # a new person goes on to enrol
    assert resp.headers["location"] == "/ui/enrol"
    return web


def test_the_enrol_page_enrols_a_person_who_signed_up(ops: Ops, codes: Messages):
    web = page_sign_up(ops, codes)
    page = web.get("/ui/enrol")
    assert page.status_code == 200
    assert 'name="name"' in page.text and 'name="enrollmentCode"' in page.text  # claim form
    assert 'name="enrollmentType"' not in page.text  # set by the registry
    form = {
        "identity": PERSON["identity"],
        "name": PERSON["name"],
        "dob": PERSON["dob"],
        "gender": PERSON["gender"],
        "phone": "+99 00000 00000",  # not the number signed in with
    }
    refused = web.post("/ui/enrol", data=form)
    assert refused.status_code == 422
    assert "must be the mobile number you signed in with" in refused.text
    assert PERSON["name"] in refused.text  # what was typed is kept
    done = web.post("/ui/enrol", data={**form, "phone": PHONE})
    assert done.status_code == 303, done.text
    record_page = done.headers["location"]
    assert record_page.startswith("/ui/recipient/")
    # the new session names the record: the person sees it, and the enrol page sends them there
    shown = web.get(record_page)
    assert shown.status_code == 200 and PERSON["name"] in shown.text
    again = web.get("/ui/enrol")
    assert again.status_code == 303 and again.headers["location"] == record_page.split("?")[0]


def test_the_enrol_page_claims_a_pre_enrolment(ops: Ops, codes: Messages):
    record = pre_enrol(ops)
    web = page_sign_up(ops, codes)
    wrong = web.post("/ui/enrol", data={"_mode": "claim", "enrollmentCode": "1", "phone": PHONE})
    assert wrong.status_code == 404 and "no enrolment with this code" in wrong.text
    done = web.post(
        "/ui/enrol",
        data={"_mode": "claim", "enrollmentCode": record["enrollmentCode"], "phone": PHONE},
    )
    assert done.status_code == 303
    assert done.headers["location"].startswith(f"/ui/recipient/{record['id']}")


def test_the_enrol_page_is_for_signed_up_people_only(ops: Ops):
    anonymous = TestClient(ops.client.app, follow_redirects=False).get("/ui/enrol")
    assert anonymous.status_code == 303 and "/ui/login" in anonymous.headers["location"]
    staff = ops.client.get("/ui/enrol")  # an administrator
    assert staff.status_code == 403
