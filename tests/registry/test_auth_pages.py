"""The sign-in and users pages through real HTTP (the browser half is in test_ui_browser)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from open_registry.core import create_app
from tests.authn import auth_headers

PASSWORD = "correct horse battery"
FORM = {"content-type": "application/x-www-form-urlencoded"}


@pytest.fixture
def web(registry: Any) -> Iterator[TestClient]:
    # a browser: its posts carry the page's origin
    with TestClient(create_app(registry=registry), headers={"origin": "http://testserver"}) as c:
        yield c


def test_the_login_form_sets_the_session_and_goes_back(registry, web):
    registry.auth.users.add("asha", roles=["system-admin"], password=PASSWORD)
    first = web.get("/ui/recipient", follow_redirects=False)
    assert (
        first.status_code == 303 and first.headers["location"] == "/ui/login?next=%2Fui%2Frecipient"
    )
    bad = web.post(
        "/ui/login", data={"username": "asha", "password": "nope", "next": "/ui/recipient"}
    )
    assert bad.status_code == 401 and "Sign-in failed" in bad.text
    resp = web.post(
        "/ui/login",
        data={"username": "asha", "password": PASSWORD, "next": "https://evil.example/"},
        follow_redirects=False,
    )
    assert resp.status_code == 303 and resp.headers["location"] == "/ui/"  # never off-site
    assert "Signed in as asha" in web.get("/ui/").text
    assert web.get("/ui/recipient").status_code == 200
    web.post("/ui/logout")
    assert web.get("/ui/recipient", follow_redirects=False).status_code == 303


def test_admins_add_users_on_the_users_page(registry, web):
    admin = auth_headers(registry)
    page = web.get("/ui/users", headers=admin)
    assert page.status_code == 200 and 'name="roles" value="controller"' in page.text
    resp = web.post(
        "/ui/users",
        data={
            "username": "ravi",
            "roles": "facility-staff",
            "facility": "F1",
            "password": PASSWORD,
        },
        headers=admin,
        follow_redirects=False,
    )
    assert resp.status_code == 303
    assert registry.auth.users.get("ravi")["facility"] == "F1"
    missing = web.post(
        "/ui/users",
        data={"username": "mira", "roles": "facility-staff", "password": PASSWORD},
        headers=admin,
    )
    assert missing.status_code == 422 and "facility" in missing.text


def test_a_facility_admin_adds_only_staff_of_their_facility(registry, web):
    fa = auth_headers(registry, "facility-admin", facility="F1", subject="boss")
    page = web.get("/ui/users", headers=fa)
    assert page.status_code == 200 and 'value="system-admin"' not in page.text
    up = web.post(
        "/ui/users",
        data={"username": "eve", "roles": "system-admin", "password": PASSWORD},
        headers=fa,
    )
    assert up.status_code == 400 and registry.auth.users.get("eve") is None
    ok = web.post(
        "/ui/users",
        data={"username": "sam", "roles": "facility-staff", "facility": "F9", "password": PASSWORD},
        headers=fa,
        follow_redirects=False,
    )
    assert ok.status_code == 303
    assert registry.auth.users.get("sam")["facility"] == "F1"  # theirs, whatever was sent
    staff = auth_headers(registry, "facility-staff", facility="F1")
    assert web.get("/ui/users", headers=staff).status_code == 404
