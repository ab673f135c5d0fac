"""What a credential must hold to be issued or verified: a `credentialSubject` (VC Data Model 1.1
and 2.0 require it; the VC-API refuses to issue without one, our verifier rejects one), and its
proofs: a proof set (a `proof` array) verifies only when every proof does, and a proof chain
(`previousProof`) over the proofs it names (VC Data Integrity 1.0, section 4.5 "Verify Proof Sets
and Chains"). Digital Bazaar's verifier is asked the same where it runs."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from open_registry.core import Settings
from open_registry.plugins.certificates import keys, suites
from open_registry.plugins.certificates.runtime import runtime
from open_registry.plugins.certificates.verifier import subject_problem
from tests.plugins.certificates.conftest import vaccination_credential
from tests.plugins.certificates.test_issuance import make_client, verify
from tests.plugins.certificates.test_node_verifier import run_node_verifier

EDDSA = suites.EDDSA_RDFC_2022


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    yield from make_client(settings)


def registry_key(client: TestClient) -> Any:
    return runtime(client.registry).keys.current()  # type: ignore[attr-defined]


def unsigned(issuer: str) -> dict[str, Any]:
    credential = vaccination_credential(issuer)
    return suites.with_suite_context(credential, EDDSA)


def make_proof(
    document: dict[str, Any],
    key: Ed25519PrivateKey,
    method: str,
    created: str,
    **extra: Any,
) -> dict[str, Any]:
    """An eddsa-rdfc-2022 proof of `document` (with `proof` only for a chained proof) with
    extra proof options (`id`, `previousProof`), made as Data Integrity's Add Proof does."""
    options = {**suites.proof_options(EDDSA, method, created, "assertionMethod"), **extra}
    texts = suites.canonical_texts(document, options)
    digest = b"".join(hashlib.sha256(t.encode()).digest() for t in texts)
    return {**options, "proofValue": "z" + keys.b58encode(key.sign(digest))}


def proof_set(key: Ed25519PrivateKey, method: str, issuer: str) -> dict[str, Any]:
    document = unsigned(issuer)
    proofs = [
        make_proof(document, key, method, "2026-03-01T10:00:00Z"),
        make_proof(document, key, method, "2026-03-02T10:00:00Z"),
    ]
    return {**document, "proof": proofs}


def proof_chain(key: Ed25519PrivateKey, method: str, issuer: str) -> dict[str, Any]:
    document = unsigned(issuer)
    first = make_proof(document, key, method, "2026-03-01T10:00:00Z", id="urn:uuid:proof-1")
    second = make_proof(
        {**document, "proof": [first]},
        key,
        method,
        "2026-03-02T10:00:00Z",
        id="urn:uuid:proof-2",
        previousProof="urn:uuid:proof-1",
    )
    return {**document, "proof": [first, second]}


# -- credentialSubject ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "says"),
    [
        (None, "credentialSubject is required"),
        ({}, "must make a claim"),
        ([], "at least one subject"),
        ("did:example:42", "an object or a list of objects"),
    ],
)
def test_vc_api_refuses_to_issue_without_a_credential_subject(
    client: TestClient, subject: Any, says: str
):
    credential = vaccination_credential(registry_key(client).issuer)
    if subject is None:
        credential.pop("credentialSubject")
    else:
        credential["credentialSubject"] = subject
    resp = client.post("/credentials/issue", json={"credential": credential})
    assert resp.status_code == 400, resp.text
    [error] = resp.json()["errors"]
    assert error["pointer"] == "/credential/credentialSubject" and says in error["message"]


def test_vc_api_issues_a_list_of_subjects(client: TestClient):
    credential = vaccination_credential(registry_key(client).issuer)
    credential["credentialSubject"] = [credential["credentialSubject"]]
    resp = client.post("/credentials/issue", json={"credential": credential})
    assert resp.status_code == 201, resp.text
    assert verify(client, resp.json()["verifiableCredential"])["status"] == "VALID"


def test_our_verifier_rejects_a_signed_credential_without_a_subject(client: TestClient):
    key = registry_key(client)
    credential = vaccination_credential(key.issuer)
    credential.pop("credentialSubject")
    signed = suites.sign(credential, key.private_key, key.verification_method)
    assert suites.verify(signed, runtime(client.registry).trust.resolve).verified  # type: ignore[attr-defined]
    verdict = verify(client, signed)
    assert verdict["status"] == "INVALID" and "credentialSubject" in verdict["reason"]
    assert verdict["checks"] == {"credentialSubject": False}
    answer = client.post("/credentials/verify", json={"verifiableCredential": signed})
    assert answer.status_code == 400 and answer.json()["verified"] is False


