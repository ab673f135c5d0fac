"""The web UI (`registry.ui.pages`) over HTTP, on SQLite and PostgreSQL, and snapshots of its forms.

The form HTML of every shipped entity is snapshotted in `tests/registry/snapshots/forms/`. A change
to `generators/forms.py`, the templates or a shipped schema that alters a form fails
`test_form_html_matches_snapshot`; review the diff, then rewrite the snapshots with

    UPDATE_SNAPSHOTS=1 .venv/bin/pytest tests/registry/test_ui.py -k snapshot
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from open_registry.core import create_app
from open_registry.core.app import Registry
from open_registry.core.i18n import Catalogs, parse_accept_language
from open_registry.core.schemas.loading import default_schema_dir, load_schemas
from open_registry.core.ui.pages import add_ui_routes
from open_registry.core.ui.render import FormView, ReferenceChoices, build_environment, render_form
from open_registry.generators.forms import form_fields
from tests.authn import admin_client

SNAPSHOTS = Path(__file__).parent / "snapshots" / "forms"
SHIPPED = ["facility", "program", "recipient", "vaccinator", "vaccine"]

FACILITY_FORM = {
    "code": "UI001",
    "name": "Hillside Clinic",
    "category": "GOVT",
    "type": "Fixed location",
    "status": "Active",
    "address.addressLine1": "4 Hill Road",
    "address.district": "Hillside",
    "address.state": "Northland",
    "address.pincode": "56001",
    "contact": "+91 98000 00001",
    "_save": "1",
}


def ui_app(registry: Registry) -> Any:
    app = create_app(registry=registry)
    if not hasattr(app.state, "ui"):  # create_app may mount it already
        add_ui_routes(app, registry)
    return app


@pytest.fixture
def ui(registry: Registry) -> Iterator[TestClient]:
    with admin_client(ui_app(registry)) as c:
        yield c


@pytest.fixture
def demo_ui(registry: Registry) -> Iterator[TestClient]:
    from open_registry.core.demo import load_demo_data

    load_demo_data(registry.services)
    with admin_client(ui_app(registry)) as c:
        yield c


def errors_next_to(html: str, input_id: str) -> list[str]:
    return re.findall(rf'<p class="error" id="{input_id}-err\d+">([^<]*)</p>', html)


def input_value(html: str, input_id: str) -> str | None:
    m = re.search(rf'<input [^>]*id="{input_id}"[^>]*value="([^"]*)"', html)
    return m.group(1) if m else None


def create_facility(client: TestClient, **changes: str) -> str:
    resp = client.post(
        "/ui/facility/new", data={**FACILITY_FORM, **changes}, follow_redirects=False
    )
    assert resp.status_code == 303, resp.text
    return resp.headers["location"].split("?")[0].rsplit("/", 1)[1]


# -- snapshots -----------------------------------------------------------------------------
def form_html(name: str) -> str:
    schemas = load_schemas([default_schema_dir()])
    fields = form_fields(schemas[name])
    refs = {f.path: ReferenceChoices(()) for top in fields for f in top.walk() if f.reference}
    t = Catalogs.load().translator("en")
    html = render_form(build_environment(), FormView(fields, references=refs), t, action="/x")
    return "\n".join(line.rstrip() for line in html.splitlines() if line.strip()) + "\n"


@pytest.mark.parametrize("name", SHIPPED)
def test_form_html_matches_snapshot(name: str):
    path = SNAPSHOTS / f"{name}.html"
    html = form_html(name)
    if os.environ.get("UPDATE_SNAPSHOTS") or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(html)
    assert html == path.read_text(), f"form of {name} changed; see the module docstring"


def test_every_input_has_a_label_tied_to_it():
    for name in SHIPPED:
        html = form_html(name)
        ids = set(re.findall(r'<(?:input|select|textarea) [^>]*id="([^"]+)"', html))
        labelled = set(re.findall(r'<label for="([^"]+)"', html))
        assert ids - labelled == set(), name


# -- pages ---------------------------------------------------------------------------------
def test_home_lists_every_entity_with_lang_attribute(ui: TestClient):
    resp = ui.get("/ui/")
    assert resp.status_code == 200
    assert '<html lang="en">' in resp.text
    for name in SHIPPED:
        assert f'href="/ui/{name}"' in resp.text
    assert ui.get("/ui/static/ui.css").status_code == 200
    assert ui.get("/ui/static/ui.js").status_code == 200


def test_create_through_the_form_then_read_it_through_the_api(ui: TestClient):
    record_id = create_facility(ui)
    page = ui.get(f"/ui/facility/{record_id}", params={"notice": "created"})
    assert page.status_code == 200 and "Hillside Clinic" in page.text and "Created." in page.text
    record = ui.get(f"/api/v1/facility/{record_id}").json()
    assert record["address"] == {
        "addressLine1": "4 Hill Road",
        "district": "Hillside",
        "state": "Northland",
        "pincode": "56001",
    }
    assert "geoLocation" not in record and "email" not in record  # empty means absent


def test_validation_error_is_shown_next_to_its_field_with_the_input_kept(ui: TestClient):
    resp = ui.post(
        "/ui/facility/new",
        data={
            **FACILITY_FORM,
            "contact": "call me maybe",
            "address.district": "",
            "admins.0.name": "Ravi",
            "admins.0.mobile": "12",
        },
    )
    assert resp.status_code == 422
    html = resp.text
    # written for people (registry/ui/messages.py); the API keeps its own message
    assert errors_next_to(html, "f-contact") == [
        "Enter a phone number: digits, spaces, + and - only"
    ]
    assert errors_next_to(html, "f-address-district")
    assert errors_next_to(html, "f-admins-0-mobile")
    assert input_value(html, "f-contact") == "call me maybe"
    assert input_value(html, "f-admins-0-name") == "Ravi"
    assert input_value(html, "f-name") == "Hillside Clinic"
    assert 'aria-invalid="true"' in html and 'href="#f-contact"' in html
    assert ui.get("/api/v1/facility", params={"code": "UI001"}).json()["items"] == []


def test_duplicate_unique_value_is_shown_on_the_field(ui: TestClient):
    create_facility(ui)
    resp = ui.post("/ui/facility/new", data={**FACILITY_FORM, "name": "Other"})
    assert resp.status_code == 409
    assert errors_next_to(resp.text, "f-code")


def test_edit_changes_and_removes_fields(ui: TestClient):
    record_id = create_facility(ui, email="a@b.example")
    form = ui.get(f"/ui/facility/{record_id}/edit").text
    assert input_value(form, "f-email") == "a@b.example"
    assert '<input type="hidden" name="_version" value="1">' in form
    data = {**FACILITY_FORM, "name": "Hillside Health Centre", "email": "", "_version": "1"}
    resp = ui.post(f"/ui/facility/{record_id}/edit", data=data, follow_redirects=False)
    assert resp.status_code == 303
    record = ui.get(f"/api/v1/facility/{record_id}").json()
    assert record["name"] == "Hillside Health Centre" and "email" not in record
    assert record["_version"] == 2


def test_stale_edit_shows_a_conflict_and_saves_nothing(ui: TestClient):
    record_id = create_facility(ui)
    ui.patch(
        f"/api/v1/facility/{record_id}",
        json={"name": "Changed elsewhere"},
        headers={"content-type": "application/merge-patch+json"},
    )
    data = {**FACILITY_FORM, "name": "My change", "_version": "1"}
    resp = ui.post(f"/ui/facility/{record_id}/edit", data=data)
    assert resp.status_code == 409
    assert "Someone else changed this record" in resp.text
    assert input_value(resp.text, "f-name") == "My change"  # the user's input is kept
    assert '<input type="hidden" name="_version" value="2">' in resp.text
    assert ui.get(f"/api/v1/facility/{record_id}").json()["name"] == "Changed elsewhere"


def test_delete_asks_for_confirmation_then_deletes(ui: TestClient):
    record_id = create_facility(ui)
    confirm = ui.get(f"/ui/facility/{record_id}/delete")
    assert confirm.status_code == 200 and 'method="post"' in confirm.text
    assert ui.get(f"/api/v1/facility/{record_id}").status_code == 200  # GET deletes nothing
    resp = ui.post(
        f"/ui/facility/{record_id}/delete", data={"_version": "1"}, follow_redirects=False
    )
    assert resp.status_code == 303 and resp.headers["location"] == "/ui/facility?notice=deleted"
    assert ui.get(f"/api/v1/facility/{record_id}").status_code == 404
    assert ui.get(f"/ui/facility/{record_id}").status_code == 404


def test_stale_delete_is_refused(ui: TestClient):
    record_id = create_facility(ui)
    resp = ui.post(f"/ui/facility/{record_id}/delete", data={"_version": "7"})
    assert resp.status_code == 409
    assert ui.get(f"/api/v1/facility/{record_id}").status_code == 200


def test_add_and_remove_rows_work_without_javascript(ui: TestClient):
    data = {**FACILITY_FORM, "admins.0.name": "Ravi", "_add": "admins"}
    data.pop("_save")
    resp = ui.post("/ui/facility/new", data=data)
    assert resp.status_code == 200
    assert 'id="f-admins-1-name"' in resp.text and input_value(resp.text, "f-admins-0-name")
    data = {**FACILITY_FORM, "admins.0.name": "Ravi", "admins.1.name": "Uma", "_remove": "admins.0"}
    data.pop("_save")
    resp = ui.post("/ui/facility/new", data=data)
    assert 'id="f-admins-0-name"' not in resp.text
    assert input_value(resp.text, "f-admins-1-name") == "Uma"
    assert ui.get("/api/v1/facility").json()["items"] == []  # nothing saved


def test_list_filters_sort_and_pages(demo_ui: TestClient):
    all_ = demo_ui.get("/api/v1/facility", params={"count": "true"}).json()
    page = demo_ui.get("/ui/facility", params={"status": "Active", "sort": "-name", "limit": 2})
    assert page.status_code == 200
    active = demo_ui.get("/api/v1/facility", params={"status": "Active", "sort": "-name"}).json()
    names = re.findall(r'<td><a href="/ui/facility/[^"]+">([^<]+)</a></td>', page.text)
    assert names == [r["name"] for r in active["items"][:2]]
    assert 'rel="next"' in page.text and all_["total"] > 2
    nxt = re.search(r'<a href="([^"]+)" rel="next">', page.text).group(1).replace("&amp;", "&")
    second = demo_ui.get(nxt)
    names2 = re.findall(r'<td><a href="/ui/facility/[^"]+">([^<]+)</a></td>', second.text)
    assert names2 == [r["name"] for r in active["items"][2:4]]
    assert "First page" in second.text
    word = active["items"][0]["name"].split()[0]
    found = demo_ui.get("/ui/facility", params={"name[contains]": word, "status": ""})
    assert active["items"][0]["name"] in found.text


def test_bad_filter_shows_a_message_not_a_crash(ui: TestClient):
    resp = ui.get("/ui/facility", params={"averageRating[gt]": "lots"})
    assert resp.status_code == 400 and "not a valid" in resp.text


def test_reference_field_offers_the_referenced_records(demo_ui: TestClient):
    html = demo_ui.get("/ui/vaccinator/new").text
    facility = demo_ui.get("/api/v1/facility", params={"limit": 1}).json()["items"][0]
    assert f'<option value="{facility["code"]}">' in html


def test_unknown_entity_and_record_are_html_404(ui: TestClient):
    for path in ("/ui/nothing", "/ui/facility/00000000-0000-0000-0000-000000000000"):
        resp = ui.get(path)
        assert resp.status_code == 404 and resp.headers["content-type"].startswith("text/html")


def test_cross_site_post_is_refused(ui: TestClient):
    resp = ui.post(
        "/ui/facility/new", data=FACILITY_FORM, headers={"origin": "https://evil.example"}
    )
    assert resp.status_code == 403


def test_form_must_be_urlencoded(ui: TestClient):
    resp = ui.post("/ui/facility/new", json={"code": "x"})
    assert resp.status_code == 400


# -- language --------------------------------------------------------------------------------
def test_language_from_query_cookie_and_accept_language(ui: TestClient):
    assert '<html lang="fr">' in ui.get("/ui/", headers={"accept-language": "fr-CA,en;q=0.5"}).text
    assert '<html lang="hi">' in ui.get("/ui/", params={"lang": "hi"}).text
    resp = ui.get("/ui/lang", params={"lang": "fr", "next": "/ui/facility"}, follow_redirects=False)
    assert resp.status_code == 303 and resp.headers["location"] == "/ui/facility"
    ui.cookies.set("registry_lang", "fr")
    page = ui.get("/ui/facility")
    assert '<html lang="fr">' in page.text and "Appliquer" in page.text


def test_language_switch_does_not_redirect_off_site(ui: TestClient):
    resp = ui.get(
        "/ui/lang", params={"lang": "fr", "next": "https://evil.example/"}, follow_redirects=False
    )
    assert resp.headers["location"] == "/ui/"


def test_catalogs_have_the_same_keys():
    catalogs = Catalogs.load()
    assert set(catalogs.locales) >= {"en", "hi", "fr"}
    keys = set(catalogs.messages["en"])
    for locale, messages in catalogs.messages.items():
        assert set(messages) == keys, locale


def test_accept_language_order():
    assert parse_accept_language("fr;q=0.4, hi-IN, en;q=0.8, de;q=0") == ["hi-IN", "en", "fr"]
