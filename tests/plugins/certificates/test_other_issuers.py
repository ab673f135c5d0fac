"""Other issuers: DIVOC-issued certificates of trusted issuers, and the trust lists of other
issuers' SMART Health Cards (a JWK set per trusted `iss`, Card Revocation Lists saved offline)
and EU DCC HCERTs (document signers by `kid`). The API, the trust bundle of the verification
page, and the page's own offline checks (verify-core.js under Node) agree on each."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient

from open_registry.core import Settings, create_app
from open_registry.core.app import open_registry
from open_registry.plugins.certificates import qr
from open_registry.plugins.certificates.es256 import b64url, hcert_kid, public_jwk
from open_registry.plugins.certificates.keystore import KeyStore
from open_registry.plugins.certificates.trust_lists import (
    TrustListError,
    TrustLists,
    certificate_kid,
)
from open_registry.plugins.certificates.verifier import TrustStore, Verifier
from tests.plugins.certificates.other_issuers import (
    CARD_ISSUER,
    DIVOC_KEYS,
    TEST_EKU,
    OtherIssuer,
    divoc_sample,
    gateway_entry,
    record,
    self_signed,
)
from tests.plugins.certificates.test_verify_page import CORE, _node


@pytest.fixture(scope="module")
def other() -> OtherIssuer:
    return OtherIssuer()


@pytest.fixture
def client(settings: Settings, other: OtherIssuer, tmp_path: Path) -> Iterator[TestClient]:
    """An anonymous client of a registry trusting DIVOC and the other issuer."""
    trust = other.trust_dir(tmp_path / "trust")
    reg = open_registry(settings.with_(plugins={"certificates": {"trust_dir": str(trust)}}))
    with TestClient(create_app(registry=reg)) as c:
        yield c
    reg.close()


def verify(client: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    resp = client.post("/api/v1/verify", json=body)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_other_issuers_cards_hcerts_and_divoc_certificates_through_the_api(
    client: TestClient, other: OtherIssuer
):
    # DIVOC's own sample, read from its QR payload: a trusted issuer's certificate
    sample = divoc_sample()
    payload = base64.b64encode(qr.divoc_payload(sample)).decode()
    verdict = verify(client, {"qr": payload})
    assert verdict["status"] == "VALID" and verdict["issuer"] == "https://divoc.dev/", verdict
    # another DIVOC deployment's certificate: its key is known, its issuer is not trusted
    stranger = other.divoc_certificate()
    payload = base64.b64encode(qr.divoc_payload(stranger)).decode()
    verdict = verify(client, {"qr": payload})
    assert verdict["status"] == "INVALID"
    assert "'https://divoc.other-state.example/' is not trusted" in verdict["reason"]

    # a card of the trusted issuer, signed with its key that has no revocation list saved
    card = verify(client, {"text": other.card(second_key=True)})
    assert card["status"] == "VALID" and card["issuer"] == CARD_ISSUER, card
    assert "revocation not checked" in card["reason"] and card["warnings"]
    assert "revocation" not in card["checks"]
    # its key with a Card Revocation List saved: a listed rid is REVOKED, another is checked
    checked = verify(client, {"text": other.card()})
    assert checked["status"] == "VALID" and checked["checks"]["revocation"] is True, checked
    assert "not in its revocation list" in checked["reason"] and not checked["warnings"]
    revoked = verify(client, {"text": other.card(other.revoked)})
    assert revoked["status"] == "REVOKED", revoked
    # `rid.<timestamp>`-style expiry and exp: an expired card is EXPIRED
    assert verify(client, {"text": other.card(exp=1_600_000_000)})["status"] == "EXPIRED"
    # an unknown issuer, and an unknown key of a trusted one, are named
    foreign = OtherIssuer()
    rec = record()
    from open_registry.plugins.certificates import shc

    unknown = shc.to_qr_text(
        shc.sign(shc.payload(rec, "https://unknown.example"), foreign.kid, foreign.key)
    )
    verdict = verify(client, {"text": unknown})
    assert (
        verdict["status"] == "INVALID"
        and "'https://unknown.example' is not trusted" in (verdict["reason"])
    )
    forged = shc.to_qr_text(shc.sign(shc.payload(rec, CARD_ISSUER), foreign.kid, foreign.key))
    verdict = verify(client, {"text": forged})
    assert verdict["status"] == "INVALID" and foreign.kid in verdict["reason"]
    assert verdict["checks"]["issuer"] is False
    # the right kid but another key: the signature fails
    impostor = shc.to_qr_text(shc.sign(shc.payload(rec, CARD_ISSUER), other.kid, foreign.key))
    assert verify(client, {"text": impostor})["reason"] == "invalid signature"

    # an HCERT of the trusted document signer
    dcc = verify(client, {"text": other.hcert()})
    assert dcc["status"] == "VALID" and dcc["issuer"] == "DE", dcc
    assert "revocation not checked" in dcc["reason"]
    # claim 1 says another country than the signer's certificate
    wrong = verify(client, {"text": other.hcert(country="NL")})
    assert wrong["status"] == "INVALID" and "signs for DE" in wrong["reason"], wrong
    # an unknown document signer is named by its kid
    stranger_kid = b"\x01\x02\x03\x04\x05\x06\x07\x08"
    verdict = verify(client, {"text": other.hcert(key=foreign.key, kid=stranger_kid)})
    assert (
        verdict["status"] == "INVALID" and "0102030405060708 is not trusted" in (verdict["reason"])
    )
    verdict = verify(client, {"text": other.hcert(key=foreign.key)})  # the DSC's kid, not its key
    assert verdict["status"] == "INVALID" and verdict["reason"] == "invalid signature"

    # the page's trust bundle holds the same trust lists (public keys only)
    bundle = client.get("/verify/trust.json").json()
    [key, key2] = bundle["cardIssuers"][CARD_ISSUER]["keys"]
    assert key["kid"] == other.kid and key["crl"]["rids"] == [
        shc.rid_of(other.revoked.certificate_id)
    ]
    assert key2["crl"] is None and set(key2) == {"kid", "x", "y", "crl"}
    [signer] = bundle["dccSigners"]
    assert signer["kid"] == b64url(other.dsc_kid) and signer["country"] == "DE"
    assert signer["kinds"] == ["v"]
    assert '"d"' not in json.dumps(bundle)
    assert "https://divoc.dev/" in bundle["issuers"]


def test_a_divoc_certificate_of_an_issuer_not_trusted_is_invalid(tmp_path: Path):
    """DIVOC's key known, but not for the issuer `https://divoc.dev/`: INVALID, issuer named."""
    folder = tmp_path / "trust"
    folder.mkdir()
    for n, doc in enumerate(DIVOC_KEYS):
        (folder / f"{n}.json").write_text(
            json.dumps({k: v for k, v in doc.items() if k != "issuers"})
        )
    verifier = Verifier(TrustStore(KeyStore(tmp_path / "keys"), trust_dir=folder))
    verdict = verifier.verify(divoc_sample())
    assert verdict.status == "INVALID"
    assert verdict.reason == "the issuer 'https://divoc.dev/' is not trusted"
    trusted = Verifier(
        TrustStore(KeyStore(tmp_path / "keys"), ("https://divoc.dev/",), trust_dir=folder)
    )
    assert trusted.verify(divoc_sample()).status == "VALID"


