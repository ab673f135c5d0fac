"""Field-level write rules (`x-registry.writableBy`) through the real API and a real SQLite
database: a facility-admin may edit their facility but not the fields a controller owns (its
status, its programmes' activation and daily rates), on PATCH, PUT and create; controllers,
system-admins and the `system` principal may."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient

from open_registry.core.app import Registry, create_app
from open_registry.core.auth.principal import ROLES, system
from open_registry.core.errors import PROBLEM_JSON
from open_registry.core.testing import auth_headers, client_for
from open_registry.generators import x_registry

MERGE = {"content-type": "application/merge-patch+json"}
CODE = "RVS01"
PROGRAM = "COVID19-2026"
PROGRAMME_SCHEMAS = Path(__file__).parents[2] / "plugins" / "programme" / "schemas"

#: an implementer's entity: facility-admins create and edit it, controllers own two fields
KIOSK = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "status": {"type": "string", "enum": ["Active", "Blocked"], "default": "Active"},
        "level": {"type": "integer"},
    },
    "required": ["name"],
    "additionalProperties": False,
    "x-registry": {
        "access": {
            "create": ["facility-admin", "controller"],
            "read": ["public"],
            "update": ["facility-admin", "controller"],
        },
        "writableBy": {"status": ["controller"], "level": ["controller"]},
    },
}


def _schemas(folder: Path) -> Path:
    folder.mkdir()
    (folder / "kiosk.json").write_text(json.dumps(KIOSK))
    # an implementer lets facility-admins write the `reason` of their facility's activation:
    # the status and the rate stay the controller's (the shipped `writableBy` is kept)
    doc = json.loads((PROGRAMME_SCHEMAS / "facility_programme.json").read_text())
    doc["x-registry"]["access"]["update"].append("facility-admin")
    (folder / "facility_programme.json").write_text(json.dumps(doc))
    return folder


@pytest.fixture
def registry(make_registry: Any, tmp_path: Path) -> Registry:
    reg: Registry = make_registry(schema_dirs=(_schemas(tmp_path / "schemas"),))
    s = reg.services
    s["program"].create(
        {"code": PROGRAM, "name": "COVID-19 2026", "startDate": "2026-01-01", "status": "Active"},
        actor="test",
    )
    s["facility"].create(
        {
            "code": CODE,
            "name": "Riverside",
            "category": "GOVT",
            "type": "Fixed location",
            "status": "Active",
            "address": {
                "addressLine1": "Station Road",
                "district": "Riverside",
                "state": "Northland",
                "pincode": "560001",
            },
            "programs": [{"programId": PROGRAM, "status": "Active", "rate": 100}],
        },
        actor="test",
    )
    return reg


@pytest.fixture
def facility_admin(registry: Registry) -> Iterator[TestClient]:
    with client_for(registry, "facility-admin", facility=CODE) as c:
        yield c


@pytest.fixture
def controller(registry: Registry) -> Iterator[TestClient]:
    with client_for(registry, "controller") as c:
        yield c


def facility(registry: Registry) -> dict[str, Any]:
    s = registry.services["facility"]
    (record,) = s.search(s.parser.from_params([("code", CODE)])).items
    return record


def editable(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "id" and not k.startswith("_")}


def refused(resp: Any, *fields: str) -> None:
    """403 problem+json naming exactly `fields` with the keyword `writableBy`."""
    assert resp.status_code == 403, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM_JSON)
    errors = resp.json()["errors"]
    assert sorted(e["pointer"] for e in errors) == sorted(f"/{f}" for f in fields)
    assert {e["keyword"] for e in errors} == {"writableBy"}


# -- the facility's status ---------------------------------------------------------------------


def test_a_facility_admin_may_not_patch_their_facility_status(registry, facility_admin):
    before = facility(registry)
    resp = facility_admin.patch(
        f"/api/v1/facility/{before['id']}", json={"status": "Blocked"}, headers=MERGE
    )
    refused(resp, "status")
    assert "status" in resp.json()["detail"]
    after = facility(registry)
    assert after["status"] == "Active" and after["_version"] == before["_version"]


def test_a_facility_admin_may_not_put_another_status(registry, facility_admin):
    before = facility(registry)
    body = {**editable(before), "status": "Inactive", "name": "Renamed"}
    refused(facility_admin.put(f"/api/v1/facility/{before['id']}", json=body), "status")
    after = facility(registry)
    assert (after["status"], after["name"]) == ("Active", "Riverside")


def test_a_facility_admin_still_edits_the_other_fields_of_their_facility(registry, facility_admin):
    rid = facility(registry)["id"]
    resp = facility_admin.patch(
        f"/api/v1/facility/{rid}", json={"name": "Riverside Hospital"}, headers=MERGE
    )
    assert resp.status_code == 200, resp.text
    # the same value (a page's form sends every field) is not a change
    same = {"status": "Active", "contact": "+91 98099 89981"}
    resp = facility_admin.patch(f"/api/v1/facility/{rid}", json=same, headers=MERGE)
    assert resp.status_code == 200, resp.text
    # a replace that leaves the controller's fields out keeps them
    body = {
        k: v for k, v in editable(facility(registry)).items() if k not in ("status", "programs")
    }
    resp = facility_admin.put(f"/api/v1/facility/{rid}", json={**body, "name": "Riverside H."})
    assert resp.status_code == 200, resp.text
    after = facility(registry)
    assert after["name"] == "Riverside H." and after["contact"] == "+91 98099 89981"
    assert after["status"] == "Active" and after["programs"][0]["rate"] == 100


def test_a_controller_and_a_system_admin_change_the_status(registry, controller):
    rid = facility(registry)["id"]
    resp = controller.patch(f"/api/v1/facility/{rid}", json={"status": "Blocked"}, headers=MERGE)
    assert resp.status_code == 200, resp.text
    assert facility(registry)["status"] == "Blocked"
    with client_for(registry) as admin:  # system-admin
        resp = admin.patch(f"/api/v1/facility/{rid}", json={"status": "Active"}, headers=MERGE)
    assert resp.status_code == 200, resp.text
    assert facility(registry)["status"] == "Active"


# -- programme fields: the facility's activation and daily rate ---------------------------------


def test_a_facility_admin_may_not_raise_their_daily_rate(registry, facility_admin, controller):
    """`programs[]` (status and rate per programme) counts as the facility's activation until a
    controller writes a `facility_programme` record: it is the controller's."""
    rid = facility(registry)["id"]
    more = {"programs": [{"programId": PROGRAM, "status": "Active", "rate": 100000}]}
    refused(facility_admin.patch(f"/api/v1/facility/{rid}", json=more, headers=MERGE), "programs")
    assert facility(registry)["programs"][0]["rate"] == 100
    both = {**more, "status": "Blocked"}
    refused(
        facility_admin.patch(f"/api/v1/facility/{rid}", json=both, headers=MERGE),
        "programs",
        "status",
    )
    resp = controller.patch(f"/api/v1/facility/{rid}", json=more, headers=MERGE)
    assert resp.status_code == 200, resp.text
    assert facility(registry)["programs"][0]["rate"] == 100000


