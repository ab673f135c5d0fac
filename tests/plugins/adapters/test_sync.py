"""Master-data sync (`pull_master_data`, `register_sync_sources`, `registry sync`) from a
DHIS2-like and a FHIR-like server on loopback, on SQLite and PostgreSQL: facility lists land in
the facility registry, re-running changes nothing, bad rows are reported per row and write
nothing, a broken source (500, malformed JSON, too slow) changes nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import typer
from typer.testing import CliRunner

from open_registry.core import Settings, open_registry
from open_registry.core.app import Registry
from open_registry.plugins.adapters import plugin, sync
from tests.plugins.adapters.servers import Loopback, Reply, Request


def org_unit(uid: str, code: str | None, name: str, **extra: Any) -> dict[str, Any]:
    unit = {
        "id": uid,
        "name": name,
        "level": 4,
        "parent": {"id": "p1", "name": "Riverside", "parent": {"id": "p0", "name": "Northland"}},
        **extra,
    }
    if code:
        unit["code"] = code
    return unit


ORG_UNITS = [
    org_unit(
        "ImspTQPwCqd",
        "OU-001",
        "Ngelehun CHC",
        address="1 Main Road",
        geometry={"type": "Point", "coordinates": [-11.45, 8.11]},
    ),
    org_unit("DiszpKrYNg8", "OU-002", "Njandama MCHP", phoneNumber="+232 76 000 000"),
    org_unit("g8upMTyEZGZ", None, "Bumpeh CHP"),  # no code: the uid is the code
    org_unit("jUb8gELQApl", "OU-004", "Kailahun Govt Hospital", closedDate="2024-01-01"),
    org_unit("bad00000001", "bad code!", "A unit whose code breaks our pattern"),
    org_unit("O6uvpzGd5pu", "OU-006", "Bo Clinic", email="bo@clinic.example"),
    org_unit("fdc6uOvgoji", "OU-007", "Bombali Clinic"),
]


class Dhis2:
    """`/api/organisationUnits` as DHIS2 serves it: `pager` and pages of `pageSize`."""

    def __init__(self) -> None:
        self.units = [dict(u) for u in ORG_UNITS]

    def __call__(self, req: Request) -> Reply:
        if req.path != "/api/organisationUnits":
            return Reply(404, {"httpStatus": "Not Found"})
        if req.headers.get("authorization") != "ApiToken d2pat_test":
            return Reply(401, {"httpStatus": "Unauthorized"})
        size, page = int(req.arg("pageSize", "50")), int(req.arg("page", "1"))
        units = self.units
        if req.arg("filter"):
            units = [u for u in units if f"level:eq:{u['level']}" == req.arg("filter")]
        count = max(1, -(-len(units) // size))
        return Reply(
            200,
            {
                "pager": {"page": page, "pageCount": count, "total": len(units), "pageSize": size},
                "organisationUnits": units[(page - 1) * size : page * size],
            },
        )


@pytest.fixture
def dhis2() -> Iterator[tuple[Loopback, Dhis2]]:
    fake = Dhis2()
    with Loopback(fake) as server:
        yield server, fake


def dhis2_settings(settings: Settings, url: str, **extra: Any) -> Settings:
    table = {
        "base_url": url,
        "auth": {"type": "apitoken", "token_env": "TEST_DHIS2_TOKEN"},
        "page_size": 3,
        "level": 4,
        "defaults": {
            "category": "GOVT",
            "type": "Fixed location",
            "address.addressLine1": "Not given",
            "address.pincode": "000000",
        },
        **extra,
    }
    return settings.with_(plugins={"dhis2": table})


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_DHIS2_TOKEN", "d2pat_test")


def snapshot(reg: Registry, entity: str) -> dict[str, tuple[int, str]]:
    table = reg.db.tables[entity]
    with reg.db.engine.connect() as conn:
        rows = conn.execute(sa.select(table.c.code, table.c._version, table.c.name)).all()
    return {code: (version, name) for code, version, name in rows}


def records(reg: Registry, entity: str) -> dict[str, dict[str, Any]]:
    """Every live record of `entity` by code, as the API shows it."""
    service = reg.services[entity]
    with reg.db.engine.connect() as conn:
        rows = conn.execute(sa.select(service.table)).mappings().all()
    return {r["code"]: service.codec.to_record(r) for r in rows}


def system_rows(reg: Registry) -> tuple[int, int]:
    tables = reg.db.metadata.tables
    with reg.db.engine.connect() as conn:
        return tuple(  # type: ignore[return-value]
            conn.execute(sa.select(sa.func.count()).select_from(tables[t])).scalar_one()
            for t in ("registry_audit", "registry_outbox")
        )


def test_dhis2_org_units_land_as_facilities_and_a_rerun_changes_nothing(
    settings: Settings, dhis2: tuple[Loopback, Dhis2]
):
    server, fake = dhis2
    reg = open_registry(dhis2_settings(settings, server.url))
    try:
        assert "dhis2" in sync.sources(reg)
        report = sync.run(reg, "dhis2")
        assert (report.entity, report.key, report.pulled) == ("facility", "code", 7)
        assert (report.created, report.updated, report.unchanged) == (6, 0, 0)
        [bad] = report.failed
        assert bad.ref == "organisationUnit bad00000001" and bad.errors[0]["pointer"] == "/code"
        pages = [r.arg("page") for r in server.requests]
        assert pages == ["1", "2", "3"]  # 7 units, 3 a page, DHIS2's pager followed
        by_code = records(reg, "facility")
        assert by_code["OU-001"]["address"] == {
            "addressLine1": "1 Main Road",
            "district": "Riverside",
            "state": "Northland",
            "pincode": "000000",
        }
        assert by_code["OU-001"]["geoLocation"] == {"lat": 8.11, "lon": -11.45}
        assert by_code["g8upMTyEZGZ"]["name"] == "Bumpeh CHP"
        assert by_code["OU-004"]["status"] == "Inactive"
        assert by_code["OU-002"]["contact"] == "+232 76 000 000"
        assert all(f["_createdBy"] == "sync:dhis2" for f in by_code.values())

        before, rows = snapshot(reg, "facility"), system_rows(reg)
        again = sync.run(reg, "dhis2")
        assert (again.created, again.updated, again.unchanged) == (0, 0, 6)
        assert snapshot(reg, "facility") == before  # not even a version number moved
        assert system_rows(reg) == rows  # no audit entry, no event

        # a unit renamed in DHIS2 is updated, the others are left alone
        fake.units[0]["name"] = "Ngelehun Community Health Centre"
        third = sync.run(reg, "dhis2")
        assert (third.created, third.updated, third.unchanged) == (0, 1, 5)
        assert snapshot(reg, "facility")["OU-001"] == (2, "Ngelehun Community Health Centre")
    finally:
        reg.close()


def test_sync_keeps_what_the_source_does_not_map(settings: Settings, dhis2: tuple[Loopback, Dhis2]):
    server, _ = dhis2
    reg = open_registry(dhis2_settings(settings, server.url))
    try:
        sync.run(reg, "dhis2")
        service = reg.services["facility"]
        rec = records(reg, "facility")["OU-007"]
        service.update(
            rec["id"],
            {"websiteUrl": "https://bombali.example", "averageRating": 4.5},
            actor="admin",
            patch=True,
        )
        report = sync.run(reg, "dhis2")
        assert report.unchanged == 6
        kept = service.get(rec["id"])
        assert kept["websiteUrl"] == "https://bombali.example" and kept["averageRating"] == 4.5
    finally:
        reg.close()


@pytest.mark.parametrize(
    "failure, message",
    [
        (Reply(500, {"httpStatus": "Internal Server Error"}), "answered 500"),
        (Reply(200, "<html>maintenance</html>"), "not JSON"),
        (Reply(200, {"pager": {}, "organisationUnits": "nope"}), "no organisationUnits list"),
        (Reply(200, {"pager": {}}, delay=1.5), "did not answer within"),
    ],
)
def test_a_broken_dhis2_page_changes_nothing(
    settings: Settings, dhis2: tuple[Loopback, Dhis2], failure: Reply, message: str
):
    server, fake = dhis2
    reg = open_registry(dhis2_settings(settings, server.url, timeout=0.5))
    try:
        original = fake.__call__
        calls = {"n": 0}

        def second_page_fails(req: Request) -> Reply:
            calls["n"] += 1
            return failure if calls["n"] == 2 else original(req)

        server.handler = second_page_fails
        with pytest.raises(sync.SyncError, match=message):
            sync.run(reg, "dhis2")
        assert snapshot(reg, "facility") == {}  # the first page was not half-written
        server.handler = original
        assert sync.run(reg, "dhis2").created == 6  # and the next run does it all
    finally:
        reg.close()


def test_dhis2_refusing_our_token_is_a_clear_error(
    settings: Settings, dhis2: tuple[Loopback, Dhis2], monkeypatch: pytest.MonkeyPatch
):
    server, _ = dhis2
    monkeypatch.setenv("TEST_DHIS2_TOKEN", "d2pat_wrong")
    reg = open_registry(dhis2_settings(settings, server.url))
    try:
        with pytest.raises(sync.SyncError, match="refused the request: 401"):
            sync.run(reg, "dhis2")
    finally:
        reg.close()


# -- FHIR ----------------------------------------------------------------------------------------

NID = "urn:examplia:nid"
CODE = "urn:examplia:facility-code"


def organization(fid: str, code: str, name: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Organization",
        "id": fid,
        "identifier": [{"system": "urn:other", "value": "x"}, {"system": CODE, "value": code}],
        "name": name,
        "active": True,
        "address": [
            {
                "line": ["12 Harbour St"],
                "district": "Riverside",
                "state": "Northland",
                "postalCode": "411020",
                "country": "Examplia",
            }
        ],
        **extra,
    }


ORGANIZATIONS = [
    organization("org1", "FH-001", "Harbour Clinic"),
    organization(
        "org2", "FH-002", "Hill Hospital", telecom=[{"system": "phone", "value": "+99 90000 00009"}]
    ),
    organization("org3", "FH-003", "Closed Dispensary", active=False),
    {"resourceType": "Organization", "id": "org4", "name": "No address"},  # fails validation
]
PRACTITIONERS = [
    {
        "resourceType": "Practitioner",
        "id": "pr1",
        "identifier": [{"system": NID, "value": "NID-1001"}, {"system": "urn:vac", "value": "V-1"}],
        "name": [{"given": ["Asha"], "family": "Rao"}],
        "telecom": [{"system": "phone", "value": "+99 90000 00001"}],
    },
    {
        "resourceType": "Practitioner",
        "id": "pr2",
        "identifier": [{"system": "urn:vac", "value": "V-2"}],  # no national id: fails
        "name": [{"text": "Ben Ode"}],
        "telecom": [{"system": "phone", "value": "+99 90000 00002"}],
    },
]
ROLES = [
    {
        "resourceType": "PractitionerRole",
        "id": "r1",
        "practitioner": {"reference": "Practitioner/pr1"},
        "organization": {"reference": "Organization/org1"},
    },
    {
        "resourceType": "PractitionerRole",
        "id": "r2",
        "practitioner": {"reference": "Practitioner/pr1"},
        "organization": {"reference": "Organization/org2"},
    },
    {
        "resourceType": "PractitionerRole",
        "id": "r3",
        "practitioner": {"reference": "Practitioner/pr2"},
        "organization": {"reference": "Organization/org1"},
    },
]


class FhirServer:
    """FHIR R4 searches answered as `searchset` Bundles, two entries a page, `next` links."""

    def __init__(self, base: str = "/fhir") -> None:
        self.base = base
        self.url = ""

    def page(self, resource: str, items: list[dict[str, Any]], page: int) -> Reply:
        chunk = items[(page - 1) * 2 : page * 2]
        links = [{"relation": "self", "url": f"{self.url}{self.base}/{resource}?page={page}"}]
        if page * 2 < len(items):
            links.append(
                {"relation": "next", "url": f"{self.url}{self.base}/{resource}?page={page + 1}"}
            )
        return Reply(
            200,
            {
                "resourceType": "Bundle",
                "type": "searchset",
                "total": len(items),
                "link": links,
                "entry": [
                    {"fullUrl": f"{self.url}/{r['resourceType']}/{r['id']}", "resource": r}
                    for r in chunk
                ],
            },
            {"Content-Type": "application/fhir+json"},
        )

    def __call__(self, req: Request) -> Reply:
        page = int(req.arg("page", "1"))
        if req.path == f"{self.base}/Organization":
            return self.page("Organization", ORGANIZATIONS, page)
        if req.path == f"{self.base}/PractitionerRole":
            included = [*ROLES, *PRACTITIONERS, ORGANIZATIONS[0], ORGANIZATIONS[1]]
            return self.page("PractitionerRole", included, page)
        return Reply(404, {"resourceType": "OperationOutcome"})


@pytest.fixture
def fhir_server() -> Iterator[Loopback]:
    fake = FhirServer()
    with Loopback(fake) as server:
        fake.url = server.url
        yield server


def fhir_settings(settings: Settings, url: str) -> Settings:
    table = {
        "base_url": f"{url}/fhir",
        "identifier_system": CODE,
        "practitioner_identifier_system": "urn:vac",
        "national_id_system": NID,
        "defaults": {"category": "GOVT", "type": "Fixed location"},
    }
    return settings.with_(plugins={"fhir": table})


def test_fhir_organizations_land_as_facilities_and_practitioners_as_vaccinators(
    settings: Settings, fhir_server: Loopback
):
    reg = open_registry(fhir_settings(settings, fhir_server.url))
    try:
        assert {"fhir-facilities", "fhir-vaccinators"} <= set(sync.sources(reg))
        report = sync.run(reg, "fhir-facilities")
        assert (report.created, len(report.failed)) == (3, 1)
        assert report.failed[0].ref == "Organization/org4"
        assert {e["pointer"] for e in report.failed[0].errors} == {"/address"}
        facilities = snapshot(reg, "facility")
        assert set(facilities) == {"FH-001", "FH-002", "FH-003"}
        closed = records(reg, "facility")["FH-003"]
        assert closed["status"] == "Inactive"
        assert closed["address"]["pincode"] == "411020"

        people = sync.run(reg, "fhir-vaccinators")
        assert people.created == 1 and people.failed[0].ref == "Practitioner/pr2"
        assert people.failed[0].errors[0]["pointer"] == "/nationalIdentifier" or any(
            e["pointer"] == "/nationalIdentifier" for e in people.failed[0].errors
        )
        asha = records(reg, "vaccinator")["V-1"]
        assert asha["name"] == "Asha Rao" and asha["facilityIds"] == ["FH-001", "FH-002"]
        assert asha["nationalIdentifier"] == "NID-1001"  # private: stored encrypted

        before, rows = snapshot(reg, "facility"), system_rows(reg)
        assert sync.run(reg, "fhir-facilities").unchanged == 3
        assert sync.run(reg, "fhir-vaccinators").unchanged == 1
        assert snapshot(reg, "facility") == before and system_rows(reg) == rows
    finally:
        reg.close()


def test_fhir_next_links_to_another_server_are_not_followed(settings: Settings):
    def elsewhere(req: Request) -> Reply:
        return Reply(
            200,
            {
                "resourceType": "Bundle",
                "entry": [],
                "link": [{"relation": "next", "url": "http://203.0.113.9/fhir/x"}],
            },
        )

    with Loopback(elsewhere) as server:
        reg = open_registry(fhir_settings(settings, server.url))
        try:
            with pytest.raises(sync.SyncError, match="another server"):
                sync.run(reg, "fhir-facilities")
        finally:
            reg.close()


def test_registry_sync_command_reports_rows_and_exits_1(
    settings: Settings,
    dhis2: tuple[Loopback, Dhis2],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    server, _ = dhis2
    table = dhis2_settings(settings, server.url).plugins["dhis2"]
    toml = [
        f'database_url = "{settings.database_url}"',
        f'data_dir = "{settings.data_dir}"',
        "load_entrypoints = false",
        "[plugins.dhis2]",
        f'base_url = "{table["base_url"]}"',
        "page_size = 3",
        'auth = { type = "apitoken", token_env = "TEST_DHIS2_TOKEN" }',
        'defaults = { category = "GOVT", type = "Fixed location", '
        '"address.addressLine1" = "-", "address.pincode" = "000000" }',
    ]
    (tmp_path / "registry.toml").write_text("\n".join(toml) + "\n")
    monkeypatch.chdir(tmp_path)
    app = typer.Typer()
    app.command("version")(lambda: None)
    plugin.register_commands(cli=app)
    runner = CliRunner()
    listed = runner.invoke(app, ["sync", "--list"])
    assert listed.exit_code == 0 and "dhis2" in listed.output.split()
    result = runner.invoke(app, ["sync", "dhis2", "--report", str(tmp_path / "r.json")])
    assert result.exit_code == 1, result.output
    assert "created 6" in result.output and "row 5 (organisationUnit bad00000001): /code" in (
        result.output
    )
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved[0]["created"] == 6 and saved[0]["failed"][0]["row"] == 5
    again = runner.invoke(app, ["sync", "--all", "--dry-run"])
    assert "unchanged 6" in again.output
    unknown = runner.invoke(app, ["sync", "nowhere"])
    assert unknown.exit_code == 1 and "no plugin serves the source 'nowhere'" in unknown.output
    assert runner.invoke(app, ["sync", "dhis2", "--every", "soon"]).exit_code == 2
