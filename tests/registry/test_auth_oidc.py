"""External OpenID Connect: bearer tokens signed by RS256 keys generated here, verified against
a JWKS served by this test on a loopback HTTP server (no mock): valid tokens, a rotated key found
by fetching again on an unknown key id, wrong issuer and audience refused."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient

from open_registry.core import Settings, create_app, open_registry
from open_registry.core.auth import oidc

ISSUER = "https://keycloak.test/realms/registry"


class JWKSServer:
    """Serves `self.keys` as a JWKS on 127.0.0.1 and counts the fetches."""

    def __init__(self) -> None:
        self.keys: dict[str, Any] = {}
        self.fetches = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.fetches += 1
                body = json.dumps(
                    {"keys": [server.public_jwk(k, kid) for kid, k in server.keys.items()]}
                ).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/certs"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @staticmethod
    def public_jwk(key: Any, kid: str) -> dict[str, Any]:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        return {**jwk, "kid": kid, "use": "sig", "alg": "RS256"}

    def add_key(self, kid: str) -> Any:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.keys[kid] = key
        return key


@pytest.fixture
def idp() -> Iterator[JWKSServer]:
    server = JWKSServer()
    server.thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


@pytest.fixture
def http(settings: Settings, idp: JWKSServer, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(oidc, "REFETCH_SECONDS", 0.0)  # the test rotates keys at once
    reg = open_registry(
        settings.with_(
            oidc_issuer=ISSUER,
            oidc_jwks_url=idp.url,
            oidc_audience="registry",
            oidc_facility_claim="attributes.facility",
        )
    )
    with TestClient(create_app(registry=reg)) as c:
        yield c
    reg.close()


def token(key: Any, kid: str, **claims: Any) -> str:
    now = int(time.time())
    body = {
        "iss": ISSUER,
        "aud": "registry",
        "sub": "kc-user-1",
        "iat": now,
        "exp": now + 300,
        "realm_access": {"roles": ["facility-staff", "offline_access"]},
        "attributes": {"facility": "F1"},
        **claims,
    }
    return jwt.encode(body, key, "RS256", headers={"kid": kid})


def me(http: TestClient, tok: str) -> Any:
    return http.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {tok}"})


def test_a_provider_token_maps_roles_and_facility_from_the_claims(http, idp):
    key = idp.add_key("k1")
    resp = me(http, token(key, "k1"))
    assert resp.status_code == 200
    assert resp.json() == {
        "authenticated": True,
        "kind": "oidc",
        "subject": "kc-user-1",
        "roles": ["facility-staff"],  # offline_access means nothing here
        "facility": "F1",
        "recipient": None,
    }
    me(http, token(key, "k1"))
    assert idp.fetches == 1  # cached


def test_an_unknown_key_id_fetches_the_keys_again(http, idp):
    k1 = idp.add_key("k1")
    assert me(http, token(k1, "k1")).status_code == 200
    k2 = idp.add_key("k2")  # the provider rotates
    assert me(http, token(k2, "k2")).status_code == 200
    assert idp.fetches == 2
    forged = idp.add_key("k3")
    del idp.keys["k3"]  # a key the provider never published
    assert me(http, token(forged, "k3")).status_code == 401


@pytest.mark.parametrize(
    "claims",
    [{"iss": "https://evil.test/realms/registry"}, {"aud": "another-app"}, {"exp": 1}],
    ids=["wrong issuer", "wrong audience", "expired"],
)
def test_wrong_issuer_audience_or_time_is_refused(http, idp, claims):
    key = idp.add_key("k1")
    resp = me(http, token(key, "k1", **claims))
    assert resp.status_code == 401
    assert resp.headers["content-type"].startswith("application/problem+json")


def test_a_token_signed_by_another_key_under_a_published_kid_is_refused(http, idp):
    idp.add_key("k1")
    impostor = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert me(http, token(impostor, "k1")).status_code == 401