def test_facility_programme_status_and_rate_stay_the_controllers(
    registry, facility_admin, controller
):
    made = controller.post(
        "/api/v1/facility_programme",
        json={"facility": CODE, "program": PROGRAM, "status": "Active", "rate": 50},
    )
    assert made.status_code == 201, made.text
    url = f"/api/v1/facility_programme/{made.json()['id']}"
    ok = facility_admin.patch(url, json={"reason": "new fridge"}, headers=MERGE)
    assert ok.status_code == 200, ok.text  # the implementer's widened `update`
    refused(facility_admin.patch(url, json={"rate": 5000}, headers=MERGE), "rate")
    refused(facility_admin.patch(url, json={"status": "Suspended"}, headers=MERGE), "status")
    stored = registry.services["facility_programme"].get(made.json()["id"])
    assert (stored["status"], stored["rate"], stored["reason"]) == ("Active", 50, "new fridge")
    resp = controller.patch(url, json={"status": "Suspended", "rate": 0}, headers=MERGE)
    assert resp.status_code == 200, resp.text


# -- create, removal, the system principal ------------------------------------------------------


def test_a_create_without_the_right_may_leave_the_field_out_or_send_its_default(
    registry, facility_admin
):
    for body in ({"name": "a"}, {"name": "b", "status": "Active"}):
        resp = facility_admin.post("/api/v1/kiosk", json=body)
        assert resp.status_code == 201, resp.text
        assert resp.json().get("status", "Active") == "Active"
    refused(facility_admin.post("/api/v1/kiosk", json={"name": "c", "status": "Blocked"}), "status")
    # no default: only absent
    refused(facility_admin.post("/api/v1/kiosk", json={"name": "d", "level": 1}), "level")
    s = registry.services["kiosk"]
    assert sorted(r["name"] for r in s.search(s.parser.from_params([])).items) == ["a", "b"]


def test_a_controller_creates_with_any_value(registry, controller):
    resp = controller.post("/api/v1/kiosk", json={"name": "k", "status": "Blocked", "level": 3})
    assert resp.status_code == 201, resp.text


def test_a_replace_keeps_and_a_removal_is_refused(registry, facility_admin, controller):
    made = controller.post("/api/v1/kiosk", json={"name": "k", "status": "Blocked", "level": 3})
    url = f"/api/v1/kiosk/{made.json()['id']}"
    resp = facility_admin.put(url, json={"name": "k2"})
    assert resp.status_code == 200, resp.text
    assert (resp.json()["status"], resp.json()["level"]) == ("Blocked", 3)
    refused(facility_admin.patch(url, json={"level": None}, headers=MERGE), "level")
    refused(facility_admin.put(url, json={"name": "k3", "status": None}), "status")
    stored = registry.services["kiosk"].get(made.json()["id"])
    assert (stored["name"], stored["status"], stored["level"]) == ("k2", "Blocked", 3)


