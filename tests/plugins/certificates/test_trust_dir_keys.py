"""`trust_dir` may publish several keys under one verification method id: DIVOC deployments name
their RSA key and their Ed25519 key both `did:india`. Each key is kept, and a proof is checked
with the keys of the type its suite needs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from open_registry.core import Settings
from open_registry.plugins.certificates import keys, suites
from open_registry.plugins.certificates.keystore import KeyStore
from open_registry.plugins.certificates.verifier import TrustStore
from tests.plugins.certificates.conftest import DIVOC, read_json
from tests.plugins.certificates.test_issuance import make_client, verify

RSA_KEY = {
    "id": "did:india",
    "publicKeyPem": (DIVOC / "rsa-sample-public.pem").read_text(),
    "issuers": ["https://divoc.dev/"],
}
ED25519_KEY = {
    "id": "did:india",
    "publicKeyBase58": (DIVOC / "ed25519-sample-public.base58").read_text().strip(),
    "issuers": ["https://divoc.dev/"],
}
SAMPLES = ["rsa-signed-sample.extracted.json", "ed25519-signed-sample.extracted.json"]


def trust_folder(tmp_path: Path, *documents: dict[str, Any]) -> Path:
    folder = tmp_path / "trust"
    folder.mkdir()
    for n, doc in enumerate(documents):
        (folder / f"{n}-key.json").write_text(json.dumps(doc))
    return folder


def store(tmp_path: Path, *documents: dict[str, Any]) -> TrustStore:
    return TrustStore(KeyStore(tmp_path / "keys"), trust_dir=trust_folder(tmp_path, *documents))


@pytest.mark.parametrize("order", [(RSA_KEY, ED25519_KEY), (ED25519_KEY, RSA_KEY)])
def test_both_divoc_samples_verify_with_both_keys_under_did_india(
    tmp_path: Path, order: tuple[dict[str, Any], ...]
):
    trust = store(tmp_path, *order)
    resolved = trust.resolve("did:india")
    assert len(resolved.candidates(RSAPublicKey)) == 1
    assert len(resolved.candidates(Ed25519PublicKey)) == 1
    for sample in SAMPLES:
        credential = read_json(DIVOC / sample)
        result = suites.verify(credential, trust.resolve)
        assert result.verified, (sample, result.error)
        credential["credentialSubject"]["name"] = "Tampered"
        assert suites.verify(credential, trust.resolve).error == "invalid signature"


def test_a_method_with_no_key_of_the_suites_type_is_still_refused(tmp_path: Path):
    trust = store(tmp_path, RSA_KEY)
    result = suites.verify(read_json(DIVOC / SAMPLES[1]), trust.resolve)
    assert not result.verified and "does not fit Ed25519Signature2018" in str(result.error)


def test_every_ed25519_key_under_one_id_is_tried(tmp_path: Path):
    """Two Ed25519 keys under one id (a key rotated, both published): either one's proof
    verifies, a third key's does not."""
    old, new, stranger = (Ed25519PrivateKey.generate() for _ in range(3))
    published = [
        {"id": "did:web:issuer.example#signing", "publicKeyMultibase": keys.public_multikey(k)}
        for k in (old.public_key(), new.public_key())
    ]
    document = {
        "id": "did:web:issuer.example",
        "verificationMethod": [{**vm, "controller": "did:web:issuer.example"} for vm in published],
    }
    trust = store(tmp_path, document)
    credential = read_json(DIVOC / SAMPLES[0])
    credential.pop("proof")
    credential["issuer"] = "did:web:issuer.example"
    for key in (old, new):
        signed = suites.sign(credential, key, "did:web:issuer.example#signing")
        assert suites.verify(signed, trust.resolve).verified
    forged = suites.sign(credential, stranger, "did:web:issuer.example#signing")
    assert suites.verify(forged, trust.resolve).error == "invalid signature"


def test_divoc_samples_verify_through_the_api_with_two_keys_under_one_id(
    settings: Settings, tmp_path: Path
):
    trust = trust_folder(tmp_path, RSA_KEY, ED25519_KEY)
    for client in make_client(settings, trust_dir=str(trust)):
        for sample in SAMPLES:
            credential = read_json(DIVOC / sample)
            verdict = verify(client, credential)
            assert verdict["status"] == "VALID", (sample, verdict)
            credential["evidence"][0]["batch"] = "OTHER"
            assert verify(client, credential)["status"] == "INVALID"


@pytest.mark.parametrize(
    "broken",
    [
        ("0-key.json", "{not json", "not a usable DID document or key"),
        ("shc/issuers.json", '{"https://cards.example.org": "missing.json"}', "shc/"),
    ],
    ids=["did-document", "card-issuers"],
)
def test_a_broken_trust_dir_stops_start_up_naming_the_file(
    settings: Settings, tmp_path: Path, broken: tuple[str, str, str]
):
    """Not a 500 at the first verification: the registry refuses to start and says which file."""
    from open_registry.core import StartupError, create_app
    from open_registry.core.app import open_registry

    name, text, expected = broken
    trust = tmp_path / "trust"
    (trust / name).parent.mkdir(parents=True)
    (trust / name).write_text(text)
    registry = open_registry(
        settings.with_(plugins={"certificates": {"trust_dir": str(trust)}})
    )
    try:
        with pytest.raises(StartupError) as err:
            create_app(registry=registry)
        assert "plugins.certificates.trust_dir" in str(err.value)
        assert expected in str(err.value)
    finally:
        registry.close()
