"""Offline data entry, the server's side (`plugins/programme/offline.py`), on SQLite and
PostgreSQL: the day's data of `/ui/offline/data` (own facility only, no private fields, the
validation schemas, bounded by the `offline_*` settings), who may get it (anonymous, other roles,
a user without a facility, staff of another facility), the service worker's headers, the
manifest and files, and what the vaccinate page adds for facility staff. The browser's side is
`test_offline_browser.py`."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from open_registry.core import Settings
from open_registry.plugins.programme.config import ConfigError, ProgrammeConfig
from open_registry.plugins.programme.offline import TEXT_KEYS, validation_schema
from open_registry.plugins.programme.scheduling import DAYS
from tests.authn import auth_headers
from tests.plugins.programme.conftest import FACILITY, OTHER_FACILITY, Ops, make_ops, today

BATCH = "LOT-OFF-1"
DATA = "/ui/offline/data"
LOCALES = Path(__file__).resolve().parents[3] / "registry" / "locales"


@pytest.fixture
def day(settings: Settings) -> Iterator[Ops]:
    """The demo data; `FACILITY` active with a batch, two people vaccinated there today, one
    elsewhere; at most 2 recipients in the day's data."""
    for ops in make_ops(settings, offline_max_recipients=2):
        ops.activate()
        ops.activate(facility=OTHER_FACILITY)
        ops.stock(BATCH, quantity=10)
        ops.stock("LOT-OTHER", quantity=10, facility=OTHER_FACILITY)
        people = ops.recipients(5)
        for person in people[:3]:
            assert ops.vaccinate(person["id"], batch=BATCH).status_code == 201
        assert (
            ops.vaccinate(people[3]["id"], batch="LOT-OTHER", facility=OTHER_FACILITY).status_code
            == 201
        )
        ops.people = people  # type: ignore[attr-defined]
        yield ops


def client(ops: Ops, *roles: str, **kw: Any) -> TestClient:
    return TestClient(ops.client.app, headers=auth_headers(ops.registry, *roles, **kw))


def test_staff_get_their_facilitys_day_without_private_fields(day: Ops):
    resp = client(day, "facility-staff", facility=FACILITY).get(DATA)
    assert resp.status_code == 200, resp.text
    assert resp.headers["cache-control"] == "no-store"
    data = resp.json()
    assert data["facility"]["code"] == FACILITY and data["maxAgeHours"] == 12
    assert [b["batch"] for b in data["batches"]] == [BATCH]
    assert data["batches"][0]["left"] == 7 and data["batches"][0]["total"] == 2
    assert {"code", "name", "vaccineIds"} <= set(data["programs"][0])
    assert data["vaccines"] and all("total" in v for v in data["vaccines"])
    # bounded by offline_max_recipients (2 of the 3 vaccinated here), never the other facility's
    people = data["recipients"]
    here = {p["id"] for p in day.people[:3]}  # type: ignore[attr-defined]
    assert len(people) == 2 and {p["id"] for p in people} <= here
    for person in people:
        assert set(person) <= {"id", "name", "born", "gender", "enrollmentCode", "doses"}
        assert person["doses"] == [{"program": "COVID19-2026", "dose": 1}]
    text = resp.text
    for person in day.people[:3]:  # type: ignore[attr-defined]
        assert person.get("phone", "no phone") not in text
    # the schemas the browser validates with: the server's, validation keywords only
    recipient = data["schemas"]["recipient"]
    assert "name" in recipient["required"] and recipient["additionalProperties"] is False
    assert recipient["properties"]["address"]["required"] == ["district", "state"]
    assert "x-registry" not in recipient and "title" not in json.dumps(data["schemas"])
    assert data["schemas"]["vaccination"]["properties"]["date"]["format"] == "date-time"


def test_other_facilitys_staff_get_only_their_own(day: Ops):
    data = client(day, "facility-admin", facility=OTHER_FACILITY).get(DATA).json()
    assert data["facility"]["code"] == OTHER_FACILITY
    assert [b["batch"] for b in data["batches"]] == ["LOT-OTHER"]
    assert [p["id"] for p in data["recipients"]] == [day.people[3]["id"]]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("roles", "kw", "status"),
    [
        ((), {"anonymous": True}, 401),
        (("monitoring",), {}, 403),
        (("recipient",), {}, 403),
        (("system-admin",), {}, 403),  # no facility: no day's data
        (("facility-staff",), {"facility": None}, 403),
    ],
    ids=["anonymous", "monitoring", "recipient", "system-admin", "staff-without-facility"],
)
def test_who_may_not_get_the_days_data(day: Ops, roles: tuple[str, ...], kw: dict, status: int):
    if kw.get("anonymous"):
        resp = TestClient(day.client.app).get(DATA)
    else:
        resp = client(day, *roles, **kw).get(DATA)
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert "recipients" not in resp.text


