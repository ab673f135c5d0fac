"""Side effects after immunization: a recipient (or staff) reports symptoms for a certificate;
the report takes its recipient, facility and programme from the certificate; serious events
are flagged for monitoring (listed, counted on the dashboard, announced)."""

from __future__ import annotations

from typing import Any

from open_registry.core import Settings
from tests.authn import Messages as Outbox
from tests.plugins.programme.conftest import Ops, make_ops, today


def certificate_of(ops: Ops) -> dict[str, Any]:
    ops.activate()
    a = ops.recipients(1)[0]["id"]
    v = ops.vaccinate(a).json()
    ops.deliver()
    [cert] = ops.client.get(f"/api/v1/certificate?vaccination={v['id']}").json()["items"]
    return cert


def report(ops: Ops, cert: dict[str, Any], **extra: Any):
    body = {
        "certificate": cert["id"],
        "symptoms": ["Fever", "Headache"],
        "onset": today().isoformat(),
        "severity": "Mild",
        **extra,
    }
    return ops.client.post("/api/v1/programme/side-effects", json=body)


def test_a_report_takes_its_people_and_place_from_the_certificate(ops: Ops):
    cert = certificate_of(ops)
    resp = report(ops, cert)
    assert resp.status_code == 201, resp.text
    got = resp.json()
    assert (got["recipient"], got["facility"], got["program"]) == (
        cert["recipient"],
        cert["facility"],
        cert["program"],
    )
    assert got["serious"] is False and got["reviewStatus"] == "Open"
    assert ops.client.get("/api/v1/programme/side-effects/serious").json()["items"] == []


def test_serious_events_are_flagged_for_monitoring(settings: Settings):
    messages = Outbox()
    for ops in make_ops(settings, extra=(messages,), monitoring_contact="aefi@health.example"):
        flag_serious(ops, messages)


def flag_serious(ops: Ops, messages: Outbox) -> None:
    cert = certificate_of(ops)
    resp = report(
        ops,
        cert,
        severity="Severe",
        seriousness=["Hospitalisation"],
        reportedBy="Staff",
        description="admitted for observation",
    )
    assert resp.status_code == 201, resp.text
    assert resp.json()["serious"] is True and resp.json()["reportedBy"] == "Staff"
    flagged = ops.client.get("/api/v1/programme/side-effects/serious").json()["items"]
    assert [r["id"] for r in flagged] == [resp.json()["id"]]
    ops.deliver()
    ops.send()
    [notice] = [m for m in messages.sent if m["template"] == "serious-side-effect"]
    assert (notice["channel"], notice["to"]) == ("email", "aefi@health.example")
    assert notice["seriousness"] == ["Hospitalisation"] and notice["report"] == resp.json()["id"]
    assert ops.analytics("side_effects")["rows"][-1][1:] == [1, 1]
    assert ops.analytics("serious")["rows"][0][4] == "Hospitalisation"


def test_bad_reports_are_refused_naming_the_field(ops: Ops):
    cert = certificate_of(ops)
    unknown = report(ops, {"id": "00000000-0000-0000-0000-000000000000"})
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["pointer"] == "/certificate"
    empty = report(ops, cert, symptoms=[])
    assert empty.status_code == 422 and empty.json()["errors"][0]["pointer"] == "/symptoms"
    bad = report(ops, cert, seriousness=["Bored"])
    assert bad.status_code == 422 and bad.json()["errors"][0]["pointer"].startswith("/seriousness")
    # through the generic API the report must agree with its certificate
    generic = ops.client.post(
        "/api/v1/side_effect",
        json={
            "certificate": cert["id"],
            "symptoms": ["Rash"],
            "onset": today().isoformat(),
            "severity": "Mild",
            "reportedBy": "Staff",
            "facility": "EM-PTV-01",
            "seriousness": ["Death"],
        },
    )
    assert generic.status_code == 422
    assert {e["pointer"] for e in generic.json()["errors"]} == {"/facility", "/serious"}