def test_a_valid_verdict_with_a_status_not_checked_says_so(tmp_path: Path):
    """Another issuer's status list not saved in trust_dir: VALID, but not "all good"."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from open_registry.plugins.certificates import keys, suites
    from tests.plugins.certificates.conftest import vaccination_credential

    key = Ed25519PrivateKey.generate()
    issuer = keys.did_key(key.public_key())
    url = "https://other.example/status-lists/revocation/0"
    entry = {
        "type": "BitstringStatusListEntry",
        "statusPurpose": "revocation",
        "statusListIndex": "7",
        "statusListCredential": url,
    }
    credential = vaccination_credential(issuer, credentialStatus=[entry])
    signed = suites.sign(credential, key, keys.did_key_method(key.public_key()))
    verdict = Verifier(TrustStore(KeyStore(tmp_path / "keys"), (issuer,))).verify(signed)
    assert verdict.status == "VALID" and verdict.warnings, verdict
    assert verdict.reason.startswith("the signature, issuer and dates are good; status list")
    assert "status not checked" in verdict.reason and "all good" not in verdict.reason


# -- the trust lists' files ------------------------------------------------------------------


def test_document_signers_from_certificates_gateway_lists_keys_and_jwk_sets(tmp_path: Path):
    de, nl, raw, listed = (ec.generate_private_key(ec.SECP256R1()) for _ in range(4))
    de_dsc, nl_dsc = self_signed(de, "DE", None), self_signed(nl, "NL", TEST_EKU)
    folder = tmp_path / "dcc"
    folder.mkdir()
    (folder / "de.der").write_bytes(de_dsc.public_bytes(serialization.Encoding.DER))
    gateway = [gateway_entry(nl_dsc, "NL"), {"certificateType": "CSCA", "kid": "x"}]
    (folder / "gateway.json").write_text(json.dumps(gateway))
    pem = raw.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (folder / "raw.pem").write_bytes(pem)
    jwks = {"keys": [{**public_jwk(listed.public_key()), "kid": "a-thumbprint"}]}
    (folder / "registry.json").write_text(json.dumps(jwks))
    lists = TrustLists.load(tmp_path)
    assert lists.signers_for(certificate_kid(de_dsc))[0].country == "DE"
    [nl_signer] = lists.signers_for(certificate_kid(nl_dsc))
    assert nl_signer.kinds == frozenset({"t"})  # tests only: a vaccination HCERT is refused
    assert "may not sign vaccination" in str(nl_signer.problem({1: "NL"}, {"v": [{}]}))
    assert lists.signers_for(hcert_kid(raw.public_key()))[0].country is None
    assert lists.signers_for(hcert_kid(listed.public_key()))  # a JWK set: kid from the key
    assert len(lists.bundle()["dccSigners"]) == 4


A_KEY = public_jwk(ec.generate_private_key(ec.SECP256R1()).public_key())


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"shc/a.json": {"keys": []}}, "shc/issuers.json is missing"),
        ({"shc/issuers.json": {"https://a.example": "a.json"}}, "shc/a.json: no such file"),
        (
            {"shc/issuers.json": {"https://a.example": "a.json"}, "shc/a.json": {"keys": []}},
            "no ES256 (P-256) signing key for https://a.example",
        ),
        ({"dcc/list.json": [{"kid": "AAAA", **A_KEY}]}, "kid 'AAAA' is 3 bytes, not 8"),
        ({"dcc/list.json": {"nothing": 1}}, "a trust list is a list of entries"),
    ],
)
def test_unusable_trust_list_files_are_named(tmp_path: Path, files: dict[str, Any], message: str):
    for name, content in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content))
    with pytest.raises(TrustListError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TrustLists.load(tmp_path)


def test_a_revocation_list_must_belong_to_a_trusted_key_and_use_rids(
    tmp_path: Path, other: OtherIssuer
):
    folder = other.trust_dir(tmp_path / "trust", divoc=False)
    crl = folder / "shc" / "crl" / "stranger.json"
    crl.write_text(json.dumps({"kid": "stranger", "method": "rid", "ctr": 1, "rids": []}))
    with pytest.raises(TrustListError, match="no trusted issuer's JWK set has key 'stranger'"):
        TrustLists.load(folder)
    crl.write_text(json.dumps({"kid": other.kid, "method": "hash-fhir", "ctr": 1, "rids": []}))
    with pytest.raises(TrustListError, match="'hash-fhir' is not supported"):
        TrustLists.load(folder)
    crl.unlink()
    lists = TrustLists.load(folder)
    key = lists.card_key(CARD_ISSUER + "/", other.kid)
    assert key is not None and key.crl is not None
    stamped = type(key.crl)(key.crl.kid, 3, {"abc": 1_700_000_000}, "x")
    assert stamped.revoked("abc", 1_600_000_000) and not stamped.revoked("abc", 1_800_000_000)


# -- the page's offline checks agree (verify-core.js under Node) -------------------------------

_NODE_SCRIPT = """
require(process.argv[1]);
const C = globalThis.VerifyCore;
let input = "";
process.stdin.on("data", (d) => (input += d));
process.stdin.on("end", async () => {
  const { cases, trust } = JSON.parse(input);
  const out = [];
  for (const text of cases) {
    const check = text.startsWith("HC1:") ? C.verifyHcert : C.verifyCard;
    const v = await check(text, trust);
    out.push([v.status, v.reason.key, v.detail || ""]);
  }
  process.stdout.write(JSON.stringify(out));
});
"""


def test_the_page_checks_other_issuers_offline_as_the_server_does(
    client: TestClient, other: OtherIssuer
):
    node = _node()
    trust = client.get("/verify/trust.json").json()
    foreign = OtherIssuer()
    cases = {
        other.card(second_key=True): ["VALID", "valid_unchecked", ""],
        other.card(): ["VALID", "valid", ""],
        other.card(other.revoked): ["REVOKED", "revoked", ""],
        other.card(exp=1_600_000_000): ["EXPIRED", "expired", ""],
        foreign.card(): ["INVALID", "not_trusted", ""],
        other.hcert(): ["VALID", "valid_unchecked", ""],
        other.hcert(key=foreign.key): ["INVALID", "signature", ""],
    }
    done = subprocess.run(
        [node, "-e", _NODE_SCRIPT, str(CORE)],
        input=json.dumps({"cases": [*cases, other.hcert(country="NL")], "trust": trust}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    *results, wrong_country = json.loads(done.stdout)
    assert results == list(cases.values())
    assert wrong_country[:2] == ["INVALID", "not_trusted"] and "signs for DE" in wrong_country[2]
    # the server says the same of each
    for text, (status, _, _) in cases.items():
        assert verify(client, {"text": text})["status"] == status
