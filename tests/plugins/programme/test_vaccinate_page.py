"""The facility's task pages over HTTP, on SQLite and PostgreSQL: the home page's tasks by role,
`/ui/vaccinate` (find by enrolment code, mobile number or name; enrol on the spot; the dose
form's defaults; saving with only the batch chosen), the certificate page
`/ui/vaccination/{id}/certificate` ("being issued", then the certificate; revoke with a reason
and a confirmation) and the picker `/ui/pick/{entity}`, with who may use each: anonymous
visitors are sent to sign in, other roles get "not found", staff of another facility neither
see nor record for it. Translated validation messages are checked on the enrol-on-the-spot
form."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from open_registry.core import Settings
from tests.authn import auth_headers
from tests.plugins.programme.conftest import FACILITY, OTHER_FACILITY, Ops, make_ops

ROOT = Path(__file__).resolve().parents[3]
PEOPLE = json.loads((ROOT / "registry" / "demo" / "recipient.json").read_text())
PERSON = PEOPLE[0]
BATCH = "LOT-VAC-1"


@pytest.fixture
def desk(settings: Settings) -> Iterator[Ops]:
    """The demo data, `FACILITY` active in the programme with a batch in stock."""
    for ops in make_ops(settings):
        ops.activate()
        ops.stock(BATCH, quantity=5)
        yield ops


def as_role(ops: Ops, role: str, facility: str | None = FACILITY, **kw: Any) -> TestClient:
    headers = {**auth_headers(ops.registry, role, facility=facility, **kw)}
    headers["origin"] = "http://testserver"  # the pages' form posts are same-origin
    return TestClient(ops.client.app, headers=headers)


def names(html: str) -> list[str]:
    return re.findall(r'class="person-name">([^<]+)<', html)


def record(staff: TestClient, **form: str) -> Any:
    return staff.post("/ui/vaccinate", data=form, follow_redirects=False)


def test_staff_find_by_code_phone_and_name_and_record_with_only_the_batch(desk: Ops):
    staff = as_role(desk, "facility-staff")
    home = staff.get("/ui/").text
    assert home.index("Record a vaccination") < home.index("All records")
    for query in (PERSON["enrollmentCode"], PERSON["phone"], PERSON["name"].split()[1].lower()):
        page = staff.get("/ui/vaccinate", params={"q": query})
        assert page.status_code == 200 and PERSON["name"] in names(page.text), query
    shown = staff.get("/ui/vaccinate", params={"q": PERSON["phone"]}).text
    assert shown.count(PERSON["phone"]) == 1  # only the search box: never the record's number
    form = staff.get("/ui/vaccinate", params={"recipient": PERSON["id"]}).text
    assert f'value="{BATCH}"' in form and "5 left" in form
    assert "dose 1 of 2" in form  # the programme, dose and total filled in
    done = record(staff, recipient=PERSON["id"], batch=BATCH)
    assert done.status_code == 303, done.text
    page_url = done.headers["location"]
    issuing = staff.get(page_url)
    assert issuing.status_code == 200 and 'http-equiv="refresh"' in issuing.text
    desk.deliver()  # the outbox worker issues the certificate
    page = staff.get(page_url).text
    assert f"<h1>{PERSON['name']}: dose 1 of 2</h1>" in page
    cert_id = re.search(r"/api/v1/certificates/([0-9a-f-]+)\?format=pdf", page).group(1)
    assert '<details class="cert-json">' in page and "Revoke" not in page  # staff: no lifecycle
    pdf = staff.get(f"/api/v1/certificates/{cert_id}", params={"format": "pdf"})
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    # the next dose of the same person is dose 2
    assert "dose 2 of 2" in staff.get("/ui/vaccinate", params={"recipient": PERSON["id"]}).text


def test_enrol_on_the_spot_and_people_messages_in_three_languages(desk: Ops):
    staff = as_role(desk, "facility-staff")
    bad = {"_new": "1", "name": "Nila Sen", "gender": "Female", "batch": BATCH}
    bad |= {"identity": "did:example:national-id:99001", "address.pincode": "12"}
    bad |= {"address.district": "Riverside", "address.state": "Northland"}
    for lang, required, digits in (
        ("en", "Date of birth is required", "Enter 4 to 10 digits"),
        ("fr", "est obligatoire", "Saisissez de 4 à 10 chiffres"),
        ("hi", "आवश्यक है", "4 से 10 अंक दर्ज करें"),
    ):
        resp = staff.post("/ui/vaccinate", data=bad, params={"lang": lang})
        assert resp.status_code == 422 and required in resp.text and digits in resp.text, lang
    resp = record(staff, **{**bad, "dob": "1990-02-03", "address.pincode": "411020"})
    assert resp.status_code == 303, resp.text
    found = desk.client.get("/api/v1/recipient", params={"name": "Nila Sen"}).json()["items"]
    assert len(found) == 1 and found[0]["enrollmentType"] == "WALK_IN"


def test_a_controller_of_certificates_revokes_with_a_reason_then_verify_says_revoked(desk: Ops):
    staff = as_role(desk, "facility-staff")
    page_url = record(staff, recipient=PERSON["id"], batch=BATCH).headers["location"]
    desk.deliver()
    admin = as_role(desk, "facility-admin")
    page = admin.get(page_url).text
    action = re.search(r'action="(/ui/certificate/[^"]+/status)"', page).group(1)
    refused = admin.post(action, data={"action": "revoke", "reason": "  "})
    assert refused.status_code == 422
    assert "Give the reason" in refused.text and "Tick the box to confirm" in refused.text
    # staff of another facility: the certificate does not exist for them
    other = as_role(desk, "facility-admin", facility=OTHER_FACILITY)
    assert other.get(page_url).status_code == 404
    gone = other.post(action, data={"action": "revoke", "reason": "x", "confirm": "yes"})
    assert gone.status_code == 404
    done = admin.post(
        action,
        data={"action": "revoke", "reason": "recorded for the wrong person", "confirm": "yes"},
        follow_redirects=False,
    )
    assert done.status_code == 303
    page = admin.get(done.headers["location"]).text
    assert 'class="badge">Revoked<' in page and "recorded for the wrong person" in page
    cert_id = action.split("/")[3]
    credential = desk.client.get(f"/api/v1/certificates/{cert_id}").json()
    verdict = desk.client.post("/api/v1/verify", json={"credential": credential}).json()
    assert verdict["status"] == "REVOKED"


def test_who_may_use_the_pages(desk: Ops):
    anonymous = TestClient(desk.client.app)
    for path in ("/ui/vaccinate", "/ui/appointments/today", "/ui/pick/recipient"):
        resp = anonymous.get(path, follow_redirects=False)
        assert resp.status_code == 303 and resp.headers["location"].startswith("/ui/login"), path
    for role in ("monitoring", "controller", "recipient"):
        kw = {"recipient": PERSON["id"]} if role == "recipient" else {}
        c = as_role(desk, role, facility=None, **kw)
        assert c.get("/ui/vaccinate").status_code == 404, role
        assert "Record a vaccination" not in c.get("/ui/?records=1").text
    monitor = as_role(desk, "monitoring", facility=None)
    landing = monitor.get("/ui/", follow_redirects=False)
    assert landing.status_code == 303 and landing.headers["location"] == "/ui/dashboard"
    assert 'href="/ui/dashboard"' in monitor.get("/ui/?records=1").text  # in the navigation
    # staff of another facility cannot record for this one (their facility is not chosen by
    # the form) nor see its stock
    other = as_role(desk, "facility-staff", facility=OTHER_FACILITY)
    form = other.get("/ui/vaccinate", params={"recipient": PERSON["id"]}).text
    assert BATCH not in form
    refused = record(other, recipient=PERSON["id"], batch=BATCH, facility=FACILITY)
    assert refused.status_code in (403, 422) and "/ui/vaccination/" not in refused.headers.get(
        "location", ""
    )
    assert desk.client.get("/api/v1/vaccination", params={"batch": BATCH}).json()["items"] == []


def test_the_picker_answers_names_bounded_and_through_the_gate(desk: Ops):
    staff = as_role(desk, "facility-staff")
    items = staff.get("/ui/pick/facility", params={"q": "riverside", "ref": "vaccination.facility"})
    assert {"value": FACILITY, "label": "Riverside District Hospital", "hint": FACILITY} in (
        items.json()["items"]
    )
    people = staff.get("/ui/pick/recipient", params={"q": PERSON["name"]}).json()["items"]
    assert people[0]["label"] == PERSON["name"] and people[0]["hint"] == ""  # never a bare id
    assert staff.get("/ui/pick/facility", params={"q": "x" * 101}).status_code == 400
    assert staff.get("/ui/pick/facility", params={"ref": "vaccination.nothing"}).status_code == 400
    # the recipient role reads only their own record
    own = as_role(desk, "recipient", facility=None, recipient=PERSON["id"])
    seen = own.get("/ui/pick/recipient", params={"q": "a"}).json()["items"]
    assert [p["value"] for p in seen] in ([], [PERSON["id"]])
