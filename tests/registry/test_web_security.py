"""Cross-site request refusal and the security headers (`registry.web_security`), through the real
ASGI app on a real SQLite registry. The browser half (the pages under the CSP in Chromium) is in
test_web_security_browser."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter, Request
from fastapi.testclient import TestClient

from open_registry.core import create_app
from open_registry.core.app import Registry
from open_registry.core.hookspecs import hookimpl
from open_registry.core.testing import auth_headers
from tests.registry.test_ui import FACILITY_FORM

PASSWORD = "correct horse battery"
SITE = "https://registry.example"
VACCINE = {"code": "V1", "name": "Alpha", "manufacturer": "M", "status": "Active"}
TEMPLATES = Path(__file__).parents[2] / "registry" / "templates"

EXPECTED_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


class PokePlugin:
    """A plugin with a write route of its own outside /api (as the VC-API's /credentials/...)."""

    @hookimpl
    def register_routes(self, registry: Any) -> list[APIRouter]:
        router = APIRouter()

        @router.post("/plugin-poke")
        async def poke(request: Request) -> dict[str, Any]:
            return {"poked": True}

        return [router]


@pytest.fixture
def reg(make_registry: Callable[..., Registry]) -> Registry:
    r = make_registry(load_entrypoints=False, register=[PokePlugin()])
    r.auth.users.add("asha", roles=["system-admin"], password=PASSWORD)
    return r


def signed_in(reg: Registry, base_url: str = SITE) -> TestClient:
    """A client that holds the pages' session cookie of `asha` (no Authorization header)."""
    client = TestClient(create_app(registry=reg), base_url=base_url)
    resp = client.post("/api/v1/auth/login", json={"username": "asha", "password": PASSWORD})
    assert resp.status_code == 200 and "registry_session" in client.cookies
    assert client.get("/api/v1/auth/me").json()["subject"] == "asha"  # the cookie alone
    return client


@pytest.fixture
def web(reg: Registry) -> Iterator[TestClient]:
    with signed_in(reg) as c:
        yield c


def count(reg: Registry, entity: str) -> int:
    with TestClient(create_app(registry=reg), headers=auth_headers(reg)) as c:
        return len(c.get(f"/api/v1/{entity}", params={"limit": 100}).json()["items"])


# -- 1. form posts of the pages ------------------------------------------------------------------


def test_a_form_post_with_origin_null_is_refused(reg, web):
    resp = web.post("/ui/facility/new", data=FACILITY_FORM, headers={"origin": "null"})
    assert resp.status_code == 403 and resp.headers["content-type"].startswith("text/html")
    assert "another site" in resp.text  # the UI's own error page
    assert count(reg, "facility") == 0


def test_a_form_post_from_the_http_origin_of_an_https_site_is_refused(reg, web):
    for origin in ("http://registry.example", "https://registry.example:8443"):
        resp = web.post("/ui/facility/new", data=FACILITY_FORM, headers={"origin": origin})
        assert resp.status_code == 403, origin
    # a forged X-Forwarded-Proto changes nothing: only the server (uvicorn's proxy_headers, for
    # trusted proxies) says what the scheme is
    resp = web.post(
        "/ui/facility/new",
        data=FACILITY_FORM,
        headers={"origin": "http://registry.example", "x-forwarded-proto": "http"},
    )
    assert resp.status_code == 403
    assert count(reg, "facility") == 0
    ok = web.post(
        "/ui/facility/new",
        data=FACILITY_FORM,
        headers={"origin": "https://REGISTRY.example:443"},  # the same origin, spelt otherwise
        follow_redirects=False,
    )
    assert ok.status_code == 303 and count(reg, "facility") == 1


def test_a_signed_in_form_post_without_origin_or_referer_is_refused(reg, web):
    resp = web.post("/ui/facility/new", data=FACILITY_FORM)
    assert resp.status_code == 403 and count(reg, "facility") == 0
    foreign = web.post(
        "/ui/facility/new", data=FACILITY_FORM, headers={"referer": "https://evil.example/x"}
    )
    assert foreign.status_code == 403 and count(reg, "facility") == 0
    ok = web.post(
        "/ui/facility/new",
        data=FACILITY_FORM,
        headers={"referer": f"{SITE}/ui/facility/new"},
        follow_redirects=False,
    )
    assert ok.status_code == 303 and count(reg, "facility") == 1


def test_sign_out_is_refused_from_another_site(reg, web):
    for headers in ({"origin": "https://evil.example"}, {"origin": "null"}, {}):
        assert web.post("/ui/logout", headers=headers).status_code == 403, headers
        assert web.get("/api/v1/auth/me").json()["authenticated"] is True
    out = web.post("/ui/logout", headers={"origin": SITE}, follow_redirects=False)
    assert out.status_code == 303


def test_anonymous_sign_in_checks_origin_but_needs_none(reg):
    with TestClient(create_app(registry=reg), base_url=SITE) as anon:
        form = {"username": "asha", "password": PASSWORD, "next": "/ui/"}
        for origin in ("null", "http://registry.example", "https://evil.example"):
            resp = anon.post("/ui/login", data=form, headers={"origin": origin})
            assert resp.status_code == 403, origin  # login CSRF
            assert "registry_session" not in anon.cookies
        # no Origin and no Referer: not a browser's post, and nobody's cookie rides on it
        resp = anon.post("/ui/login", data=form, follow_redirects=False)
        assert resp.status_code == 303 and "registry_session" in anon.cookies


def test_an_expired_or_foreign_cookie_is_not_a_sign_in(reg):
    """A cookie that signs nobody in gives a request no authority: nothing to protect."""
    with TestClient(create_app(registry=reg), base_url=SITE) as c:
        c.cookies.set("registry_session", "not-a-token")
        resp = c.post("/api/v1/auth/login", json={"username": "asha", "password": PASSWORD})
        assert resp.status_code == 200


# -- 2. API writes signed in by the cookie ------------------------------------------------------


def test_cookie_api_writes_from_another_site_are_refused(reg, web):
    evil = {"origin": "https://evil.example"}
    resp = web.post("/api/v1/vaccine", json=VACCINE, headers=evil)
    assert resp.status_code == 403
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert resp.json()["type"] == "/problems/forbidden"
    assert count(reg, "vaccine") == 0
    for headers in ({"origin": "null"}, {"origin": "http://registry.example"}, {}):
        assert web.post("/api/v1/vaccine", json=VACCINE, headers=headers).status_code == 403
    assert count(reg, "vaccine") == 0

    made = web.post("/api/v1/vaccine", json=VACCINE, headers={"origin": SITE})
    assert made.status_code == 201
    rid, etag = made.json()["id"], made.headers["etag"]
    patch = web.patch(
        f"/api/v1/vaccine/{rid}",
        json={"name": "Beta"},
        headers={**evil, "if-match": etag, "content-type": "application/merge-patch+json"},
    )
    assert patch.status_code == 403
    put = web.put(f"/api/v1/vaccine/{rid}", json={**VACCINE, "name": "Beta"}, headers=evil)
    assert put.status_code == 403
    assert web.delete(f"/api/v1/vaccine/{rid}", headers=evil).status_code == 403
    assert web.get(f"/api/v1/vaccine/{rid}").json()["name"] == "Alpha"
    gone = web.delete(f"/api/v1/vaccine/{rid}", headers={"referer": f"{SITE}/ui/vaccine"})
    assert gone.status_code in (200, 204)
    # reads are not writes
    assert web.get("/api/v1/vaccine", headers=evil).status_code == 200


def test_cookie_writes_to_plugin_routes_and_sign_out_are_refused_from_another_site(reg, web):
    evil = {"origin": "https://evil.example"}
    assert web.post("/plugin-poke", headers=evil).status_code == 403
    assert web.post("/plugin-poke", headers={"origin": SITE}).json() == {"poked": True}
    assert web.post("/api/v1/auth/logout", headers=evil).status_code == 403
    assert web.get("/api/v1/auth/me").json()["authenticated"] is True


def test_bearer_token_writes_are_unaffected(reg):
    with TestClient(create_app(registry=reg), base_url=SITE, headers=auth_headers(reg)) as api:
        for n, headers in enumerate(({"origin": "https://evil.example"}, {"origin": "null"}, {})):
            body = {**VACCINE, "code": f"V{n}", "name": f"Vaccine {n}"}
            resp = api.post("/api/v1/vaccine", json=body, headers=headers)
            assert resp.status_code == 201, headers
        assert api.post("/plugin-poke", headers={"origin": "null"}).status_code == 200


def test_the_check_uses_the_sites_own_scheme_on_plain_http(reg):
    with signed_in(reg, "http://localhost:8000") as c:
        ok = c.post("/api/v1/vaccine", json=VACCINE, headers={"origin": "http://localhost:8000"})
        assert ok.status_code == 201
        for origin in ("https://localhost:8000", "http://localhost:8001", "http://localhost"):
            resp = c.post("/plugin-poke", headers={"origin": origin})
            assert resp.status_code == 403, origin


# -- 3. headers -----------------------------------------------------------------------------------


def test_pages_send_the_content_security_policy_and_framing_headers(reg, web):
    for path in ("/ui/", "/ui/login", "/ui/facility", "/ui/facility/new", "/ui/nothing"):
        resp = web.get(path)
        assert resp.headers["content-type"].startswith("text/html"), path
        assert resp.headers["content-security-policy"] == EXPECTED_CSP, path
        assert resp.headers["x-frame-options"] == "DENY", path
        assert resp.headers["x-content-type-options"] == "nosniff", path
        assert resp.headers["referrer-policy"] == "same-origin", path
    refused = web.post("/ui/facility/new", data=FACILITY_FORM, headers={"origin": "null"})
    assert refused.headers["content-security-policy"] == EXPECTED_CSP


def test_every_response_says_nosniff(reg, web):
    responses = [
        web.get("/api/v1"),
        web.get("/health"),
        web.get("/openapi.json"),
        web.get("/ui/static/ui.js"),
        web.get("/api/v1/nothing"),  # 404 problem
        web.post("/plugin-poke", headers={"origin": "null"}),  # refused
        web.get("/api/v1/recipient", headers={"authorization": "Bearer nonsense"}),  # 401
    ]
    for resp in responses:
        assert resp.headers["x-content-type-options"] == "nosniff", resp.url
        assert resp.headers["x-frame-options"] == "DENY", resp.url
        assert resp.headers["referrer-policy"] == "same-origin", resp.url
        if not resp.headers["content-type"].startswith("text/html"):
            assert "content-security-policy" not in resp.headers, resp.url


def test_the_api_docs_page_allows_exactly_its_own_inline_script(reg, web):
    resp = web.get("/docs")
    csp = resp.headers["content-security-policy"]
    inline = re.findall(r"<script>(.*?)</script>", resp.text, re.S)
    assert len(inline) == 1
    digest = base64.b64encode(hashlib.sha256(inline[0].encode()).digest()).decode()
    assert f"script-src 'self' 'sha256-{digest}';" in csp
    assert csp.replace(f" 'sha256-{digest}'", "") == EXPECTED_CSP
    assert web.get("/ui/").headers["content-security-policy"] == EXPECTED_CSP


def test_templates_have_no_inline_script_style_or_handlers():
    """What the CSP would block: the pages' scripts and styles live in registry/static/."""
    bad = []
    for path in sorted(TEMPLATES.rglob("*.html")):
        text = path.read_text()
        for pattern in (
            r"<script(?![^>]*\bsrc=)[^>]*>",
            r"<style\b",
            r"\sstyle\s*=",
            r"\son[a-z]+\s*=",
            r"javascript:",
        ):
            bad += [f"{path.name}: {m}" for m in re.findall(pattern, text, re.I)]
    assert bad == []
