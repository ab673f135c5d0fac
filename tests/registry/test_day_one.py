"""Day one (issue 16): schema `default`s on create (API, pages, CSV import), purging a
soft-deleted record (system-admin only, on the audit chain), case-insensitive `icontains` (the
pages' text filters) and the list count's plural forms. SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from open_registry.core.app import Registry
from open_registry.core.audit.chain import AuditQuery, list_entries, verify
from open_registry.core.imports.importer import import_file
from open_registry.core.records import Defaults
from open_registry.core.testing import client_for
from tests.authn import auth_headers
from tests.registry.test_ui import FACILITY_FORM, ui_app

#: a facility without `status` (required, default Active) and `averageRating` (default 0)
FACILITY: dict[str, Any] = {
    "code": "DAY1",
    "name": "École Sainte-Marie",
    "category": "GOVT",
    "type": "Fixed location",
    "address": {
        "addressLine1": "1 Rue Haute",
        "district": "Riverside",
        "state": "Northland",
        "pincode": "411001",
    },
}


def rows(registry: Registry, table: str, **where: Any) -> list[Any]:
    t = registry.db.tables[table]
    stmt = sa.select(t).where(*(t.c[k] == v for k, v in where.items()))
    with registry.db.engine.connect() as conn:
        return list(conn.execute(stmt).mappings())


# -- defaults -------------------------------------------------------------------------------
def test_defaults_fill_absent_properties_at_every_level_and_never_replace_a_value():
    defaults = Defaults(
        {
            "type": "object",
            "properties": {
                "status": {"type": "string", "default": "Active"},
                "tags": {"type": "array", "default": ["new"]},
                "address": {
                    "type": "object",
                    "properties": {"country": {"type": "string", "default": "Examplia"}},
                },
                "doses": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"unit": {"type": "string", "default": "ml"}},
                    },
                },
                "plain": {"type": "string"},
            },
        }
    )
    assert defaults.top == ("status", "tags") and defaults.nested
    sent = {"address": {"state": "N"}, "doses": [{"unit": "mg"}, {}], "status": None}
    filled = defaults.apply(sent)
    assert filled == {
        "status": None,  # sent (even as null): kept
        "tags": ["new"],
        "address": {"state": "N", "country": "Examplia"},
        "doses": [{"unit": "mg"}, {"unit": "ml"}],
    }
    assert sent == {"address": {"state": "N"}, "doses": [{"unit": "mg"}, {}], "status": None}
    filled["tags"].append("changed")  # each record gets its own copy of a default
    assert defaults.apply({})["tags"] == ["new"]
    assert defaults.apply({}) == {"status": "Active", "tags": ["new"]}  # no object made up
    assert not Defaults({"type": "object", "properties": {"a": {"type": "string"}}})
    assert defaults.apply("not an object") == "not an object"


def test_api_create_applies_defaults_and_updates_do_not(registry: Registry):
    with client_for(registry) as c:
        made = c.post("/api/v1/facility", json=FACILITY)
        assert made.status_code == 201, made.text  # status is required: its default fills it
        record = made.json()
        assert record["status"] == "Active" and record["averageRating"] == 0
        given = c.post("/api/v1/facility", json={**FACILITY, "code": "DAY2", "status": "Blocked"})
        assert given.json()["status"] == "Blocked"
        body = {k: v for k, v in record.items() if k in FACILITY or k == "status"}
        replaced = c.put(f"/api/v1/facility/{record['id']}", json=body)
        assert replaced.status_code == 200, replaced.text
        assert "averageRating" not in replaced.json()  # a replace is not a create


def test_page_form_and_csv_import_apply_defaults(registry: Registry, tmp_path: Path):
    with TestClient(ui_app(registry), headers=auth_headers(registry)) as ui:
        form = {k: v for k, v in FACILITY_FORM.items() if k != "status"}
        resp = ui.post("/ui/facility/new", data=form, follow_redirects=False)
        assert resp.status_code == 303, resp.text
    [row] = rows(registry, "facility", code=FACILITY_FORM["code"])
    assert row["status"] == "Active"
    csv = tmp_path / "facilities.csv"
    header = "code,name,category,type,status,address.addressLine1,address.district,"
    header += "address.state,address.pincode"
    csv.write_text(
        f"{header}\n"
        "CSV1,One,GOVT,Fixed location,Blocked,1 Road,Riverside,Northland,411001\n"
        "CSV2,Two,GOVT,Fixed location,,2 Road,Riverside,Northland,411001\n"
    )
    result = import_file(registry.services["facility"], csv, workers=0)
    assert result.ok and result.inserted == 2, result.errors
    assert rows(registry, "facility", code="CSV1")[0]["status"] == "Blocked"
    assert rows(registry, "facility", code="CSV2")[0]["status"] == "Active"
    assert rows(registry, "facility", code="CSV2")[0]["averageRating"] == 0


# -- purge ----------------------------------------------------------------------------------
def test_a_soft_deleted_record_is_purged_by_a_system_admin_only(registry: Registry):
    with client_for(registry) as admin:
        rid = admin.post("/api/v1/facility", json=FACILITY).json()["id"]
        assert admin.delete(f"/api/v1/facility/{rid}").status_code == 204
        assert admin.get(f"/api/v1/facility/{rid}").status_code == 404
        assert rows(registry, "facility", id=rid)[0]["_deleted_at"] is not None
        with client_for(registry, "controller") as controller:  # may delete, not purge
            refused = controller.delete(f"/api/v1/facility/{rid}", params={"purge": "true"})
            assert refused.status_code == 403, refused.text
            assert "system-admin" in refused.json()["detail"]
            assert refused.json()["errors"][0]["pointer"] == "/purge"
        assert admin.delete(f"/api/v1/facility/{rid}?purge=true").status_code == 204
        assert rows(registry, "facility", id=rid) == []
        again = admin.delete(f"/api/v1/facility/{rid}?purge=true")
        assert again.status_code == 404  # gone
    entries, _ = list_entries(registry.db.engine, AuditQuery(record_id=rid, ascending=True))
    assert [e["action"] for e in entries] == ["create", "delete", "purge"]
    assert entries[-1]["actor"] == "user:test-admin" and entries[-1]["version"] == 3
    assert verify(registry.db.engine).ok


# -- case-insensitive contains --------------------------------------------------------------
def test_icontains_ignores_case_beyond_ascii_and_contains_does_not(registry: Registry):
    with client_for(registry) as c:
        assert c.post("/api/v1/facility", json=FACILITY).status_code == 201

        def names(**params: str) -> list[str]:
            resp = c.get("/api/v1/facility", params=params)
            assert resp.status_code == 200, resp.text
            return [r["name"] for r in resp.json()["items"]]

        for word in ("école", "ÉCOLE", "sainte-MARIE", "e s"):
            assert names(**{"name[icontains]": word}) == [FACILITY["name"]], word
        assert names(**{"name[contains]": "école"}) == []  # case-sensitive, as documented
        assert names(**{"name[icontains]": "%"}) == []  # still literal
        bad = c.get("/api/v1/facility", params={"averageRating[icontains]": "1"})
        assert bad.status_code == 400 and "text fields" in bad.text


def test_page_text_filters_ignore_case_and_counts_have_plural_forms(registry: Registry):
    with client_for(registry) as c:
        assert c.post("/api/v1/facility", json=FACILITY).status_code == 201
    with TestClient(ui_app(registry), headers=auth_headers(registry)) as ui:
        page = ui.get("/ui/facility", params={"name[icontains]": "ÉCOLE"})
        assert page.status_code == 200 and FACILITY["name"] in page.text
        assert 'name="name[icontains]"' in page.text  # the filter the page offers
        assert ">1 record<" in page.text
        none = ui.get("/ui/facility", params={"name[icontains]": "nowhere"})
        assert ">0 records<" in none.text
        two = ui.get("/ui/facility", params={"lang": "fr"})
        assert ">1 fiche<" in two.text
        assert ">0 fiche<" in ui.get("/ui/facility?lang=fr&name[icontains]=zz").text
        assert ">1 रिकॉर्ड<" in ui.get("/ui/facility?lang=hi").text


@pytest.mark.parametrize("locale", ["en", "fr", "hi"])
def test_every_catalog_says_which_counts_are_singular(locale: str):
    from open_registry.core.i18n import Catalogs

    rule = Catalogs.load().messages[locale]["plural.one"]
    assert rule.split(",") == (["1"] if locale == "en" else ["0", "1"])
