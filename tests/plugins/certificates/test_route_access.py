"""Who may fetch a certificate, in every output, and change it: each route of the certificates
plugin as anonymous, as a caller without a read grant, as staff of another facility and as the
issuing facility's staff (the real app, bearer tokens of the registry's own).

A certificate's read rule (`x-registry.access.read` of certificate.json) lists `owner`, so every
signed-in caller may read *their own* certificates: a caller who owns none and holds no listed
role gets a 404 for someone else's, as on `GET /api/v1/certificate/{id}`, not a 403."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from open_registry.core import Principal, Settings
from open_registry.core.testing import auth_headers
from tests.plugins.certificates.test_issuance import (
    certificates,
    deliver,
    first,
    make_client,
    vaccination,
)

#: every output of a certificate: JSON-LD, QR (PNG, SVG), PDF, SMART Health Card (JSON and its
#: QR), EU DCC / HCERT (text and QR), the DDCC:VS bundle
OUTPUTS = [
    "",
    "?format=png",
    "?format=svg",
    "?format=pdf",
    "/shc",
    "/shc?format=svg",
    "/hcert",
    "/hcert?format=png",
    "/ddcc",
]


class World:
    """A certificate issued at facility A for recipient A, and callers."""

    def __init__(self, client: TestClient, certificate: dict[str, Any], other: str):
        self.client = client
        self.registry = client.registry  # type: ignore[attr-defined]
        self.certificate = certificate
        self.facility = certificate["facility"]
        self.recipient = certificate["recipient"]
        self.other = other

    def status(self, method: str, path: str, headers: dict[str, str], **kw: Any) -> int:
        # the admin client's Authorization header is replaced (or dropped: anonymous)
        with TestClient(self.client.app, headers=headers) as c:
            return c.request(method, path, **kw).status_code

    def headers(self, role: str | None, **kw: Any) -> dict[str, str]:
        return {} if role is None else auth_headers(self.registry, role, **kw)


def make_world(settings: Settings) -> Iterator[World]:
    for client in make_client(settings):
        # coded in ICD-11 in the vaccine registry; an HCERT also needs its EU value set codes
        [vaccine] = client.get("/api/v1/vaccine?code=CVX-AV").json()["items"]
        eu = {"euMa": "ORG-100001699", "euMp": "EU/1/21/1529", "euVp": "J07BX03"}
        assert client.patch(f"/api/v1/vaccine/{vaccine['id']}", json=eu).status_code == 200
        vac = vaccination(client, vaccine="CVX-AV")
        deliver(client)
        [cert] = certificates(client, vac["id"])
        facilities = client.get("/api/v1/facility?limit=50").json()["items"]
        other = next(f["code"] for f in facilities if f["code"] != cert["facility"])
        assert cert["facility"] == first(client, "facility")["code"]
        yield World(client, cert, other)


@pytest.fixture
def world(settings: Settings) -> Iterator[World]:
    """A world of the test's own: for the tests that change the certificate or issue."""
    yield from make_world(settings)


@pytest.fixture(scope="module")
def shared_world(shared_settings: Settings) -> Iterator[World]:
    """One world for the module's tests that only read (every output, every caller)."""
    yield from make_world(shared_settings)


def url(world: World, output: str) -> str:
    return f"/api/v1/certificates/{world.certificate['id']}{output}"


# -- reads: every output --------------------------------------------------------------------------


def test_anonymous_callers_get_401_for_every_output(shared_world: World):
    world = shared_world
    for output in OUTPUTS:
        assert world.status("GET", url(world, output), {}) == 401, output


def test_callers_without_a_read_grant_get_nothing(shared_world: World):
    """No role of the read list and no certificate of their own: the certificate is not theirs
    to see (404, as the generic read answers; the schema's `owner` entry admits every
    signed-in caller to their own certificates, so the answer is not a 403)."""
    world = shared_world
    for role, kw in [
        ("controller", {}),
        ("api-client", {}),
        ("recipient", {"recipient": "someone-else"}),
    ]:
        headers = world.headers(role, **kw)
        generic = world.status("GET", f"/api/v1/certificate/{world.certificate['id']}", headers)
        assert generic == 404, role
        for output in OUTPUTS:
            assert world.status("GET", url(world, output), headers) == 404, (role, output)


def test_staff_of_another_facility_get_404_for_every_output(shared_world: World):
    world = shared_world
    for role in ("facility-staff", "facility-admin"):
        headers = world.headers(role, facility=world.other)
        for output in OUTPUTS:
            assert world.status("GET", url(world, output), headers) == 404, (role, output)


