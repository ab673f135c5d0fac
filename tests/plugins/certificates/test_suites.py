"""The proof suites: W3C test vectors byte for byte, DIVOC's signed samples, our own credentials,
tampering, and a property test over random content."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from open_registry.plugins.certificates import keys, suites
from open_registry.plugins.certificates.jsonld import UndefinedTermError, canonicalize
from open_registry.plugins.certificates.keys import ResolvedKey
from open_registry.plugins.certificates.loader import (
    CREDENTIALS_V1_URL,
    DATA_INTEGRITY_V2_URL,
    StaticDocumentLoader,
)
from open_registry.plugins.certificates.results import VerificationResult
from tests.plugins.certificates.conftest import (
    DIVOC,
    VECTORS,
    read_json,
    vaccination_credential,
)

# -- W3C vc-di-eddsa test vectors ----------------------------------------------------------------

CASES = {
    # id: (suite, folder, file suffix, unsigned document)
    "eddsa-rdfc-2022": (suites.EDDSA_RDFC_2022, "eddsa-rdfc-2022", "DataInt", "unsigned.json"),
    "eddsa-rdfc-2022-employ": (
        suites.EDDSA_RDFC_2022,
        "eddsa-rdfc-2022/employ",
        "DataInt",
        "employmentAuth.json",
    ),
    "Ed25519Signature2020": (
        suites.ED25519_SIGNATURE_2020,
        "Ed25519Signature2020",
        "EdSig",
        "unsigned.json",
    ),
}


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


@pytest.mark.parametrize("case", list(CASES))
def test_w3c_vectors_byte_for_byte(case: str, vector_loader: StaticDocumentLoader) -> None:
    suite, folder, suffix, unsigned_name = CASES[case]
    here = VECTORS / folder
    key_pair = read_json(VECTORS / "keyPair.json")
    secret = keys.private_from_multikey(key_pair["privateKeyMultibase"])
    assert keys.public_multikey(secret.public_key()) == key_pair["publicKeyMultibase"]
    method = keys.did_key_method(secret.public_key())
    created = "2023-02-24T23:36:38Z"

    unsigned = read_json(VECTORS / unsigned_name)
    unsecured = suites.with_suite_context(unsigned, suite)
    options = suites.proof_options(suite, method, created, "assertionMethod")
    config = {**options, "@context": unsecured["@context"]}
    assert json.dumps(config, indent=2) == _text(here / f"proofConfig{suffix}.json").rstrip("\n")

    canon_proof = canonicalize(config, vector_loader)
    canon_doc = canonicalize(unsecured, vector_loader)
    assert canon_proof == _text(here / f"proofCanon{suffix}.txt")
    assert canon_doc == _text(here / f"canonDoc{suffix}.txt")
    proof_hash = hashlib.sha256(canon_proof.encode()).digest()
    doc_hash = hashlib.sha256(canon_doc.encode()).digest()
    assert proof_hash.hex() == _text(here / f"proofHash{suffix}.txt").strip()
    assert doc_hash.hex() == _text(here / f"docHash{suffix}.txt").strip()
    combined = suites.hash_data(unsecured, options, vector_loader)
    assert combined == proof_hash + doc_hash
    assert combined.hex() == _text(here / f"combinedHash{suffix}.txt").strip()

    signature = secret.sign(combined)  # Ed25519 is deterministic
    assert signature.hex() == _text(here / f"sigHex{suffix}.txt").strip()
    assert "z" + keys.b58encode(signature) == _text(here / f"sigBTC58{suffix}.txt").strip()

    signed = suites.sign(
        unsigned, secret, method, suite=suite, created=created, loader=vector_loader
    )
    assert json.dumps(signed, indent=2) == _text(here / f"signed{suffix}.json").rstrip("\n")

    published = read_json(here / f"signed{suffix}.json")
    # the vectors' issuers are not the signing did:key, so the issuer binding is not checked
    result = suites.verify(published, loader=vector_loader, check_controller=False)
    assert result.verified, result.error
    assert result.proof_type == suite
    tampered = copy.deepcopy(published)
    tampered["name"] = tampered.get("name", "") + "!"
    assert not suites.verify(tampered, loader=vector_loader, check_controller=False).verified


def test_multikey_and_did_key() -> None:
    secret = Ed25519PrivateKey.generate()
    public = secret.public_key()
    mb = keys.public_multikey(public)
    assert mb.startswith("z6Mk")
    assert keys.public_from_multikey(mb) == public
    assert keys.private_from_multikey(keys.secret_multikey(secret)).public_key() == public
    assert keys.did_key(public) == f"did:key:{mb}"
    resolved = keys.resolve_did_key(keys.did_key_method(public))
    assert resolved.public_key == public and resolved.controller == f"did:key:{mb}"
    for bad in ("did:key:zQ3s", f"did:key:{mb}#z6Mkother", "did:web:example.org"):
        with pytest.raises(keys.KeyFormatError):
            keys.resolve_did_key(bad)
    for raw in (b"", b"\0\0\x01", bytes(range(256))):
        assert keys.b58decode(keys.b58encode(raw)) == raw


# -- DIVOC's signed samples (2018 suites) --------------------------------------------------------

DIVOC_SAMPLES = {
    "Ed25519Signature2018": "ed25519-signed-sample.extracted.json",
    "RsaSignature2018": "rsa-signed-sample.extracted.json",
}


def _divoc_key(suite: str) -> keys.PublicKey:
    if suite == "Ed25519Signature2018":
        return keys.ed25519_from_base58(_text(DIVOC / "ed25519-sample-public.base58").strip())
    key = load_pem_public_key((DIVOC / "rsa-sample-public.pem").read_bytes())
    assert isinstance(key, RSAPublicKey)
    return key


def _verify_divoc(credential: dict[str, Any], suite: str) -> VerificationResult:
    """Verify with the published key of the sample signed with `suite` (its `did:india`)."""
    resolver = keys.static_resolver({"did:india": ResolvedKey(_divoc_key(suite), None)}, None)
    return suites.verify(credential, resolver)


@pytest.mark.parametrize("suite", list(DIVOC_SAMPLES))
def test_divoc_samples_verify(suite: str) -> None:
    result = _verify_divoc(read_json(DIVOC / DIVOC_SAMPLES[suite]), suite)
    assert result.verified, result.error
    assert result.proof_type == suite
    assert result.verification_method == "did:india"


def _tamper_name(c: dict[str, Any]) -> None:
    c["credentialSubject"]["name"] = "Bhaya Mitra Jr"


def _tamper_issuance_date(c: dict[str, Any]) -> None:
    c["issuanceDate"] = c["issuanceDate"].replace("2021", "2022")


def _tamper_vaccination_date(c: dict[str, Any]) -> None:
    c["evidence"][0]["date"] = "2020-12-03T19:21:18.646Z"


def _tamper_proof_created(c: dict[str, Any]) -> None:
    c["proof"]["created"] = "2021-09-01T00:00:00Z"


def _tamper_proof_signature(c: dict[str, Any]) -> None:
    jws = c["proof"]["jws"]
    c["proof"]["jws"] = jws[:-4] + ("AAAA" if not jws.endswith("AAAA") else "BBBB")


def _tamper_added_field(c: dict[str, Any]) -> None:
    c["credentialSubject"]["dob"] = "1995-01-01"


TAMPERINGS = {
    "name": _tamper_name,
    "issuance-date": _tamper_issuance_date,
    "vaccination-date": _tamper_vaccination_date,
    "proof-created": _tamper_proof_created,
    "proof-signature": _tamper_proof_signature,
    "added-undefined-field": _tamper_added_field,
}


@pytest.mark.parametrize("tamper", list(TAMPERINGS))
@pytest.mark.parametrize("suite", list(DIVOC_SAMPLES))
def test_tampered_divoc_samples_fail(suite: str, tamper: str) -> None:
    credential = read_json(DIVOC / DIVOC_SAMPLES[suite])
    TAMPERINGS[tamper](credential)
    result = _verify_divoc(credential, suite)
    assert not result.verified
    if tamper == "added-undefined-field":
        assert "'dob'" in (result.error or "")


def test_divoc_sample_fails_with_the_other_key() -> None:
    credential = read_json(DIVOC / DIVOC_SAMPLES["Ed25519Signature2018"])
    other = ResolvedKey(Ed25519PrivateKey.generate().public_key(), None)
    assert not suites.verify(credential, keys.static_resolver({"did:india": other})).verified


# -- our own credentials -----------------------------------------------------------------------


@pytest.mark.parametrize("suite", suites.SUITES)
def test_own_credential_signs_and_verifies(
    suite: str, issuer_key: Ed25519PrivateKey, credential: dict[str, Any]
) -> None:
    method = keys.did_key_method(issuer_key.public_key())
    signed = suites.sign(credential, issuer_key, method, suite=suite)
    assert credential.get("proof") is None  # the input is not changed
    result = suites.verify(signed)
    assert result.verified, result.error
    assert result.controller == credential["issuer"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", signed["proof"]["created"])
    assert signed["proof"]["proofValue"].startswith("z")


def _other_issuer_method(c: dict[str, Any]) -> None:
    other = Ed25519PrivateKey.generate().public_key()
    c["proof"]["verificationMethod"] = keys.did_key_method(other)


OWN_TAMPERINGS = {
    "name": lambda c: c["credentialSubject"].update(name="Someone Else"),
    "dose": lambda c: c["evidence"][0].update(dose=2),
    "valid-from": lambda c: c.update(validFrom="2025-03-01T10:00:00Z"),
    "issuer": lambda c: c.update(issuer=keys.did_key(Ed25519PrivateKey.generate().public_key())),
    "nested-address": lambda c: c["evidence"][0]["facility"]["address"].update(city="Mysuru"),
    "proof-created": lambda c: c["proof"].update(created="2030-01-01T00:00:00Z"),
    "proof-value": lambda c: c["proof"].update(
        proofValue=c["proof"]["proofValue"][:-3]
        + ("111" if c["proof"]["proofValue"][-3:] != "111" else "222")
    ),
    "proof-method": _other_issuer_method,
    "proof-purpose": lambda c: c["proof"].update(proofPurpose="authentication"),
    "added-undefined-field": lambda c: c["credentialSubject"].update(dob="1995-01-01"),
    "removed-field": lambda c: c["credentialSubject"].pop("gender"),
}


@pytest.mark.parametrize("tamper", list(OWN_TAMPERINGS))
@pytest.mark.parametrize("suite", suites.SUITES)
def test_tampered_own_credential_fails(
    suite: str, tamper: str, issuer_key: Ed25519PrivateKey, credential: dict[str, Any]
) -> None:
    method = keys.did_key_method(issuer_key.public_key())
    signed = suites.sign(credential, issuer_key, method, suite=suite)
    OWN_TAMPERINGS[tamper](signed)
    result = suites.verify(signed)
    assert not result.verified
    assert result.error


def test_sign_refuses_an_undefined_term(issuer_key: Ed25519PrivateKey) -> None:
    credential = vaccination_credential(keys.did_key(issuer_key.public_key()))
    credential["evidence"][0]["lotExpiry"] = "2025-01-01"
    with pytest.raises(UndefinedTermError, match="lotExpiry"):
        suites.sign(credential, issuer_key, keys.did_key_method(issuer_key.public_key()))


def test_vc_v1_credential_gets_the_data_integrity_context(issuer_key: Ed25519PrivateKey) -> None:
    did = keys.did_key(issuer_key.public_key())
    credential = {
        "@context": [CREDENTIALS_V1_URL, "https://divoc.dev/credentials/vaccination/v1"],
        "type": ["VerifiableCredential", "ProofOfVaccinationCredential"],
        "issuer": did,
        "issuanceDate": "2024-01-01T00:00:00Z",
        "credentialSubject": {"type": "Person", "id": "did:example:1", "name": "A"},
        "nonTransferable": "true",
    }
    signed = suites.sign(credential, issuer_key, keys.did_key_method(issuer_key.public_key()))
    assert signed["@context"][-1] == DATA_INTEGRITY_V2_URL
    assert suites.verify(signed).verified


def test_verify_never_raises_on_garbage() -> None:
    for garbage in (
        {},
        {"proof": "x"},
        {"proof": {"type": "Unknown"}},
        [],
        {
            "@context": "https://example.com/x",
            "proof": {
                "type": "DataIntegrityProof",
                "cryptosuite": "eddsa-rdfc-2022",
                "proofPurpose": "assertionMethod",
                "verificationMethod": "did:key:z6Mkx",
                "proofValue": "z1",
            },
        },
    ):
        assert not suites.verify(garbage).verified  # type: ignore[arg-type]


# -- property test: random content round-trips, with RDFC-1.0 escaping ---------------------------

# all of Unicode but surrogates, with the C0 controls and DEL made likely
_TEXT = st.text(
    alphabet=st.one_of(
        st.characters(blacklist_categories=("Cs",)),
        st.sampled_from([chr(c) for c in [*range(0x20), 0x7F, 0x80, 0x85, 0x2028, 0xFEFF]]),
    ),
    max_size=24,
)
_STRING_FIELDS = [
    ("credentialSubject", "name"),
    ("credentialSubject", "gender"),
    ("credentialSubject", "refId"),
    ("credentialSubject", "nationality"),
    ("evidence", "batch"),
    ("evidence", "vaccine"),
    ("evidence", "manufacturer"),
    ("evidence", "certificateId"),
]
_ESCAPES = {
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
    '"': '\\"',
    "\\": "\\\\",
}


def _rdfc10_literal(value: str) -> str:
    """RDFC-1.0's canonical string-literal form, character by character (independent of
    `rdfc.escape_literal`)."""
    out = []
    for ch in value:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _place(credential: dict[str, Any], where: str, field: str, value: Any) -> None:
    target = credential["evidence"][0] if where == "evidence" else credential[where]
    target[field] = value


@settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    values=st.lists(_TEXT, min_size=len(_STRING_FIELDS), max_size=len(_STRING_FIELDS)),
    dose=st.integers(min_value=-(2**63), max_value=2**63),
    suite=st.sampled_from(suites.SUITES),
)
def test_random_content_round_trips_with_rdfc10_escaping(
    values: list[str], dose: int, suite: str, issuer_key: Ed25519PrivateKey
) -> None:
    credential = vaccination_credential(keys.did_key(issuer_key.public_key()))
    for (where, field), value in zip(_STRING_FIELDS, values, strict=True):
        _place(credential, where, field, value)
    credential["evidence"][0]["dose"] = dose

    canonical = canonicalize(credential)
    for value in values:
        assert _rdfc10_literal(value) in canonical
    assert re.search(r"[\x00-\x09\x0b-\x1f\x7f]", canonical) is None

    signed = suites.sign(
        credential, issuer_key, keys.did_key_method(issuer_key.public_key()), suite=suite
    )
    signed = json.loads(json.dumps(signed))  # what a holder receives
    result = suites.verify(signed)
    assert result.verified, result.error

    tampered = copy.deepcopy(signed)
    _place(tampered, "credentialSubject", "name", values[0] + "\x00")
    assert not suites.verify(tampered).verified


# -- sort order: RDFC-1.0 (code points) vs rdf-canonize (UTF-16 code units) ---------------------

ORDER_SENSITIVE_NAME = ["\uff01", "\U0001f600"]  # U+FF01 < U+1F600, but 0xFF01 > 0xD83D


def test_sign_refuses_a_credential_whose_canonical_form_depends_on_sort_order(
    issuer_key: Ed25519PrivateKey, credential: dict[str, Any]
) -> None:
    credential["credentialSubject"]["name"] = ORDER_SENSITIVE_NAME
    method = keys.did_key_method(issuer_key.public_key())
    with pytest.raises(suites.SigningError, match="sort order"):
        suites.sign(credential, issuer_key, method)
    # the same characters in different properties sort the same either way: signed
    credential["credentialSubject"]["name"] = ORDER_SENSITIVE_NAME[0]
    credential["credentialSubject"]["gender"] = ORDER_SENSITIVE_NAME[1]
    assert suites.verify(suites.sign(credential, issuer_key, method)).verified


def test_verify_accepts_a_signature_over_rdf_canonize_order(
    issuer_key: Ed25519PrivateKey, credential: dict[str, Any]
) -> None:
    """What a JavaScript issuer (rdf-canonize sorts UTF-16 code units) signs still verifies."""
    from open_registry.plugins.certificates.rdfc import UTF16

    credential["credentialSubject"]["name"] = ORDER_SENSITIVE_NAME
    method = keys.did_key_method(issuer_key.public_key())
    unsecured = suites.with_suite_context(credential, suites.EDDSA_RDFC_2022)
    options = suites.proof_options(suites.EDDSA_RDFC_2022, method, suites.now(), "assertionMethod")
    data = suites.hash_data(unsecured, options, order=UTF16)
    assert data != suites.hash_data(unsecured, options)
    signed = {
        **unsecured,
        "proof": {**options, "proofValue": "z" + keys.b58encode(issuer_key.sign(data))},
    }
    assert suites.verify(signed).verified
    signed["credentialSubject"]["name"] = [*ORDER_SENSITIVE_NAME, "x"]
    assert not suites.verify(signed).verified


def test_sign_and_verify_leave_their_input_unchanged(
    issuer_key: Ed25519PrivateKey, credential: dict[str, Any]
) -> None:
    from open_registry.plugins.certificates import shortcut

    before = copy.deepcopy(credential)
    method = keys.did_key_method(issuer_key.public_key())
    for canonicalizer in (None, shortcut.canonicalize):
        signed = suites.sign(credential, issuer_key, method, canonicalizer=canonicalizer)
        assert credential == before
        snapshot = copy.deepcopy(signed)
        assert suites.verify(signed, canonicalizer=canonicalizer).verified
        assert signed == snapshot
    sample = read_json(DIVOC / DIVOC_SAMPLES["RsaSignature2018"])
    snapshot = copy.deepcopy(sample)
    assert _verify_divoc(sample, "RsaSignature2018").verified
    assert sample == snapshot


def test_verify_without_context_fails_cleanly(
    issuer_key: Ed25519PrivateKey, credential: dict[str, Any]
) -> None:
    signed = suites.sign(credential, issuer_key, keys.did_key_method(issuer_key.public_key()))
    del signed["@context"]
    result = suites.verify(signed)
    assert not result.verified and result.error
