"""The pages read and write records through the visitor's `Gate` only, so they refuse what the
API refuses: filters on private fields (403 naming the field), reference labels the visitor may
not read (the value alone), and on the users page a facility-admin linking a user to a recipient
record (403 naming the field). Real ASGI app, real SQLite, the demo data; each case is tried as
anonymous, a role without the right, staff of another facility and a caller who may."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from open_registry.core import create_app
from open_registry.core.app import Registry
from open_registry.core.auth.principal import Principal, system
from open_registry.core.demo import load_demo_data
from open_registry.core.errors import Forbidden
from open_registry.core.testing import auth_headers

PASSWORD = "correct horse battery"
#: demo data: a facility, the vaccinator VAC-0008 (of another facility, NL-HLC-02)
FACILITY = "EM-PTV-01"
OTHER_FACILITY = "NL-HLC-02"
VACCINATOR = "VAC-0008"
#: what the browser sends with a form post from this site's pages
SAME_SITE = {"Origin": "http://testserver"}


@dataclass
class World:
    registry: Registry
    web: TestClient
    recipient: dict[str, Any]
    vaccinator: dict[str, Any]
    facility: dict[str, Any]
    vaccination: dict[str, Any]

    def get(self, path: str, *roles: str, **kw: Any) -> Any:
        """GET `path` as a caller with `roles` (anonymous with none)."""
        params = kw.pop("params", None)
        headers = auth_headers(self.registry, *roles, **kw) if roles else {}
        return self.web.get(path, params=params, headers=headers, follow_redirects=False)


def first(registry: Registry, entity: str, **where: str) -> dict[str, Any]:
    gate = registry.records(system("test"))[entity]
    params = [*where.items(), ("limit", "1")]
    return gate.search(gate.service.parser.from_params(params)).items[0]


@pytest.fixture
def world(make_registry: Callable[..., Registry]) -> Any:
    reg = make_registry()
    load_demo_data(reg.services)
    recipient = first(reg, "recipient")
    vaccinator = first(reg, "vaccinator", code=VACCINATOR)
    assert OTHER_FACILITY in vaccinator["facilityIds"] and FACILITY not in vaccinator["facilityIds"]
    vaccination = reg.records(system("test"))["vaccination"].create(
        {
            "recipient": recipient["id"],
            "program": first(reg, "program")["code"],
            "vaccine": first(reg, "vaccine")["code"],
            "vaccinator": VACCINATOR,
            "facility": FACILITY,
            "dose": 1,
            "totalDoses": 2,
            "batch": "B-GATE-1",
            "date": "2026-03-01T10:30:00+05:30",
        }
    )
    with TestClient(create_app(registry=reg)) as web:
        yield World(
            reg, web, recipient, vaccinator, first(reg, "facility", code=FACILITY), vaccination
        )


def to_sign_in(resp: Any) -> bool:
    return resp.status_code == 303 and resp.headers["location"].startswith("/ui/login?next=")


# -- 2. list pages refuse private-field filters as the API does -----------------------------
def test_list_page_refuses_a_private_field_filter_naming_the_field(world: World):
    name, identity = world.recipient["name"], first(world.registry, "recipient")["identity"]
    staff = ("facility-staff",)
    for params in ({"identity": identity}, {"identity[in]": identity}):
        page = world.get("/ui/recipient", *staff, facility=FACILITY, params=params)
        assert page.status_code == 403, params
        assert page.headers["content-type"].startswith("text/html")
        assert "identity" in page.text and name not in page.text  # no "whose number is this?"
        api = world.get("/api/v1/recipient", *staff, facility=FACILITY, params=params)
        assert api.status_code == 403 and api.json()["errors"][0]["pointer"].startswith(
            "/filters/identity/"
        )
    # staff of another facility alike (recipients are not tied to a facility)
    other = world.get(
        "/ui/recipient", *staff, facility=OTHER_FACILITY, params={"identity": identity}
    )
    assert other.status_code == 403 and name not in other.text
    # a role that reads no recipient ("owner" of none) learns nothing either
    monitoring = world.get("/ui/recipient", "monitoring", params={"identity": identity})
    assert name not in monitoring.text
    assert world.get("/ui/recipient", "monitoring", params={"name": name}).text.count(name) == 0
    assert to_sign_in(world.get("/ui/recipient", params={"identity": identity}))
    # those who may see the field may search by it
    admin = world.get("/ui/recipient", "system-admin", params={"identity": identity})
    assert admin.status_code == 200 and name in admin.text
    own = world.get(
        "/ui/recipient", "recipient", recipient=world.recipient["id"], params={"identity": identity}
    )
    assert own.status_code == 200 and name in own.text
    # the ordinary filters still work for staff
    by_name = world.get("/ui/recipient", *staff, facility=FACILITY, params={"name": name})
    assert by_name.status_code == 200 and name in by_name.text


# -- 3. a reference is labelled only with what the viewer may read ---------------------------
def test_detail_page_labels_references_only_with_what_the_viewer_may_read(world: World):
    vac, person, vaccinator = world.vaccination, world.recipient, world.vaccinator
    path = f"/ui/vaccination/{vac['id']}"
    facility_label = f"{world.facility['name']} ({FACILITY})"

    # monitoring reads vaccinations, not recipients: the recipient's id alone, no link
    page = world.get(path, "monitoring")
    assert page.status_code == 200
    assert person["id"] in page.text and person["name"] not in page.text
    assert f"/ui/recipient/{person['id']}" not in page.text
    assert facility_label in page.text  # facilities are public

    # staff of the facility read recipients, but not another facility's vaccinators
    page = world.get(path, "facility-staff", facility=FACILITY)
    assert page.status_code == 200 and person["name"] in page.text
    assert VACCINATOR in page.text and vaccinator["name"] not in page.text
    assert f"/ui/vaccinator/{vaccinator['id']}" not in page.text

    # the person themselves: their own name, not the vaccinator's
    page = world.get(path, "recipient", recipient=person["id"])
    assert page.status_code == 200 and person["name"] in page.text
    assert vaccinator["name"] not in page.text

    # staff of another facility do not see the vaccination at all
    page = world.get(path, "facility-staff", facility=OTHER_FACILITY)
    assert page.status_code == 404 and person["name"] not in page.text
    assert to_sign_in(world.get(path))

    # a system-admin reads everything: every reference labelled and linked
    page = world.get(path, "system-admin")
    assert page.status_code == 200
    assert f'<a href="/ui/recipient/{person["id"]}">{person["name"]} ({person["id"]})</a>' in (
        page.text
    )
    assert f"{vaccinator['name']} ({VACCINATOR})" in page.text


def test_forms_offer_only_references_the_visitor_may_read(world: World):
    page = world.get("/ui/vaccination/new", "facility-staff", facility=FACILITY)
    assert page.status_code == 200
    assert world.vaccinator["name"] not in page.text  # another facility's vaccinator
    assert to_sign_in(world.get("/ui/vaccination/new"))
    assert world.get("/ui/vaccination/new", "monitoring").status_code == 404


# -- 1. the pages' writes are the gate's -----------------------------------------------------
def test_pages_write_through_the_gate_with_its_scope_and_refusals(world: World):
    vac = world.vaccination
    edit = f"/ui/vaccination/{vac['id']}/edit"
    delete = f"/ui/vaccination/{vac['id']}/delete"
    for path in (edit, delete):
        assert to_sign_in(world.get(path))
        assert world.get(path, "monitoring").status_code == 404  # may read, not change
        assert world.get(path, "facility-admin", facility=OTHER_FACILITY).status_code == 404
    assert world.get(edit, "facility-admin", facility=FACILITY).status_code == 200
    # a facility-admin may not move a vaccination to another facility (the gate's write rule)
    headers = {**auth_headers(world.registry, "facility-admin", facility=FACILITY), **SAME_SITE}
    form = {
        "recipient": vac["recipient"],
        "program": vac["program"],
        "vaccine": vac["vaccine"],
        "dose": "1",
        "totalDoses": "2",
        "batch": "B-GATE-2",
        "date": "2026-03-01T10:30",
        "vaccinator": VACCINATOR,
        "facility": OTHER_FACILITY,
        "_version": str(vac["_version"]),
        "_save": "1",
    }
    moved = world.web.post(edit, data=form, headers=headers, follow_redirects=False)
    assert moved.status_code == 403
    stored = world.registry.records(system("test"))["vaccination"].get(vac["id"])
    assert stored["facility"] == FACILITY and stored["batch"] == "B-GATE-1"
    # staff of another facility cannot delete it either
    other = {**auth_headers(world.registry, "facility-admin", facility=OTHER_FACILITY), **SAME_SITE}
    refused = world.web.post(
        delete, data={"_version": str(vac["_version"])}, headers=other, follow_redirects=False
    )
    assert refused.status_code == 404
    assert world.registry.records(system("test"))["vaccination"].find(vac["id"]) is not None


# -- 4. who may create users and link them to records ----------------------------------------
def add_user(world: World, headers: dict[str, str], **form: str) -> Any:
    data = {"password": PASSWORD, "roles": "facility-staff", **form}
    return world.web.post(
        "/ui/users", data=data, headers={**headers, **SAME_SITE}, follow_redirects=False
    )


def test_a_facility_admin_may_not_link_a_user_to_a_recipient_record(world: World):
    users = world.registry.auth.users
    boss = auth_headers(world.registry, "facility-admin", facility=FACILITY, subject="boss")
    linked = add_user(world, boss, username="mallory", recipient=world.recipient["id"])
    assert linked.status_code == 403 and "recipient" in linked.text
    assert users.get("mallory") is None
    # nor with the recipient role (not theirs to give either)
    as_recipient = add_user(
        world, boss, username="mallory2", roles="recipient", recipient=world.recipient["id"]
    )
    assert 400 <= as_recipient.status_code < 500 and users.get("mallory2") is None
    # the same facility-admin adds their own staff, unlinked
    ok = add_user(world, boss, username="ravi")
    assert ok.status_code == 303
    row = users.get("ravi")
    assert row["facility"] == FACILITY and row["recipient"] is None
    assert list(row["roles"]) == ["facility-staff"]
    # and no facility-admin (only staff)
    up = add_user(world, boss, username="boss2", roles="facility-admin")
    assert up.status_code == 400 and users.get("boss2") is None


def test_a_facility_admin_signed_in_by_the_form_is_refused_alike(world: World):
    users = world.registry.auth.users
    users.add("boss", roles=["facility-admin"], facility=FACILITY, password=PASSWORD)
    signed = world.web.post(
        "/ui/login", data={"username": "boss", "password": PASSWORD}, follow_redirects=False
    )
    assert signed.status_code == 303
    page = world.web.get("/ui/users")
    assert page.status_code == 200 and 'name="recipient"' not in page.text
    linked = world.web.post(
        "/ui/users",
        data={
            "username": "mallory",
            "roles": "facility-staff",
            "password": PASSWORD,
            "recipient": world.recipient["id"],
        },
        headers=SAME_SITE,
        follow_redirects=False,
    )
    assert linked.status_code == 403 and "recipient" in linked.text
    assert users.get("mallory") is None
    world.web.post("/ui/logout", headers=SAME_SITE)


def test_only_a_system_admin_links_users_to_records(world: World):
    users = world.registry.auth.users
    admin = auth_headers(world.registry)
    ok = add_user(
        world, admin, username="meena", roles="recipient", recipient=world.recipient["id"]
    )
    assert ok.status_code == 303 and users.get("meena")["recipient"] == world.recipient["id"]
    # roles without the right, and anonymous visitors, add nobody
    for roles, kw in (
        (("facility-staff",), {"facility": FACILITY}),
        (("monitoring",), {}),
        (("recipient",), {"recipient": world.recipient["id"]}),
    ):
        headers = auth_headers(world.registry, *roles, **kw)
        assert world.web.get("/ui/users", headers=headers).status_code == 404
        refused = add_user(world, headers, username="eve", recipient=world.recipient["id"])
        assert refused.status_code == 404 and users.get("eve") is None
    assert to_sign_in(world.web.get("/ui/users", follow_redirects=False))
    anonymous = world.web.post(
        "/ui/users",
        data={"username": "eve", "roles": "system-admin", "password": PASSWORD},
        follow_redirects=False,
    )
    assert to_sign_in(anonymous) and users.get("eve") is None


def test_a_facility_admin_sees_and_adds_only_their_own_facility_s_users(world: World):
    users = world.registry.auth.users
    users.add("ravi", roles=["facility-staff"], facility=FACILITY, password=PASSWORD)
    other = auth_headers(world.registry, "facility-admin", facility=OTHER_FACILITY, subject="o")
    page = world.web.get("/ui/users", headers=other)
    assert page.status_code == 200 and "ravi" not in page.text
    made = add_user(world, other, username="sam", facility=FACILITY)
    assert made.status_code == 303 and users.get("sam")["facility"] == OTHER_FACILITY


def test_the_users_table_checks_who_asks():
    """`Users.add(by=...)` applies the same rules to any caller (pages, plugins' routes)."""
    from open_registry.core.auth.users import check_grant, grantable_roles

    boss = Principal("user", "boss", frozenset({"facility-admin"}), facility=FACILITY)
    with pytest.raises(Forbidden) as refused:
        check_grant(boss, ["facility-staff"], None, "some-recipient-id")
    assert [e["pointer"] for e in refused.value.errors or []] == ["/recipient"]
    with pytest.raises(Forbidden) as up:
        check_grant(boss, ["system-admin"], None, None)
    assert [e["pointer"] for e in up.value.errors or []] == ["/roles"]
    assert check_grant(boss, ["facility-staff"], OTHER_FACILITY, None) == FACILITY
    staff = Principal("user", "s", frozenset({"facility-staff"}), facility=FACILITY)
    assert grantable_roles(staff) == ()
    with pytest.raises(Forbidden):
        check_grant(staff, ["facility-staff"], FACILITY, None)
    admin = Principal("user", "a", frozenset({"system-admin"}))
    assert check_grant(admin, ["recipient"], None, "rid") is None
    assert check_grant(system("cli"), ["facility-staff"], FACILITY, None) == FACILITY


def test_users_add_by_a_facility_admin_refuses_a_recipient_link(world: World):
    boss = Principal("user", "boss", frozenset({"facility-admin"}), facility=FACILITY)
    users = world.registry.auth.users
    with pytest.raises(Forbidden):
        users.add(
            "mallory",
            roles=["facility-staff"],
            password=PASSWORD,
            recipient=world.recipient["id"],
            by=boss,
        )
    assert users.get("mallory") is None
    made = users.add("ravi", roles=["facility-staff"], password=PASSWORD, by=boss)
    assert made["facility"] == FACILITY and made["recipient"] is None
