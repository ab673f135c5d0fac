"""Verification (never issuance) of the 2018 suites DIVOC signed with: `RsaSignature2018`
(PS256: RSA-PSS, SHA-256, MGF1-SHA-256, 32-byte salt) and `Ed25519Signature2018` (EdDSA).

Both are detached JWS (RFC 7797, `b64: false`) over SHA-256(canonical proof options under the
`https://w3id.org/security/v2` context) + SHA-256(canonical document); the JWS signing input is
ASCII(base64url(header) + ".") followed by those 64 bytes.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from open_registry.plugins.certificates.jsonld import canonicalize
from open_registry.plugins.certificates.loader import SECURITY_V2_URL, StaticDocumentLoader
from open_registry.plugins.certificates.results import VerificationResult, failed

if TYPE_CHECKING:
    from open_registry.plugins.certificates.keys import KeyResolver

RSA_SIGNATURE_2018 = "RsaSignature2018"
ED25519_SIGNATURE_2018 = "Ed25519Signature2018"
SUITES = (RSA_SIGNATURE_2018, ED25519_SIGNATURE_2018)
_ALG = {RSA_SIGNATURE_2018: "PS256", ED25519_SIGNATURE_2018: "EdDSA"}
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verify_data(
    unsecured: dict[str, Any], proof: dict[str, Any], loader: StaticDocumentLoader | None = None
) -> bytes:
    """SHA-256(canonical proof options under security v2) + SHA-256(canonical document)."""
    options = {k: v for k, v in proof.items() if k not in ("jws", "signatureValue", "proofValue")}
    options["@context"] = SECURITY_V2_URL
    canon_options = canonicalize(options, loader).encode("utf-8")
    canon_document = canonicalize(unsecured, loader).encode("utf-8")
    return hashlib.sha256(canon_options).digest() + hashlib.sha256(canon_document).digest()


def verify_2018(
    unsecured: dict[str, Any],
    proof: dict[str, Any],
    resolver: KeyResolver,
    loader: StaticDocumentLoader | None,
    proof_purpose: str,
    check_controller: bool = True,
) -> VerificationResult:
    """Verify a 2018-suite proof of `unsecured` (the credential without `proof`).

    With `check_controller`, the issuer must be the method's controller when one is known."""
    suite = proof.get("type")
    if proof.get("proofPurpose") != proof_purpose:
        return failed(f"proofPurpose is not {proof_purpose!r}", proof)
    jws, method = proof.get("jws"), proof.get("verificationMethod")
    if not isinstance(jws, str) or not isinstance(method, str):
        return failed("the proof needs verificationMethod and jws strings", proof)
    if jws.count(".") != 2:
        return failed("the jws is not a detached JWS (header..signature)", proof)
    header_b64, payload, signature_b64 = jws.split(".")
    if payload:
        return failed("the jws is not a detached JWS (header..signature)", proof)
    try:
        header = json.loads(_b64url_decode(header_b64))
        signature = _b64url_decode(signature_b64)
    except ValueError:
        return failed("the jws header or signature is not valid base64url/JSON", proof)
    if not isinstance(header, dict) or header.get("b64") is not False:
        return failed("the jws header must have b64: false", proof)
    assert suite in _ALG, "suites.verify hands only the 2018 suites to this function"
    if "b64" not in (header.get("crit") or []) or header.get("alg") != _ALG[suite]:
        return failed(f"the jws header must be alg {_ALG[suite]} with crit [b64]", proof)
    resolved = resolver(method)
    # the method may publish several keys (DIVOC names its RSA and Ed25519 keys both
    # `did:india`): each key of the suite's type is tried
    kind = RSAPublicKey if suite == RSA_SIGNATURE_2018 else Ed25519PublicKey
    keys = resolved.candidates(kind)
    if not keys:
        return failed(f"the verification method's key does not fit {suite}", proof)
    issuer = unsecured.get("issuer")
    issuer = issuer.get("id") if isinstance(issuer, dict) else issuer
    if check_controller:
        keys = [k for k in keys if k.controller is None or issuer == k.controller]
        if not keys:
            return failed(
                f"the issuer {issuer!r} is not the controller of the verification method", proof
            )
    data = header_b64.encode("ascii") + b"." + verify_data(unsecured, proof, loader)
    for resolved_key in keys:
        key = resolved_key.public_key
        try:
            if isinstance(key, RSAPublicKey):
                key.verify(signature, data, _PSS, hashes.SHA256())
            else:
                assert isinstance(key, Ed25519PublicKey)
                key.verify(signature, data)
        except InvalidSignature:
            continue
        return VerificationResult(
            verified=True,
            proof_type=suite,
            verification_method=method,
            controller=resolved_key.controller,
        )
    return failed("invalid signature", proof)
