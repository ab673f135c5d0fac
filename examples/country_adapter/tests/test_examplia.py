"""The Examplia adapter against both fictional services, started as real HTTP servers on
loopback: found via its entry point, lookups (found, unknown, unavailable), facility sync."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from open_registry.core import LookupUnavailable
from open_registry.core.plugins import describe

CITIZENS = {
    "EX-1001": {
        "nid": "EX-1001",
        "names": {"given": "Lina", "family": "Moreau"},
        "dateOfBirth": "1988-04-12",
        "sex": "F",
        "mobile": "+99 91234 56789",
    }
}
FACILITIES = [
    {
        "hfrCode": "HFR-01",
        "officialName": "Port Clinic",
        "ownership": "public",
        "district": "Coast",
        "province": "West",
        "street": "1 Quay",
        "postcode": "1001",
    },
    {
        "hfrCode": "HFR-02",
        "officialName": "Hill Mission",
        "ownership": "faith-based",
        "district": "Hills",
        "province": "East",
        "postcode": "2002",
        "operational": False,
    },
    {
        "hfrCode": "HFR-03",
        "officialName": "Nameless",
        "ownership": "public",
        "district": "Coast",
        "province": "West",
        "postcode": "12",
    },  # a bad postcode
]


class Services:
    """Both fictional Examplian systems on one loopback server; `mode` injects failures."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.keys: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                outer.keys.append(self.headers.get("X-Examplia-Key", ""))
                if outer.mode == "slow":
                    time.sleep(1.0)
                if outer.mode == "down":
                    return self._reply(500, {"error": "maintenance"})
                if parts.path.startswith("/nid/citizens/"):
                    citizen = CITIZENS.get(parts.path.rsplit("/", 1)[1])
                    if outer.mode == "garbled":
                        return self._reply(200, {"nid": "EX-1001"})
                    return self._reply(200, citizen) if citizen else self._reply(404, {})
                if parts.path == "/hfr/facilities":
                    cursor = parse_qs(parts.query).get("cursor", ["0"])[0]
                    start = int(cursor)
                    nxt = str(start + 2) if start + 2 < len(FACILITIES) else None
                    page = {"facilities": FACILITIES[start : start + 2], "nextCursor": nxt}
                    return self._reply(200, page)
                return self._reply(404, {})

            def _reply(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def services() -> Iterator[Services]:
    fake = Services()
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


@pytest.fixture
def registry(services: Services, make_registry: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A registry from open-registry's testing kit (`make_registry`, a pytest fixture it
    installs): a SQLite file in the test's folder, closed after the test."""
    monkeypatch.setenv("EXAMPLIA_NID_KEY", "test-key")
    return make_registry(
        load_entrypoints=True,  # as in production: the plugin is found through its entry point
        plugins={
            "examplia": {
                "id_service_url": f"{services.url}/nid",
                "facility_registry_url": f"{services.url}/hfr",
                "timeout": 0.5,
            }
        },
    )


def test_the_plugin_is_found_through_its_entry_point(registry: Any):
    [mine] = [p for p in describe(registry.pm) if p["name"] == "examplia"]
    assert mine["origin"].startswith("examplia-registry-adapter")
    assert {"lookup_person", "pull_master_data", "register_sync_sources"} <= set(mine["hooks"])


def test_lookup_finds_a_citizen_and_sends_the_key(registry: Any, services: Services):
    person = registry.lookup_person("EX-1001")
    assert person == {
        "identity": "EX-1001",
        "name": "Lina Moreau",
        "dob": "1988-04-12",
        "gender": "Female",
        "phone": "+99 91234 56789",
    }
    assert services.keys == ["test-key"]


def test_unknown_and_unavailable_are_different_answers(registry: Any, services: Services):
    assert registry.lookup_person("EX-9999") is None
    for mode in ("down", "garbled", "slow"):
        services.mode = mode
        with pytest.raises(LookupUnavailable):
            registry.lookup_person("EX-1001")


def test_facilities_are_synced_by_code_and_a_rerun_changes_nothing(registry: Any):
    from open_registry.plugins.adapters import sync

    assert "examplia-facilities" in sync.sources(registry)
    report = sync.run(registry, "examplia-facilities")
    assert (report.created, report.unchanged) == (2, 0)
    [bad] = report.failed
    assert bad.ref == "hfr HFR-03" and bad.errors[0]["pointer"] == "/address/pincode"
    again = sync.run(registry, "examplia-facilities")
    assert (again.created, again.updated, again.unchanged) == (0, 0, 2)


def test_a_broken_facility_registry_is_a_clear_error(registry: Any, services: Services):
    from open_registry.plugins.adapters import sync

    services.mode = "down"
    with pytest.raises(sync.SyncError, match="facility registry cannot be read"):
        sync.run(registry, "examplia-facilities")
