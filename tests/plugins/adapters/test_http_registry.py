"""The generic HTTP/JSON adapter against an ID service and a master-data API on loopback:
`lookup_person` (found, not found, unavailable: 500, timeout, not JSON) with OAuth2 client
credentials, `GET /api/v1/people/lookup`, sources with page/offset/next paging; the field
mapping; the FHIR DDCC export."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest

from open_registry.core import LookupUnavailable, Settings, StartupError, create_app, open_registry
from open_registry.plugins.adapters import fhir_map, sync
from open_registry.plugins.adapters.mapping import FieldMapping, MappingError, value_of
from tests.authn import admin_client, auth_headers
from tests.plugins.adapters.servers import Loopback, Reply, Request

PEOPLE = {
    "NID-1001": {"person": {"fullName": "Asha Rao", "birthDate": "1980-02-01", "sex": "F"}},
    "NID/odd id": {"person": {"fullName": "Odd", "birthDate": "1970-01-01", "sex": "X"}},
}


class IdService:
    """A national ID service behind OAuth2 client credentials."""

    def __init__(self) -> None:
        self.tokens = 0

    def __call__(self, req: Request) -> Reply:
        if req.path == "/oauth/token":
            expected = "Basic " + base64.b64encode(b"registry:s3cret").decode()
            if req.headers.get("authorization") != expected or b"client_credentials" not in (
                req.body
            ):
                return Reply(401, {"error": "invalid_client"})
            self.tokens += 1
            return Reply(200, {"access_token": f"tok-{self.tokens}", "expires_in": 3600})
        if req.headers.get("authorization") != f"Bearer tok-{self.tokens}":
            return Reply(401, {"error": "invalid_token"})
        nid = req.path.removeprefix("/v1/people/")
        from urllib.parse import unquote

        person = PEOPLE.get(unquote(nid))
        return Reply(200, person) if person else Reply(404, {"error": "not found"})


@pytest.fixture
def id_service() -> Iterator[tuple[Loopback, IdService]]:
    fake = IdService()
    with Loopback(fake) as server:
        yield server, fake


def lookup_settings(settings: Settings, url: str, **extra: Any) -> Settings:
    table = {
        "timeout": 0.5,
        "auth": {
            "type": "oauth2",
            "token_url": f"{url}/oauth/token",
            "client_id": "registry",
            "client_secret_env": "TEST_ID_SECRET",
        },
        "lookup": {
            "url": f"{url}/v1/people/{{identity}}",
            "path": "person",
            "fields": {
                "name": "fullName",
                "dob": "birthDate",
                "gender": {"path": "sex", "map": {"M": "Male", "F": "Female", "X": "Other"}},
            },
        },
        **extra,
    }
    return settings.with_(plugins={"http_registry": table})


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_ID_SECRET", "s3cret")


def test_lookup_person_found_not_found_and_unavailable_are_three_answers(
    settings: Settings, id_service: tuple[Loopback, IdService]
):
    server, fake = id_service
    reg = open_registry(lookup_settings(settings, server.url))
    try:
        asha = reg.lookup_person("NID-1001")
        assert asha == {"name": "Asha Rao", "dob": "1980-02-01", "gender": "Female"}
        assert reg.lookup_person("NID/odd id")["gender"] == "Other"  # quoted into the path
        assert reg.lookup_person("NID-404") is None
        assert fake.tokens == 1  # the token is reused
        server.failures = [Reply(401, {"error": "expired"})]
        assert reg.lookup_person("NID-1001")["name"] == "Asha Rao"  # fetched a new token once
        assert fake.tokens == 2
        for failure, reason in [
            (Reply(500, {"error": "boom"}), "answered 500"),
            (Reply(200, "<html>", {"Content-Type": "text/html"}), "not JSON"),
            (Reply(200, {"person": "yes"}), "not a person object"),
            (Reply(200, {"person": {"fullName": "X", "sex": "?"}}), "/gender"),
        ]:
            server.failures = [failure]
            with pytest.raises(LookupUnavailable, match=reason):
                reg.lookup_person("NID-1001")

        def slow(req: Request) -> Reply:
            reply = fake(req)
            reply.delay = 1.5
            return reply

        server.handler = slow
        with pytest.raises(LookupUnavailable, match=r"did not answer within 0\.5 s"):
            reg.lookup_person("NID-1001")
    finally:
        reg.close()


def test_the_people_lookup_route_answers_200_404_and_503(
    settings: Settings, id_service: tuple[Loopback, IdService]
):
    server, _ = id_service
    reg = open_registry(lookup_settings(settings, server.url))
    try:
        with admin_client(create_app(registry=reg)) as client:
            found = client.get("/api/v1/people/lookup", params={"identity": "NID-1001"})
            assert found.status_code == 200 and found.json()["name"] == "Asha Rao"
            missing = client.get("/api/v1/people/lookup", params={"identity": "NID-0"})
            assert missing.status_code == 404
            server.failures = [Reply(503)]
            down = client.get("/api/v1/people/lookup", params={"identity": "NID-1001"})
            assert down.status_code == 503
            assert down.headers["content-type"] == "application/problem+json"
            assert down.json()["type"] == "/problems/lookup-unavailable"
            assert "s3cret" not in down.text
    finally:
        reg.close()


def test_a_lookup_url_without_a_placeholder_stops_the_start(settings: Settings):
    bad = settings.with_(
        plugins={"http_registry": {"lookup": {"url": "http://127.0.0.1:9/x", "fields": {"a": "b"}}}}
    )
    reg = open_registry(bad)
    try:
        with pytest.raises(StartupError, match="identity"):
            create_app(registry=reg)
    finally:
        reg.close()


ITEMS = [
    {
        "facilityCode": f"MDM-{i:03d}",
        "title": f"Clinic {i}",
        "district": "Riverside",
        "ownership": "public" if i % 2 else "private",
    }
    for i in range(1, 8)
]


def mdm(req: Request) -> Reply:
    """A master-data API with the three paging styles."""
    if req.headers.get("x-api-key") != "mdm-key":
        return Reply(403, {"error": "forbidden"})
    if req.path == "/pages":
        page, size = int(req.arg("page", "1")), int(req.arg("size", "10"))
        return Reply(200, {"data": ITEMS[(page - 1) * size : page * size]})
    if req.path == "/offsets":
        offset, limit = int(req.arg("offset", "0")), int(req.arg("limit", "10"))
        return Reply(200, ITEMS[offset : offset + limit])
    if req.path == "/cursor":
        start = int(req.arg("after", "0"))
        nxt = f"/cursor?after={start + 3}" if start + 3 < len(ITEMS) else None
        return Reply(200, {"items": ITEMS[start : start + 3], "links": {"next": nxt}})
    return Reply(404, {})


@pytest.mark.parametrize(
    "path, items, paging",
    [
        ("/pages", "data", {"type": "page", "size": 3}),
        ("/offsets", None, {"type": "offset", "size": 2}),
        ("/cursor", "items", {"type": "next", "path": "links.next"}),
    ],
)
def test_generic_sources_page_map_and_upsert(
    settings: Settings, path: str, items: str | None, paging: dict[str, Any]
):
    with Loopback(mdm) as server:
        source: dict[str, Any] = {
            "entity": "facility",
            "key": "code",
            "url": f"{server.url}{path}",
            "paging": paging,
            "defaults": {
                "type": "Fixed location",
                "status": "Active",
                "address.addressLine1": "-",
                "address.state": "Northland",
                "address.pincode": "0000",
            },
            "fields": {
                "code": "facilityCode",
                "name": "title",
                "address.district": "district",
                "category": {"path": "ownership", "map": {"public": "GOVT", "private": "PRIVATE"}},
            },
        }
        if items:
            source["items"] = items
        table = {
            "auth": {"type": "api-key", "header": "X-API-Key", "key": "mdm-key"},
            "sources": {"mdm": source},
        }
        reg = open_registry(settings.with_(plugins={"http_registry": table}))
        try:
            assert sync.sources(reg) == ["mdm"]
            report = sync.run(reg, "mdm")
            assert (report.pulled, report.created, report.failed) == (7, 7, [])
            assert sync.run(reg, "mdm").unchanged == 7
        finally:
            reg.close()


def test_field_mapping_paths_maps_types_and_errors():
    data = {
        "a": {"b": [10, {"c": "x"}]},
        "identifier": [{"system": "urn:a", "value": "1"}, {"system": "urn:b", "value": "2"}],
        "n": "42",
        "flag": True,
    }
    assert value_of(data, "a.b.0") == 10 and value_of(data, "a.b.1.c") == "x"
    assert value_of(data, "identifier[system=urn:b].value") == "2"
    assert value_of(data, "a.zz", "d") == "d"
    mapping = FieldMapping(
        {
            "x.y": "a.b.1.c",
            "num": {"path": "n", "type": "integer"},
            "const": {"value": "K"},
            "state": {"path": "flag", "map": {"true": "On"}},
            "missing": {"path": "nope", "default": "dflt"},
            "absent": "nope",
            "bad": {"path": "a.b.1.c", "type": "number"},
        }
    )
    record, errors = mapping.apply(data)
    assert record == {"x": {"y": "x"}, "num": 42, "const": "K", "state": "On", "missing": "dflt"}
    assert errors == [{"pointer": "/bad", "message": "bad: 'x' is not a number", "keyword": "type"}]
    for broken in ({}, {"a": 1}, {"a": {"path": "x", "value": 1}}, {"a": {"path": "x", "zz": 1}}):
        with pytest.raises(MappingError):
            FieldMapping(broken)


def test_a_vaccination_exports_as_a_ddcc_bundle(settings: Settings):
    recipient = {
        "id": "r1",
        "name": "Asha Rao",
        "dob": "1980-02-01",
        "gender": "Female",
        "identity": "did:example:national-id:1",
    }
    facility = {
        "id": "f1",
        "code": "FH-001",
        "name": "Harbour Clinic",
        "address": {
            "addressLine1": "12 Harbour St",
            "district": "Riverside",
            "state": "Northland",
            "pincode": "4110",
            "country": "IND",
        },
    }
    vaccine = {
        "code": "COVISHIELD",
        "name": "Covishield",
        "manufacturer": "Serum Institute",
        "icd11Code": "XM9QW8",
    }
    vaccination = {
        "id": "v1",
        "recipient": "r1",
        "facility": "FH-001",
        "vaccine": "COVISHIELD",
        "dose": 1,
        "totalDoses": 2,
        "batch": "4121Z005",
        "date": "2026-03-01T10:30:00+05:30",
        "effectiveStart": "2026-03-15",
    }
    bundle = fhir_map.ddcc_bundle(
        vaccination,
        recipient=recipient,
        facility=facility,
        vaccine=vaccine,
        vaccinator={"code": "V-1", "name": "Dr Ode"},
        certificate={"id": "c1", "issuedAt": "2026-03-01T11:00:00Z"},
    )
    assert bundle["type"] == "document" and bundle["timestamp"] == "2026-03-01T11:00:00Z"
    kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert kinds == ["Composition", "Patient", "Organization", "Practitioner", "Immunization"]
    imm = bundle["entry"][-1]["resource"]
    assert imm["meta"]["profile"] == [fhir_map.PROFILE + "DDCCImmunization"]
    assert imm["vaccineCode"]["coding"] == [{"system": fhir_map.ICD11, "code": "XM9QW8"}]
    assert imm["protocolApplied"][0]["doseNumberPositiveInt"] == 1
    assert imm["protocolApplied"][0]["seriesDosesPositiveInt"] == 2
    assert imm["lotNumber"] == "4121Z005"
    urls = {e["url"]: e for e in imm["extension"]}
    assert urls[fhir_map.PROFILE + "DDCCEventBrand"]["valueCoding"]["code"] == "COVISHIELD"
    assert urls[fhir_map.PROFILE + "DDCCCountryOfEvent"]["valueCode"] == "IND"
    patient = bundle["entry"][1]["resource"]
    assert patient["gender"] == "female" and patient["birthDate"] == "1980-02-01"
    assert imm["patient"]["reference"] == f"urn:uuid:{patient['id']}"
    full_urls = {e["fullUrl"] for e in bundle["entry"]}
    composition = bundle["entry"][0]["resource"]
    assert composition["section"][0]["entry"][0]["reference"] in full_urls
    again = fhir_map.ddcc_bundle(
        vaccination,
        recipient=recipient,
        facility=facility,
        vaccine=vaccine,
        vaccinator={"code": "V-1", "name": "Dr Ode"},
        certificate={"id": "c1", "issuedAt": "2026-03-01T11:00:00Z"},
    )
    assert again == bundle  # stable ids: the same export twice is the same document


def test_the_ddcc_route_serves_a_recorded_vaccination(settings: Settings):
    from open_registry.core.demo import load_demo_data

    reg = open_registry(settings.with_(plugins={"fhir": {"base_url": "http://127.0.0.1:9/f"}}))
    load_demo_data(reg.services)
    try:
        with admin_client(create_app(registry=reg)) as client:
            assert (
                "/api/v1/fhir/vaccinations/{vaccination_id}"
                in client.get("/openapi.json").json()["paths"]
            )
            pick = {
                e: client.get(f"/api/v1/{e}?limit=1").json()["items"][0]
                for e in ("recipient", "program", "vaccine", "facility")
            }
            vac = client.post(
                "/api/v1/vaccination",
                json={
                    "recipient": pick["recipient"]["id"],
                    "program": pick["program"]["code"],
                    "vaccine": pick["vaccine"]["code"],
                    "facility": pick["facility"]["code"],
                    "dose": 1,
                    "totalDoses": 2,
                    "batch": "B7",
                    "date": "2026-03-01T10:30:00Z",
                },
            ).json()
            resp = client.get(f"/api/v1/fhir/vaccinations/{vac['id']}")
            assert resp.status_code == 200
            assert resp.headers["content-type"] == "application/fhir+json"
            bundle = resp.json()
            patient = bundle["entry"][1]["resource"]
            assert patient["name"][0]["text"] == pick["recipient"]["name"]
            assert client.get("/api/v1/fhir/vaccinations/nope").status_code == 404
            # personal data: staff of another facility do not find it, anonymous callers sign in
            path = f"/api/v1/fhir/vaccinations/{vac['id']}"
            other = auth_headers(reg, "facility-staff", facility="SOMEWHERE-ELSE")
            assert client.get(path, headers=other).status_code == 404
            own = auth_headers(reg, "facility-staff", facility=pick["facility"]["code"])
            assert client.get(path, headers=own).status_code == 200
            assert client.get(path, headers={"Authorization": ""}).status_code == 401
            lookup = "/api/v1/people/lookup?identity=NID-1"
            assert client.get(lookup, headers={"Authorization": ""}).status_code == 401
            monitoring = auth_headers(reg, "monitoring")
            assert client.get(lookup, headers=monitoring).status_code == 403
    finally:
        reg.close()