def test_worker_manifest_files_and_the_page(day: Ops):
    anonymous = TestClient(day.client.app)
    sw = anonymous.get("/ui/sw.js")
    assert sw.status_code == 200 and sw.headers["service-worker-allowed"] == "/ui/"
    assert sw.headers["content-type"].startswith("text/javascript")
    assert sw.headers["cache-control"] == "no-cache"
    assert sw.text.startswith('const PREFIX = "/ui";\nconst VERSION = "')
    manifest = anonymous.get("/ui/offline/manifest.webmanifest")
    assert manifest.headers["content-type"] == "application/manifest+json"
    assert manifest.json()["scope"] == "/ui/" and manifest.json()["start_url"] == "/ui/vaccinate"
    for name in ("app.js", "validate.js", "icon.svg"):
        assert anonymous.get(f"/ui/offline/{name}").status_code == 200
    missing = anonymous.get("/ui/offline/..%2Fplugin.py")
    assert missing.status_code == 404
    staff = client(day, "facility-staff", facility=FACILITY)
    page = staff.get("/ui/vaccinate").text
    assert 'rel="manifest"' in page and 'id="offline"' in page and "/offline/app.js" in page
    person = day.people[0]  # type: ignore[attr-defined]
    chosen = staff.get("/ui/vaccinate", params={"recipient": person["id"]}).text
    kept = re.search(r'data-offline-person="([^"]+)"', chosen)
    assert kept is not None
    offline_person = json.loads(kept.group(1).replace("&#34;", '"'))
    assert offline_person["id"] == person["id"]
    assert offline_person["next"] == {"program": "COVID19-2026", "dose": 2}
    assert set(offline_person) <= {"id", "name", "born", "gender", "enrollmentCode", "next"}
    admin = client(day, "system-admin").get("/ui/vaccinate").text
    assert 'id="offline"' not in admin  # no facility, nothing to keep offline


def test_offline_settings_are_checked():
    assert ProgrammeConfig().offline_max_age_hours == 12
    with pytest.raises(ConfigError, match="offline_max_age_hours"):
        ProgrammeConfig(offline_max_age_hours=0).check()
    with pytest.raises(ConfigError, match="offline_max_appointments"):
        ProgrammeConfig(offline_max_appointments=-1).check()


def test_validation_schema_keeps_validation_keywords_only():
    schema = {
        "type": "object",
        "title": "x",
        "x-registry": {},
        "properties": {"title": {"type": "string", "description": "d", "maxLength": 3}},
        "required": ["title"],
    }
    assert validation_schema(schema) == {
        "type": "object",
        "properties": {"title": {"type": "string", "maxLength": 3}},
        "required": ["title"],
    }


def test_todays_appointments_at_the_facility_are_in_the_days_data(day: Ops):
    """An appointment today at the staff member's facility is in the day's data with its
    person (ahead of the recently vaccinated); one at another facility, or on another day, is
    not."""
    booked = day.people[4]  # type: ignore[attr-defined]
    elsewhere, tomorrow = day.people[3], day.people[2]  # type: ignore[attr-defined]
    now = today()
    for facility in (FACILITY, OTHER_FACILITY):
        day.schedule(facility=facility, days=list(DAYS))
    for person, facility, when, slot in (
        (booked, FACILITY, now, "09:30"),
        (elsewhere, OTHER_FACILITY, now, "10:00"),
        (tomorrow, FACILITY, now + timedelta(days=1), "11:00"),
    ):
        body = {
            "recipient": person["id"],
            "program": "COVID19-2026",
            "dose": 1,
            "facility": facility,
            "date": when.isoformat(),
            "slot": slot,
            "status": "Booked",
        }
        day.post("/api/v1/appointment", body, 201)
    data = client(day, "facility-staff", facility=FACILITY).get(DATA).json()
    assert data["appointments"] == [
        {
            "recipient": booked["id"],
            "program": "COVID19-2026",
            "dose": 1,
            "slot": "09:30",
            "status": "Booked",
        }
    ]
    # the person booked today comes first, within offline_max_recipients (2)
    assert data["recipients"][0]["id"] == booked["id"] and len(data["recipients"]) == 2
    assert elsewhere["id"] not in {p["id"] for p in data["recipients"]}
    other = client(day, "facility-staff", facility=OTHER_FACILITY).get(DATA).json()
    assert [a["recipient"] for a in other["appointments"]] == [elsewhere["id"]]


def test_the_days_data_carries_the_programmes_time_zone(settings: Settings):
    """The browser writes dates in the programme's time zone, not its own: the day's data
    names the zone and its offset now (minutes east of UTC)."""
    for ops in make_ops(settings, timezone="+05:30"):
        ops.activate()
        shift = timedelta(minutes=330)
        before = (datetime.now(UTC) + shift).date().isoformat()
        data = client(ops, "facility-staff", facility=FACILITY).get(DATA).json()
        after = (datetime.now(UTC) + shift).date().isoformat()
        assert data["timezone"] == "+05:30" and data["utcOffset"] == 330
        assert data["day"] in {before, after}  # the programme's day, not the server's


def test_the_offline_texts_follow_the_pages_language(day: Ops):
    """The offline form's own texts come from the registry's catalogs, in the page's language:
    the queue's heading and buttons in the HTML, the rest in `data-texts` for app.js."""
    staff = client(day, "facility-staff", facility=FACILITY)
    for lang in ("hi", "fr", "en"):
        catalog = json.loads((LOCALES / f"{lang}.json").read_text(encoding="utf-8"))
        page = staff.get("/ui/vaccinate", params={"lang": lang}).text
        assert f'id="sync-now">{catalog["offline.sync_now"]}<' in page
        found = re.search(r'data-texts="([^"]+)"', page)
        assert found is not None
        texts = json.loads(html.unescape(found.group(1)))
        assert set(texts) == {*TEXT_KEYS, "batch"}
        assert texts["status"] == catalog["offline.status"]
        assert texts["batch"] == catalog["vaccinate.batch_option"]
        assert all(texts[k] != f"offline.{k}" for k in TEXT_KEYS)  # every key is translated
