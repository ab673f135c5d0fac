"""What other SMART Health Card verifiers fetch from this registry: the JWK set (with CORS, its
preflight, and the ES256 key present before any card is signed) and each key's Card Revocation
List (`/.well-known/crl/{kid}.json`, `crlVersion` in the JWKs), as the SMART Health Cards
framework's "Revocation" section describes them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from open_registry.core import Settings
from open_registry.plugins.certificates import shc
from open_registry.plugins.certificates.es256 import EcKeys, key_from_jwk, unb64url
from open_registry.plugins.certificates.runtime import runtime
from tests.plugins.certificates.test_issuance import (
    certificates,
    deliver,
    make_client,
    vaccination,
)

ORIGIN = "https://verifier.example"


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    yield from make_client(settings)


def anonymous(client: TestClient) -> TestClient:
    return TestClient(client.app)


def card_of(client: TestClient, certificate_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(JWS header, payload) of the certificate's SMART Health Card."""
    [jws] = client.get(f"/api/v1/certificates/{certificate_id}/shc").json()["verifiableCredential"]
    head, body, _ = jws.split(".")
    return json.loads(unb64url(head)), json.loads(shc._inflate(unb64url(body)))


def test_the_jwk_set_is_served_with_cors_to_anyone(client: TestClient):
    with anonymous(client) as c:
        resp = c.get("/.well-known/jwks.json", headers={"Origin": ORIGIN})
    assert resp.status_code == 200
    assert resp.headers["access-control-allow-origin"] == "*"
    assert all("d" not in k for k in resp.json()["keys"])


def test_the_jwk_set_answers_a_cors_preflight(client: TestClient):
    with anonymous(client) as c:
        resp = c.options(
            "/.well-known/jwks.json",
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "accept, x-requested-with",
            },
        )
    assert resp.status_code == 204
    assert resp.headers["access-control-allow-origin"] == "*"
    assert "GET" in resp.headers["access-control-allow-methods"]
    assert resp.headers["access-control-allow-headers"] == "accept, x-requested-with"
    with anonymous(client) as c:
        odd = c.options("/.well-known/jwks.json", headers={"Access-Control-Request-Headers": "a b"})
    assert odd.status_code == 204 and "access-control-allow-headers" not in odd.headers


def test_the_card_signing_key_is_published_before_the_first_card(client: TestClient):
    """A verifier that fetched the keys before the first card still finds the card's key."""
    with anonymous(client) as c:
        before = c.get("/.well-known/jwks.json").json()["keys"]
    assert len(before) == 1 and before[0]["alg"] == "ES256" and before[0]["use"] == "sig"
    vac = vaccination(client)
    deliver(client)
    [cert] = certificates(client, vac["id"])
    header, _ = card_of(client, cert["id"])
    assert header["kid"] == before[0]["kid"]


def test_the_card_signing_key_exists_once_the_plugin_starts(client: TestClient):
    rt = runtime(client.registry)  # type: ignore[attr-defined]
    index = json.loads((rt.ec_keys.folder / "index.json").read_text())
    assert index["current"] and [k["kid"] for k in index["keys"]] == [index["current"]]


def test_another_process_sees_the_first_key_instead_of_making_its_own(tmp_path):
    first, second = EcKeys(tmp_path), EcKeys(tmp_path)
    kid = first.ensure()
    assert second.ensure() == kid and first.ensure() == kid
    assert [k["kid"] for k in second.jwks()["keys"]] == [kid]
    rotated = second.generate()  # a rotation keeps the first key published
    assert first.current()[0] == rotated and len(first.jwks()["keys"]) == 2


def test_revocation_list_names_revoked_cards_and_its_counter_is_the_crl_version(
    client: TestClient,
):
    kept, dropped = vaccination(client, recipient=0), vaccination(client, recipient=1)
    deliver(client)
    [good] = certificates(client, kept["id"])
    [bad] = certificates(client, dropped["id"])
    _, payload = card_of(client, bad["id"])
    rid = payload["vc"]["rid"]
    assert rid == shc.rid_of(bad["id"]) and len(rid) <= 24  # the spec's limit, base64url
    with anonymous(client) as c:
        [key] = c.get("/.well-known/jwks.json").json()["keys"]
        assert key["crlVersion"] == 1
        crl_url = f"/.well-known/crl/{key['kid']}.json"
        empty = c.get(crl_url, headers={"Origin": ORIGIN})
    assert empty.status_code == 200 and empty.headers["access-control-allow-origin"] == "*"
    assert empty.json() == {"kid": key["kid"], "method": "rid", "ctr": 1, "rids": []}
    revoked = client.post(f"/api/v1/certificates/{bad['id']}/revoke", json={"reason": "lost"})
    assert revoked.status_code == 200
    with anonymous(client) as c:
        [key] = c.get("/.well-known/jwks.json").json()["keys"]
        crl = c.get(crl_url).json()
    assert crl == {"kid": key["kid"], "method": "rid", "ctr": 2, "rids": [rid]}
    assert key["crlVersion"] == crl["ctr"]
    assert shc.rid_of(good["id"]) not in crl["rids"]
    # a suspension is not a revocation (the framework has no suspension): not listed
    client.post(f"/api/v1/certificates/{good['id']}/suspend", json={"reason": "check"})
    with anonymous(client) as c:
        assert c.get(crl_url).json()["rids"] == [rid]


def test_after_a_rotation_every_key_lists_every_revoked_card(client: TestClient):
    vac = vaccination(client)
    deliver(client)
    [cert] = certificates(client, vac["id"])
    card_of(client, cert["id"])  # a card signed with the first key
    rt = runtime(client.registry)  # type: ignore[attr-defined]
    rt.ec_keys.generate()
    client.post(f"/api/v1/certificates/{cert['id']}/revoke", json={"reason": "lost"})
    with anonymous(client) as c:
        keys = c.get("/.well-known/jwks.json").json()["keys"]
        assert len(keys) == 2 and {k["crlVersion"] for k in keys} == {2}
        for key in keys:
            crl = c.get(f"/.well-known/crl/{key['kid']}.json").json()
            assert crl["kid"] == key["kid"] and crl["rids"] == [shc.rid_of(cert["id"])]
            key_from_jwk(key)  # still a usable P-256 key with the extra member


def test_a_revocation_list_of_an_unknown_key_is_404(client: TestClient):
    with anonymous(client) as c:
        assert c.get("/.well-known/crl/not-a-key.json").status_code == 404
        preflight = c.options("/.well-known/crl/whatever.json")
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "*"
