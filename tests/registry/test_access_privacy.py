"""Private fields for callers without the grant: left out of reads, lists and searches, not
searchable, not changeable, never quoted in errors; the owner and system-admins see them. Row
scopes on the pages, and imports through the API by callers with a scope."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from open_registry.core import create_app
from open_registry.core.demo import load_demo_data
from tests.authn import auth_headers

IDENTITY = "did:example:national-id:77770001"
PHONE = "+91 98765 43210"


@pytest.fixture
def http(registry: Any) -> Iterator[TestClient]:
    load_demo_data(registry.services)
    with TestClient(create_app(registry=registry)) as c:
        yield c


@pytest.fixture
def megha(registry: Any, http: TestClient) -> dict[str, Any]:
    resp = http.post(
        "/api/v1/recipient",
        json={
            "identity": IDENTITY,
            "name": "Megha Test",
            "dob": "1975-06-22",
            "gender": "Female",
            "phone": PHONE,
        },
        headers=auth_headers(registry, "facility-staff", facility="F1"),
    )
    assert resp.status_code == 201, resp.text
    assert "identity" not in resp.json()  # staff enrol, but do not read back private values
    return resp.json()


def no_private(text: str) -> bool:
    return IDENTITY not in text and "98765" not in text


def test_staff_never_see_private_values_in_reads_lists_or_searches(registry, http, megha):
    staff = auth_headers(registry, "facility-staff", facility="F1")
    rid = megha["id"]
    for resp in (
        http.get(f"/api/v1/recipient/{rid}", headers=staff),
        http.get("/api/v1/recipient", params={"limit": 1000}, headers=staff),
        http.post(
            "/api/v1/recipient/search", json={"filters": {"name": "Megha Test"}}, headers=staff
        ),
    ):
        assert resp.status_code == 200 and no_private(resp.text)
    assert "Megha Test" in http.get(f"/api/v1/recipient/{rid}", headers=staff).text


def test_staff_may_not_search_by_a_private_value(registry, http, megha):
    staff = auth_headers(registry, "facility-staff", facility="F1")
    for resp in (
        http.get("/api/v1/recipient", params={"identity": IDENTITY}, headers=staff),
        http.post(
            "/api/v1/recipient/search", json={"filters": {"identity": IDENTITY}}, headers=staff
        ),
    ):
        assert resp.status_code == 403 and no_private(resp.text)
        assert resp.json()["errors"][0]["pointer"] == "/filters/identity/eq"
    admin = auth_headers(registry)
    found = http.get("/api/v1/recipient", params={"identity": IDENTITY}, headers=admin).json()
    assert [r["identity"] for r in found["items"]] == [IDENTITY]


def test_staff_edits_keep_private_values_and_cannot_change_them(registry, http, megha):
    staff = auth_headers(registry, "facility-staff", facility="F1")
    rid = megha["id"]
    current = http.get(f"/api/v1/recipient/{rid}", headers=staff).json()
    body = {k: v for k, v in current.items() if not k.startswith("_") and k != "id"}
    resp = http.put(f"/api/v1/recipient/{rid}", json={**body, "name": "Megha T."}, headers=staff)
    assert resp.status_code == 200 and no_private(resp.text)
    stored = registry.services["recipient"].get(rid)
    assert stored["identity"] == IDENTITY and stored["phone"] == PHONE  # kept
    resp = http.patch(
        f"/api/v1/recipient/{rid}",
        json={"phone": "+91 90000 99999"},
        headers={**staff, "content-type": "application/merge-patch+json"},
    )
    assert resp.status_code == 403 and resp.json()["errors"][0]["pointer"] == "/phone"
    assert "99999" not in resp.text
    bad = http.post("/api/v1/recipient", json={"identity": "x", "name": "N"}, headers=staff)
    assert bad.status_code == 422 and '"x"' not in bad.text


def test_the_recipient_sees_their_own_record_in_full_and_nobody_elses(registry, http, megha):
    me = auth_headers(registry, "recipient", recipient=megha["id"])
    own = http.get(f"/api/v1/recipient/{megha['id']}", headers=me)
    assert own.status_code == 200 and own.json()["identity"] == IDENTITY
    listed = http.get("/api/v1/recipient", params={"limit": 1000, "count": "true"}, headers=me)
    assert [r["id"] for r in listed.json()["items"]] == [megha["id"]]
    assert listed.json()["total"] == 1  # the count sees the scope too
    everyone = (
        registry.services["recipient"]
        .search(registry.services["recipient"].parser.from_params([("limit", "2")]))
        .items
    )
    other = next(r for r in everyone if r["id"] != megha["id"])
    assert http.get(f"/api/v1/recipient/{other['id']}", headers=me).status_code == 404
    stranger = auth_headers(registry, "recipient", recipient=other["id"])
    assert http.get(f"/api/v1/recipient/{megha['id']}", headers=stranger).status_code == 404


def test_audit_and_events_of_a_staff_write_hold_no_private_value(registry, http, megha):
    with registry.db.engine.connect() as conn:
        import sqlalchemy as sa

        rows = conn.execute(sa.text("SELECT * FROM registry_audit")).mappings().all()
        events = conn.execute(sa.text("SELECT * FROM registry_outbox")).mappings().all()
    dumped = json.dumps([dict(r) for r in [*rows, *events]], default=str)
    assert no_private(dumped)
    assert any(r["actor"] == "user:test-admin" and r["record_id"] == megha["id"] for r in rows)


def test_a_facility_admins_import_refuses_the_rows_of_other_facilities(registry, http):
    csv_text = (
        "code,name,nationalIdentifier,facilityIds,mobileNumber,status\n"
        "VAC-9001,Own One,HW9001,NL-RVS-01,+99 90000 90001,Active\n"
        "VAC-9002,Other One,HW9002,NL-HLC-02,+99 90000 90002,Active\n"
        "VAC-9003,Both,HW9003,NL-RVS-01|NL-HLC-02,+99 90000 90003,Active\n"
    )
    boss = auth_headers(registry, "facility-admin", facility="NL-RVS-01", subject="boss")
    resp = http.post(
        "/api/v1/vaccinator/imports", content=csv_text, headers={**boss, "content-type": "text/csv"}
    )
    assert resp.status_code == 202, resp.text
    registry.import_jobs.wait(resp.json()["id"])
    job = http.get(resp.headers["location"], headers=boss).json()
    assert job["inserted"] == 2 and job["failed"] == 1
    assert [(e["row"], e["pointer"], e["keyword"]) for e in job["errors"]] == [
        (2, "/facilityIds", "scope")  # data rows are numbered from 1
    ]
    stored = (
        registry.services["vaccinator"]
        .search(
            registry.services["vaccinator"].parser.from_params(
                [("code[in]", "VAC-9001,VAC-9002,VAC-9003")]
            )
        )
        .items
    )
    assert sorted(r["code"] for r in stored) == ["VAC-9001", "VAC-9003"]
    assert {r["_createdBy"] for r in stored} == {"user:boss"}
    # an upsert onto another facility's vaccinator is refused too (private fields: admins only)
    up = http.post(
        "/api/v1/vaccinator/imports?upsert_on=code",
        content=csv_text,
        headers={**boss, "content-type": "text/csv"},
    )
    assert up.status_code == 403


def test_imports_need_create_rights(registry, http):
    csv_text = "identity,name,dob,gender\ndid:x:imp1,Imp One,1980-01-01,Male\n"
    staff = auth_headers(registry, "facility-staff", facility="F1")
    resp = http.post(
        "/api/v1/vaccinator/imports",
        content=csv_text,
        headers={**staff, "content-type": "text/csv"},
    )
    assert resp.status_code == 403
    resp = http.post(
        "/api/v1/recipient/imports",
        content=csv_text,
        headers={**auth_headers(registry, "controller"), "content-type": "text/csv"},
    )
    assert resp.status_code == 403
    resp = http.post(
        "/api/v1/recipient/imports", content=csv_text, headers={"content-type": "text/csv"}
    )
    assert resp.status_code == 401
    resp = http.post(
        "/api/v1/recipient/imports",
        content=csv_text,
        headers={**auth_headers(registry), "content-type": "text/csv"},
    )
    assert resp.status_code == 202


def test_exports_hold_only_the_rows_and_fields_the_caller_may_read(registry, http, megha):
    staff = auth_headers(registry, "facility-staff", facility="F1", subject="ravi")
    csv_text = http.get("/api/v1/recipient/export", headers=staff)
    assert csv_text.status_code == 200 and csv_text.headers["content-type"].startswith("text/csv")
    header = csv_text.text.splitlines()[0].split(",")
    assert "identity" not in header and "phone" not in header and "name" in header
    assert "Megha Test" in csv_text.text and no_private(csv_text.text)
    lines = http.get("/api/v1/recipient/export?format=jsonl", headers=staff).text.splitlines()
    assert len(lines) == 61 and no_private("\n".join(lines))
    me = auth_headers(registry, "recipient", recipient=megha["id"])
    own = http.get("/api/v1/recipient/export?format=jsonl", headers=me).text.splitlines()
    assert [json.loads(x)["identity"] for x in own] == [IDENTITY]
    assert http.get("/api/v1/recipient/export").status_code == 401
    by_identity = http.get(f"/api/v1/recipient/export?identity={IDENTITY}", headers=staff)
    assert by_identity.status_code == 403
    from open_registry.core.audit.chain import AuditQuery, list_entries

    items, _ = list_entries(registry.db.engine, AuditQuery(action="export"))
    assert items[0]["actor"] == "user:test-admin" or items[0]["actor"].startswith("user:")
    assert {i["actor"] for i in items} >= {"user:ravi"}
