"""A day at two facilities, driven through the HTTP API as the people involved would: used by
the end-to-end test and by the dashboard's browser test server. Returns what the dashboard must
show for it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient

from open_registry.core.outbox.worker import Worker

A, B = "NL-RVS-01", "EM-PTV-01"  # Riverside (Northland), Portview (Eastmarch)
PROGRAM = "COVID19-2026"
ALL_DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
PEOPLE = [  # name, gender, dob: ages 20, 35, 50, 65, 30, 16 on the day (about)
    ("Anita Rao", "Female", 1),
    ("Bilal Khan", "Male", 2),
    ("Chen Wei", "Female", 3),
    ("Dev Patel", "Male", 4),
    ("Esha Nair", "Female", 5),
    ("Farah Ali", "Other", 6),
]
AGES = {1: 20, 2: 35, 3: 50, 4: 65, 5: 30, 6: 16}


def _ok(resp: Any, *codes: int) -> Any:
    assert resp.status_code in codes, resp.text
    return resp.json() if resp.content else None


def _sign_up(person: TestClient, registry: Any, phone: str) -> str:
    """Sign up by one-time code (`otp_signup` on); returns the new user's token. The code is
    taken where the SMS gateway would get it; its check goes through the API."""
    _ok(person.post("/api/v1/auth/otp", json={"channel": "sms", "to": phone}), 202)
    _, code = registry.auth.otp.request("sms", phone, "day-simulation")
    assert code is not None, "the day needs otp_signup = true"
    signed = _ok(
        person.post("/api/v1/auth/otp/verify", json={"channel": "sms", "to": phone, "code": code}),
        200,
    )
    assert signed["signedUp"] is True
    return signed["access_token"]


def simulate_day(client: TestClient, registry: Any) -> dict[str, Any]:
    """Run the day; the outbox worker runs at the end (certificates, rollups, follow-ups)."""
    now = datetime.now(UTC)
    today = now.date()
    when = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    post = client.post
    # 1. the controller activates the facilities with their daily rates
    _ok(
        post("/api/v1/programme/activation", json={"facility": A, "program": PROGRAM, "rate": 10}),
        201,
    )
    _ok(
        post("/api/v1/programme/activation", json={"facility": B, "program": PROGRAM, "rate": 2}),
        201,
    )
    # 2. facility admins set their schedules, stock and thresholds
    _ok(
        post(
            "/api/v1/schedule",
            json={
                "facility": A,
                "program": PROGRAM,
                "days": ALL_DAYS,
                "startTime": "09:00",
                "endTime": "12:00",
                "slotMinutes": 30,
                "capacity": 3,
                "walkInStart": "00:00",
                "walkInEnd": "23:59",
            },
        ),
        201,
    )
    expiry = (today + timedelta(days=365)).isoformat()
    _ok(
        post(
            "/api/v1/stock",
            json={
                "facility": A,
                "vaccine": "CVX-AV",
                "batch": "LOT-A",
                "expiry": expiry,
                "quantity": 20,
            },
        ),
        201,
    )
    _ok(
        post("/api/v1/stock_threshold", json={"facility": A, "vaccine": "CVX-AV", "threshold": 5}),
        201,
    )
    _ok(
        post(
            "/api/v1/stock",
            json={
                "facility": B,
                "vaccine": "CVX-AV",
                "batch": "LOT-B",
                "expiry": expiry,
                "quantity": 5,
            },
        ),
        201,
    )
    # 3. people enrol: the first signs up with a code sent to her phone and enrols herself,
    #    staff enrol the others
    ids = []
    anita = TestClient(client.app)  # her own phone's browser: no administrator's token
    for i, (name, gender, n) in enumerate(PEOPLE):
        dob = today.replace(year=today.year - AGES[n], day=1).isoformat()
        body = {
            "identity": f"did:example:national-id:7000000{i}",
            "name": name,
            "dob": dob,
            "gender": gender,
            "phone": f"+99 97000 0000{i}",
            "address": {"district": "Riverside", "state": "Northland"},
        }
        if i == 0:
            anita.headers["Authorization"] = "Bearer " + _sign_up(anita, registry, body["phone"])
            enrolled = _ok(anita.post("/api/v1/programme/enrol", json=body), 201)
            assert enrolled["enrollmentType"] == "SELF_ENROLLMENT"
            anita.headers["Authorization"] = "Bearer " + enrolled["access_token"]
            ids.append(enrolled["id"])
            continue
        ids.append(_ok(post("/api/v1/programme/enrol", json=body), 201)["id"])
    # 4. four book at A (Anita herself); one cancels, one moves to 10:00
    booked = []
    for i, slot in enumerate(["09:00", "09:00", "09:00", "09:30"]):
        booked.append(
            _ok(
                (anita.post if i == 0 else post)(
                    "/api/v1/programme/appointments",
                    json={
                        "recipient": ids[i],
                        "program": PROGRAM,
                        "facility": A,
                        "date": today.isoformat(),
                        "slot": slot,
                    },
                ),
                201,
            )
        )
    _ok(post(f"/api/v1/programme/appointments/{booked[3]['id']}/cancel", json={}), 200)
    _ok(
        post(
            f"/api/v1/programme/appointments/{booked[2]['id']}/reschedule", json={"slot": "10:00"}
        ),
        200,
    )

    # 5. vaccinations: the three who came at A, two at B, a third refused at B (rate 2)
    def vaccinate(person: str, facility: str, batch: str) -> Any:
        return post(
            "/api/v1/vaccination",
            json={
                "recipient": person,
                "program": PROGRAM,
                "vaccine": "CVX-AV",
                "dose": 1,
                "totalDoses": 2,
                "batch": batch,
                "date": when,
                "facility": facility,
                "vaccinator": "VAC-0001",
            },
        )

    for person in ids[:3]:
        _ok(vaccinate(person, A, "LOT-A"), 201)
    _ok(vaccinate(ids[4], B, "LOT-B"), 201)
    _ok(vaccinate(ids[5], B, "LOT-B"), 201)
    refused = vaccinate(ids[3], B, "LOT-B")
    assert refused.status_code == 409, refused.text
    # 6. a walk-in at A: enrolled and vaccinated in one visit
    _ok(
        post(
            "/api/v1/programme/walk-in",
            json={
                "facility": A,
                "recipient": {
                    "identity": "did:example:national-id:70000099",
                    "name": "Gita Sen",
                    "dob": today.replace(year=today.year - 70, day=1).isoformat(),
                    "gender": "Female",
                },
                "vaccination": {
                    "program": PROGRAM,
                    "vaccine": "CVX-AV",
                    "dose": 1,
                    "totalDoses": 2,
                    "batch": "LOT-A",
                    "date": when,
                    "vaccinator": "VAC-0001",
                },
            },
        ),
        201,
    )
    # 7. the outbox: certificates, rollups, next doses, completed appointments
    worker = Worker(registry)
    while worker.run_once(limit=10**6):
        pass
    certs = _ok(client.get("/api/v1/certificate?limit=100"), 200)["items"]
    assert len(certs) == 6, certs
    # 8. side effects: one mild, one serious
    _ok(
        post(
            "/api/v1/programme/side-effects",
            json={
                "certificate": certs[0]["id"],
                "symptoms": ["Sore arm"],
                "onset": today.isoformat(),
                "severity": "Mild",
            },
        ),
        201,
    )
    _ok(
        post(
            "/api/v1/programme/side-effects",
            json={
                "certificate": certs[1]["id"],
                "symptoms": ["Breathlessness"],
                "onset": today.isoformat(),
                "severity": "Severe",
                "seriousness": ["Hospitalisation"],
            },
        ),
        201,
    )
    # 9. two certificates verified
    for cert in certs[:2]:
        credential = _ok(client.get(f"/api/v1/certificates/{cert['id']}"), 200)
        assert _ok(post("/api/v1/verify", json=credential), 200)["status"] == "VALID"
    while worker.run_once(limit=10**6):
        pass
    return {
        "today": today.isoformat(),
        "totals": {
            "vaccinations": 6,
            "certificates": 6,
            "revoked": 0,
            "verifications": 2,
            "side_effects": 2,
            "serious": 1,
            "low_stock": 1,
        },
        "states": {"Northland": 4, "Eastmarch": 2},
        "facilities": {A: 4, B: 2},
        "people": {
            ("Female", "18-44"): 2,
            ("Male", "18-44"): 1,
            ("Female", "45-59"): 1,
            ("Other", "0-17"): 1,
            ("Female", "60+"): 1,
        },
        "utilisation_today": {A: (4, 40.0), B: (2, 100.0)},
        # next doses are suggested 28 days ahead: outside a period that ends today
        "appointments": {"Booked": 0, "Completed": 3, "Cancelled": 1, "Suggested": 0, "Missed": 0},
        "stock": {A: 16, B: 3},
    }