def test_the_issuing_facility_and_the_recipient_get_every_output(shared_world: World):
    world = shared_world
    for role, kw in [
        ("facility-staff", {"facility": world.facility}),
        ("recipient", {"recipient": world.recipient}),
        ("monitoring", {}),
    ]:
        headers = world.headers(role, **kw)
        for output in OUTPUTS:
            assert world.status("GET", url(world, output), headers) == 200, (role, output)


def test_a_cached_card_is_not_served_past_the_rules(shared_world: World):
    """Cards and HCERTs are cached per certificate version: a card made for the issuing
    facility is still refused to the others."""
    world = shared_world
    own = world.headers("facility-staff", facility=world.facility)
    for output in ("/shc", "/hcert", "/ddcc", "?format=png"):
        assert world.status("GET", url(world, output), own) == 200
        assert world.status("GET", url(world, output), {}) == 401
        other = world.headers("facility-staff", facility=world.other)
        assert world.status("GET", url(world, output), other) == 404


def test_the_recipients_bundle_carries_the_vaccine_registrys_codes(shared_world: World):
    """What a format needs beyond the certificate (the vaccination, the vaccine's ICD-11 code)
    is read as the issuer, once the recipient's gate let them read the certificate."""
    world = shared_world
    headers = world.headers("recipient", recipient=world.recipient)
    with TestClient(world.client.app, headers=headers) as c:
        bundle = c.get(url(world, "/ddcc")).json()
    coding = bundle["entry"][1]["resource"]["vaccineCode"]["coding"][0]
    assert coding["system"] == "http://id.who.int/icd/release/11/mms"


# -- the lifecycle --------------------------------------------------------------------------------

LIFECYCLE = [
    ("suspend", {"reason": "check"}),
    ("reinstate", None),
    ("revoke", {"reason": "lost"}),
]


def test_the_lifecycle_is_for_facility_admins_of_the_issuing_facility(world: World):
    for action, body in LIFECYCLE:
        path = url(world, f"/{action}")
        assert world.status("POST", path, {}, json=body) == 401, action
        for role, kw in [
            ("facility-staff", {"facility": world.facility}),
            ("monitoring", {}),
            ("recipient", {"recipient": world.recipient}),
        ]:
            assert world.status("POST", path, world.headers(role, **kw), json=body) == 403, role
        other = world.headers("facility-admin", facility=world.other)
        assert world.status("POST", path, other, json=body) == 404, action
        own = world.headers("facility-admin", facility=world.facility)
        assert world.status("POST", path, own, json=body) == 200, action


def test_a_correction_needs_the_right_to_update_the_vaccination(world: World):
    path = url(world, "/correct")
    body = {"batch": "CORR-1"}
    assert world.status("POST", path, {}, json=body) == 401
    for role, kw in [
        ("facility-staff", {"facility": world.facility}),
        ("recipient", {"recipient": world.recipient}),
    ]:
        assert world.status("POST", path, world.headers(role, **kw), json=body) == 403, role
    other = world.headers("facility-admin", facility=world.other)
    assert world.status("POST", path, other, json=body) == 404
    own = world.headers("facility-admin", facility=world.facility)
    assert world.status("POST", path, own, json=body) == 202


# -- the VC-API's issue endpoint and the public routes --------------------------------------------


def test_issuing_through_the_vc_api_needs_system_admin_or_the_vc_issue_scope(world: World):
    unsigned = {
        "@context": ["https://www.w3.org/ns/credentials/v2"],
        "type": ["VerifiableCredential"],
        "credentialSubject": {"id": "did:example:1"},
    }
    body = {"credential": unsigned}
    assert world.status("POST", "/credentials/issue", {}, json=body) == 401
    for role in ("facility-admin", "api-client", "monitoring"):
        headers = world.headers(role, facility=world.facility)
        assert world.status("POST", "/credentials/issue", headers, json=body) == 403, role
    client = Principal(
        "client", "issuer-app", frozenset({"api-client"}), scopes=frozenset({"vc:issue"})
    )
    token = world.registry.auth.tokens.issue(client).token
    headers = {"Authorization": f"Bearer {token}"}
    assert world.status("POST", "/credentials/issue", headers, json=body) == 201
    admin = world.headers("system-admin")
    assert world.status("POST", "/credentials/issue", admin, json=body) == 201


def test_what_verifiers_fetch_is_public(world: World):
    assert world.status("GET", "/api/v1/status-lists/revocation/0", {}) == 200
    assert world.status("GET", "/.well-known/jwks.json", {}) == 200
    assert world.status("GET", "/.well-known/did.json", {}) == 404  # did:key: no document
    credential = world.certificate["credential"]
    assert world.status("POST", "/api/v1/verify", {}, json=credential) == 200
    body = {"verifiableCredential": credential}
    assert world.status("POST", "/credentials/verify", {}, json=body) == 200