def test_subject_rules():
    assert subject_problem({"credentialSubject": {"id": "did:example:1"}}) is None
    assert subject_problem({"credentialSubject": [{"name": "A"}, {"name": "B"}]}) is None
    assert subject_problem({"credentialSubject": [{"name": "A"}, 3]}) is not None
    assert subject_problem({"credentialSubject": [{"name": "A"}, {}]}) is not None


# -- proof sets and chains ------------------------------------------------------------------------


def test_a_proof_set_verifies_when_every_proof_does(client: TestClient):
    key = registry_key(client)
    credential = proof_set(key.private_key, key.verification_method, key.issuer)
    verdict = verify(client, credential)
    assert verdict["status"] == "VALID", verdict
    tampered = copy.deepcopy(credential)
    tampered["proof"][1]["created"] = "2026-03-03T10:00:00Z"
    verdict = verify(client, tampered)
    assert verdict["status"] == "INVALID" and "proof 2 of 2: invalid signature" in verdict["reason"]
    edited = copy.deepcopy(credential)
    edited["credentialSubject"]["name"] = "Somebody Else"
    assert "proof 1 of 2" in verify(client, edited)["reason"]


def test_a_proof_set_with_a_foreign_or_unknown_proof_is_invalid(client: TestClient):
    key = registry_key(client)
    credential = proof_set(key.private_key, key.verification_method, key.issuer)
    stranger = Ed25519PrivateKey.generate()
    foreign = copy.deepcopy(credential)
    foreign["proof"][1] = make_proof(
        unsigned(key.issuer),
        stranger,
        keys.did_key_method(stranger.public_key()),
        "2026-03-02T10:00:00Z",
    )
    verdict = verify(client, foreign)
    assert verdict["status"] == "INVALID" and "not the controller" in verdict["reason"]
    unknown = copy.deepcopy(credential)
    unknown["proof"][1] = {**unknown["proof"][1], "cryptosuite": "bbs-2023"}
    assert "unsupported proof type" in verify(client, unknown)["reason"]
    for proofs in ([], ["not a proof"], [credential["proof"][0]] * (suites.MAX_PROOFS + 1)):
        verdict = verify(client, {**credential, "proof": proofs})
        assert verdict["status"] == "INVALID" and "proof" in verdict["reason"]


def test_a_proof_chain_verifies_over_the_proofs_it_names(client: TestClient):
    key = registry_key(client)
    credential = proof_chain(key.private_key, key.verification_method, key.issuer)
    assert verify(client, credential)["status"] == "VALID"
    broken = copy.deepcopy(credential)
    broken["proof"][1]["previousProof"] = "urn:uuid:nowhere"
    verdict = verify(client, broken)
    assert verdict["status"] == "INVALID" and "PROOF_VERIFICATION_ERROR" in verdict["reason"]
    # the first proof re-signed (still valid by itself) breaks the chain that named it
    relinked = copy.deepcopy(credential)
    relinked["proof"][0] = make_proof(
        unsigned(key.issuer),
        key.private_key,
        key.verification_method,
        "2026-03-05T10:00:00Z",
        id="urn:uuid:proof-1",
    )
    verdict = verify(client, relinked)
    assert verdict["status"] == "INVALID" and "proof 2 of 2" in verdict["reason"]


# -- the independent verifier agrees --------------------------------------------------------------


def test_digital_bazaar_agrees_on_each_proof_and_on_subjects():
    """Digital Bazaar checks each proof of a set as we do (both of a good set verify, a
    tampered one is "Invalid signature."), and refuses a credential without a subject. It
    differs on what a set with one bad proof means: jsonld-signatures 11 calls the document
    verified when *some* proof verifies; Data Integrity 1.0 section 4.5, and we, when every
    one does."""
    key = Ed25519PrivateKey.generate()
    issuer, method = keys.did_key(key.public_key()), keys.did_key_method(key.public_key())
    good_set = proof_set(key, method, issuer)
    bad_set = copy.deepcopy(good_set)
    bad_set["proof"][1]["created"] = "2026-03-03T10:00:00Z"
    no_subject = vaccination_credential(issuer)
    no_subject.pop("credentialSubject")
    no_subject = suites.sign(no_subject, key, method)
    credentials = [good_set, bad_set, no_subject]
    ours = [suites.verify(c).verified and subject_problem(c) is None for c in credentials]
    assert ours == [True, False, False]
    good, bad, subjectless = run_node_verifier(credentials)
    assert good == {"verified": True, "errors": []}
    assert bad["errors"] == ["Invalid signature."]  # the same proof fails there
    assert bad["verified"] is True  # "some proof verified": not what section 4.5 says
    assert subjectless["verified"] is False
    assert any("credentialSubject" in e for e in subjectless["errors"])