def test_the_system_principal_passes_every_rule(registry):
    gate = registry.records(system("test"))["kiosk"]
    made = gate.create({"name": "s", "status": "Blocked", "level": 9})
    changed = gate.update(made["id"], {"level": 10}, patch=True)
    assert (changed["status"], changed["level"]) == ("Blocked", 10)


# -- the pages ----------------------------------------------------------------------------------


class EditForm(HTMLParser):
    """The fields of a page's edit form, as a browser would post them unchanged."""

    def __init__(self) -> None:
        super().__init__()
        self.pairs: list[tuple[str, str]] = []
        self._in_form = False
        self._select: list[Any] | None = None  # name, selected value, first value
        self._text: list[str] | None = None  # textarea: name, content

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if (
            tag == "form"
            and a.get("method", "").lower() == "post"
            and "/edit" in a.get("action", "/edit")
        ):
            self._in_form = True
        if not self._in_form or ("name" not in a and tag != "option") or "disabled" in a:
            return
        if tag == "input" and a.get("type", "text") not in ("submit", "button", "file"):
            if a.get("type") not in ("checkbox", "radio") or "checked" in a:
                self.pairs.append((a["name"], a.get("value", "")))
        elif tag == "select":
            self._select = [a["name"], None, None]
        elif tag == "option" and self._select is not None:
            self._select[2] = a.get("value", "") if self._select[2] is None else self._select[2]
            if "selected" in a:
                self._select[1] = a.get("value", "")
        elif tag == "textarea":
            self._text = [a["name"], ""]

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text[1] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "select" and self._select is not None:
            name, chosen, first = self._select
            self.pairs.append((name, chosen if chosen is not None else first or ""))
            self._select = None
        elif tag == "textarea" and self._text is not None:
            self.pairs.append((self._text[0], self._text[1]))
            self._text = None
        elif tag == "form":
            self._in_form = False


def post_edit(registry: Registry, role: str, changes: dict[str, str], **kw: str) -> Any:
    """Open the facility's edit page as `role`, change `changes` in the form and save it."""
    rid = facility(registry)["id"]
    headers = {**auth_headers(registry, role, **kw), "Origin": "http://testserver"}
    with TestClient(create_app(registry=registry)) as web:
        page = web.get(f"/ui/facility/{rid}/edit", headers=headers)
        assert page.status_code == 200, page.text
        form = EditForm()
        form.feed(page.text)
        pairs = [(k, changes.get(k, v)) for k, v in form.pairs if k != "_save"] + [("_save", "1")]
        return web.post(
            f"/ui/facility/{rid}/edit",
            content=urlencode(pairs),
            headers={**headers, "content-type": "application/x-www-form-urlencoded"},
            follow_redirects=False,
        )


def test_the_edit_page_keeps_the_controllers_fields_to_the_controller(registry):
    before = facility(registry)
    saved = post_edit(registry, "facility-admin", {"name": "Renamed"}, facility=CODE)
    assert saved.status_code == 303, saved.text  # the form sends status and programs unchanged
    assert facility(registry)["name"] == "Renamed"
    refused_page = post_edit(registry, "facility-admin", {"status": "Blocked"}, facility=CODE)
    assert refused_page.status_code == 403
    assert re.search(r"only controller, system-admin may change it", refused_page.text)
    after = facility(registry)
    assert after["status"] == "Active" and after["programs"] == before["programs"]
    assert post_edit(registry, "controller", {"status": "Blocked"}).status_code == 303
    assert facility(registry)["status"] == "Blocked"


# -- the roles a writableBy may name are the registry's ------------------------------------------


def test_the_roles_writable_by_takes_are_the_registrys_roles():
    defs = x_registry.load_schema()["$defs"]
    assert tuple(defs["knownRole"]["enum"]) == ROLES


def test_a_registry_with_a_writable_by_naming_an_unknown_field_or_role_does_not_start(
    make_registry: Any, tmp_path: Path
):
    folder = tmp_path / "bad"
    folder.mkdir()
    doc = json.loads(json.dumps(KIOSK))
    doc["x-registry"]["writableBy"] = {"colour": ["controller"], "status": ["boss"]}
    (folder / "kiosk.json").write_text(json.dumps(doc))
    with pytest.raises(Exception) as caught:
        make_registry(schema_dirs=(folder,), default_schemas=False)
    message = str(caught.value)
    assert "/x-registry/writableBy/colour" in message and "'colour' does not exist" in message
    assert "/x-registry/writableBy/status/0" in message


def test_an_import_by_a_role_that_may_not_set_a_protected_field_is_refused(
    registry, facility_admin, controller
):
    """x-registry.writableBy holds for imports too: a file could set the fields on any row."""
    csv = {"content": b"name,status\nx,Blocked\n", "headers": {"content-type": "text/csv"}}
    resp = facility_admin.post("/api/v1/kiosk/imports", **csv)
    assert resp.status_code == 403, resp.text
    assert {e["pointer"] for e in resp.json()["errors"]} == {"/status", "/level"}
    assert {e["keyword"] for e in resp.json()["errors"]} == {"writableBy"}
    assert controller.post("/api/v1/kiosk/imports", **csv).status_code == 202
