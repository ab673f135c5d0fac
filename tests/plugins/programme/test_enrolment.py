"""Enrolment and walk-ins: enrolment codes; duplicates refused where people enrol and found
afterwards for imports (pre-enrolment by an agency through the CSV import); a walk-in enrolled
and vaccinated in one visit, all or nothing."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tests.plugins.programme.conftest import (
    FACILITY,
    PROGRAM,
    VACCINATOR,
    VACCINE,
    Ops,
    at,
    next_weekday,
    today,
)
from tests.registry.test_imports_api import finished

PERSON = {
    "identity": "did:example:national-id:90000001",
    "name": "Asha Verma",
    "dob": "1988-04-12",
    "gender": "Female",
    "phone": "+99 98765 43210",
    "address": {"district": "Riverside", "state": "Northland"},
}


def enrol(ops: Ops, **changes: Any):
    return ops.client.post("/api/v1/programme/enrol", json={**PERSON, **changes})


def test_enrolment_gives_a_code_the_facility_can_find_the_person_by(ops: Ops):
    resp = enrol(ops)  # by staff (the client is signed in as an administrator)
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["enrollmentCode"].isdigit() and len(body["enrollmentCode"]) == 10
    assert body["enrollmentType"] == "PRE_ENROLLMENT"
    found = ops.client.get(f"/api/v1/recipient?enrollmentCode={body['enrollmentCode']}").json()
    assert [r["id"] for r in found["items"]] == [body["id"]]


def test_the_same_person_cannot_enrol_twice(ops: Ops):
    assert enrol(ops).status_code == 201
    same_identity = enrol(ops, name="A. Verma", phone="+99 90000 00000")
    assert same_identity.status_code == 409
    assert [e["pointer"] for e in same_identity.json()["errors"]] == ["/identity"]
    assert PERSON["identity"] not in same_identity.text  # a private value is never echoed
    # another identity, but the same name, birth year and phone (spacing and prefix differ)
    lookalike = enrol(
        ops, identity="did:example:national-id:90000002", dob="1988-11-30", phone="9876543210"
    )
    assert lookalike.status_code == 409
    assert {e["pointer"] for e in lookalike.json()["errors"]} == {"/name", "/dob", "/phone"}
    other_year = enrol(ops, identity="did:example:national-id:90000003", dob="1989-04-12")
    assert other_year.status_code == 201


def test_enrolment_errors_name_the_field(ops: Ops):
    resp = enrol(ops, dob="12/04/1988", gender="F")
    assert resp.status_code == 422
    assert {e["pointer"] for e in resp.json()["errors"]} == {"/dob", "/gender"}
    assert ops.client.post("/api/v1/programme/enrol", json=[1]).status_code == 400


def import_recipients(ops: Ops, csv: str) -> dict[str, Any]:
    """Import `csv` as recipients, wait for the job, deliver its events; the finished job."""
    resp = ops.client.post(
        "/api/v1/recipient/imports", content=csv.encode(), headers={"content-type": "text/csv"}
    )
    assert resp.status_code == 202, resp.text
    job = finished(ops.client, ops.registry, resp.headers["location"])
    ops.deliver()
    return job


def test_an_agencys_csv_pre_enrolment_gets_codes_and_its_lookalikes_listed(ops: Ops):
    assert enrol(ops).status_code == 201
    csv = (
        "identity,name,dob,gender,phone,enrollmentType,address.district,address.state\n"
        "did:x:pre-1,Asha Verma,1988-01-01,Female,+99 98765 43210,PRE_ENROLLMENT,Riverside,"
        "Northland\n"
        "did:x:pre-2,Kiran Rao,1970-05-05,Male,+99 91111 22222,PRE_ENROLLMENT,Hillcrest,"
        "Northland\n"
    )
    job = import_recipients(ops, csv)
    assert (job["status"], job["inserted"]) == ("done", 2), job
    people = ops.client.get("/api/v1/recipient?identity[in]=did:x:pre-1,did:x:pre-2").json()[
        "items"
    ]
    assert len(people) == 2 and all(len(p["enrollmentCode"]) == 10 for p in people)
    dupes = ops.client.get("/api/v1/programme/duplicates").json()["items"]
    asha = next(p for p in people if p["name"] == "Asha Verma")
    assert len(dupes) == 1 and asha["id"] in (dupes[0]["recipient"], dupes[0]["duplicateOf"])
    assert dupes[0]["reason"] == "name, birth year and phone"
    resolved = ops.post(
        "/api/v1/programme/duplicates/resolve",
        {"recipient": dupes[0]["recipient"], "duplicateOf": dupes[0]["duplicateOf"]},
    )
    assert resolved.status_code == 204
    assert ops.client.get("/api/v1/programme/duplicates").json()["items"] == []


def test_lookalikes_within_one_import_are_listed_once_and_others_not_at_all(ops: Ops):
    csv = (
        "identity,name,dob,gender,phone,enrollmentType,address.district,address.state\n"
        "did:x:twin-1,Ravi Das,1990-02-02,Male,+99 90000 11111,PRE_ENROLLMENT,Riverside,Northland\n"
        "did:x:twin-2,Ravi Das,1990-07-07,Male,0 90000 11111,PRE_ENROLLMENT,Riverside,Northland\n"
        "did:x:twin-3,Ravi Das,1991-02-02,Male,+99 90000 11111,PRE_ENROLLMENT,Riverside,Northland\n"
        "did:x:twin-4,Ravi Das,1990-02-02,Male,+99 90000 22222,PRE_ENROLLMENT,Riverside,Northland\n"
    )
    assert import_recipients(ops, csv)["inserted"] == 4
    people = ops.client.get("/api/v1/recipient?name=Ravi Das&limit=10").json()["items"]
    ids = {p["identity"]: p["id"] for p in people}
    dupes = ops.client.get("/api/v1/programme/duplicates").json()["items"]
    # twin-1 and twin-2: the same name, birth year and last 10 digits of the phone; twin-3 was
    # born another year, twin-4 has another phone
    assert [sorted((d["recipient"], d["duplicateOf"])) for d in dupes] == [
        sorted((ids["did:x:twin-1"], ids["did:x:twin-2"]))
    ]
    assert dupes[0]["reason"] == "name, birth year and phone"


def walk_in(ops: Ops, **changes: Any):
    body = {
        "facility": FACILITY,
        "recipient": {**PERSON, "identity": "did:example:national-id:90000010"},
        "vaccination": {
            "program": PROGRAM,
            "vaccine": VACCINE,
            "vaccinator": VACCINATOR,
            "dose": 1,
            "totalDoses": 2,
            "batch": "W-1",
        },
        **changes,
    }
    return ops.client.post("/api/v1/programme/walk-in", json=body)


def count(ops: Ops, entity: str) -> int:
    return ops.client.get(f"/api/v1/{entity}?count=true&limit=1").json()["total"]


def test_a_walk_in_is_enrolled_and_vaccinated_in_one_visit(ops: Ops):
    ops.activate()
    ops.stock("W-1", quantity=10)
    before = count(ops, "recipient")
    resp = walk_in(ops)
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["recipient"]["enrolled"] is True and body["recipient"]["enrollmentCode"]
    assert body["vaccination"]["recipient"] == body["recipient"]["id"]
    assert count(ops, "recipient") == before + 1
    person = ops.client.get(f"/api/v1/recipient/{body['recipient']['id']}").json()
    assert person["enrollmentType"] == "WALK_IN"
    # an enrolled person walks in with their code
    assert enrol(ops).status_code == 409  # the walk-in is enrolled now (same name, year, phone)
    code = enrol(
        ops, identity="did:example:national-id:90000020", name="Meena Das", dob="1990-01-01"
    ).json()["enrollmentCode"]
    again = walk_in(ops, recipient=None, enrollmentCode=code)
    assert again.status_code == 201 and again.json()["recipient"]["enrolled"] is False


def test_a_refused_walk_in_leaves_no_recipient_behind(ops: Ops):
    ops.activate()
    before = count(ops, "recipient")
    resp = walk_in(
        ops,
        vaccination={
            "program": PROGRAM,
            "vaccine": VACCINE,
            "dose": 1,
            "totalDoses": 2,
            "batch": "W-1",
            "vaccinator": "NOPE",
        },
    )
    assert resp.status_code == 422
    assert resp.json()["errors"][0]["pointer"] == "/vaccination/vaccinator"
    bad_person = walk_in(ops, recipient={"name": "X"})
    assert bad_person.status_code == 422
    assert {e["pointer"] for e in bad_person.json()["errors"]} >= {"/recipient/dob"}
    ops.activate(status="Suspended")
    suspended = walk_in(ops)
    assert suspended.status_code == 409
    assert count(ops, "recipient") == before


def test_walk_ins_come_in_walk_in_hours(ops: Ops):
    ops.activate()
    ops.schedule(
        days=["Mon", "Tue", "Wed", "Thu", "Fri"],
        walkInDays=["Mon"],
        walkInStart="14:00",
        walkInEnd="16:00",
    )
    monday = next_weekday(0, after=today() - timedelta(days=8))
    vaccination = {
        "program": PROGRAM,
        "vaccine": VACCINE,
        "vaccinator": VACCINATOR,
        "dose": 1,
        "totalDoses": 2,
        "batch": "W-1",
    }
    late = walk_in(ops, vaccination={**vaccination, "date": at(monday, "17:00")})
    assert late.status_code == 409
    assert late.json()["errors"][0]["pointer"] == "/vaccination/date"
    assert "on Mon from 14:00 to 16:00" in late.json()["detail"]
    ok = walk_in(ops, vaccination={**vaccination, "date": at(monday, "15:00")})
    assert ok.status_code == 201, ok.text
