"""Data Integrity proofs: `eddsa-rdfc-2022` (DataIntegrityProof) and `Ed25519Signature2020`.

Both sign the same bytes: hashData = SHA-256(canonical proof options, carrying the document's
`@context`) + SHA-256(canonical document without `proof`), signed with pure Ed25519;
`proofValue` = `z` + base58btc(signature). `verify` also dispatches DIVOC's 2018 suites
(`RsaSignature2018`, `Ed25519Signature2018`) to `legacy.py` (verification only).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from open_registry.plugins.certificates import legacy
from open_registry.plugins.certificates.jsonld import (
    CanonicalizationError,
    JsonLdProcessingError,
    UnknownContextError,
    canonicalize,
)
from open_registry.plugins.certificates.keys import (
    KeyFormatError,
    KeyResolver,
    b58encode,
    multibase_decode,
    resolve_did_key,
)
from open_registry.plugins.certificates.loader import (
    CREDENTIALS_V2_URL,
    DATA_INTEGRITY_V2_URL,
    ED25519_2020_URL,
    StaticDocumentLoader,
)
from open_registry.plugins.certificates.rdfc import CODE_POINT, UTF16, order_sensitive
from open_registry.plugins.certificates.results import SigningError, VerificationResult, failed

EDDSA_RDFC_2022 = "eddsa-rdfc-2022"
ED25519_SIGNATURE_2020 = "Ed25519Signature2020"
SUITES = (EDDSA_RDFC_2022, ED25519_SIGNATURE_2020)
#: the most proofs of one proof set (or chain) a verification checks
MAX_PROOFS = 8

# canonical N-Quads of a JSON-LD document under a loader (None: the shipped contexts): a faster
# equivalent of `jsonld.canonicalize` (`shortcut.canonicalize`); it must give the same bytes
Canonicalizer = Callable[[dict[str, Any], StaticDocumentLoader | None], str]


def now() -> str:
    """The current time as a proof's `created` (UTC, whole seconds)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _contexts(document: dict[str, Any]) -> list[Any]:
    ctx = document.get("@context")
    if ctx is None:
        raise SigningError("the document has no @context")
    return list(ctx) if isinstance(ctx, list) else [ctx]


def with_suite_context(document: dict[str, Any], suite: str) -> dict[str, Any]:
    """A shallow copy of `document` whose @context defines the suite's proof terms."""
    contexts = _contexts(document)
    if suite == EDDSA_RDFC_2022:
        needed = None if CREDENTIALS_V2_URL in contexts else DATA_INTEGRITY_V2_URL
    elif suite == ED25519_SIGNATURE_2020:
        needed = ED25519_2020_URL
    else:
        raise SigningError(f"unsupported suite {suite!r} (one of {', '.join(SUITES)})")
    if needed is None or needed in contexts:
        return dict(document)
    return {**document, "@context": [*contexts, needed]}


def proof_options(
    suite: str, verification_method: str, created: str, proof_purpose: str
) -> dict[str, Any]:
    """The proof without `proofValue` (in the key order of the W3C test vectors)."""
    if suite == EDDSA_RDFC_2022:
        head: dict[str, Any] = {"type": "DataIntegrityProof", "cryptosuite": EDDSA_RDFC_2022}
    elif suite == ED25519_SIGNATURE_2020:
        head = {"type": ED25519_SIGNATURE_2020}
    else:
        raise SigningError(f"unsupported suite {suite!r} (one of {', '.join(SUITES)})")
    return {
        **head,
        "created": created,
        "verificationMethod": verification_method,
        "proofPurpose": proof_purpose,
    }


def _sha256(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def canonical_texts(
    unsecured: dict[str, Any],
    options: dict[str, Any],
    loader: StaticDocumentLoader | None = None,
    canonicalizer: Canonicalizer | None = None,
    order: str = CODE_POINT,
) -> tuple[str, str]:
    """Canonical N-Quads of the proof options (with the document's @context) and the document."""
    config = {**options, "@context": unsecured["@context"]}
    if canonicalizer is not None and order == CODE_POINT:
        return canonicalizer(config, loader), canonicalizer(unsecured, loader)
    return canonicalize(config, loader, order=order), canonicalize(unsecured, loader, order=order)


def hash_data(
    unsecured: dict[str, Any],
    options: dict[str, Any],
    loader: StaticDocumentLoader | None = None,
    canonicalizer: Canonicalizer | None = None,
    order: str = CODE_POINT,
) -> bytes:
    """SHA-256(canonical proof options with the document's @context) + SHA-256(canonical doc)."""
    proof_text, document_text = canonical_texts(unsecured, options, loader, canonicalizer, order)
    return _sha256(proof_text) + _sha256(document_text)


def sign(
    document: dict[str, Any],
    private_key: Ed25519PrivateKey,
    verification_method: str,
    *,
    suite: str = EDDSA_RDFC_2022,
    created: str | None = None,
    proof_purpose: str = "assertionMethod",
    loader: StaticDocumentLoader | None = None,
    canonicalizer: Canonicalizer | None = None,
) -> dict[str, Any]:
    """A signed copy of `document` (its @context completed with the suite's if needed).

    Raises the JSON-LD errors of `jsonld.canonicalize` for a document that cannot be signed
    faithfully (an undefined term, a relative IRI, an unknown context, too much work), and
    `SigningError` for one whose canonical form depends on the implementation's sort order."""
    if "proof" in document:
        raise SigningError("the document already has a proof (proof sets are not supported)")
    unsecured = with_suite_context(document, suite)
    options = proof_options(suite, verification_method, created or now(), proof_purpose)
    texts = canonical_texts(unsecured, options, loader, canonicalizer)
    if (order_sensitive(texts[0]) or order_sensitive(texts[1])) and texts != canonical_texts(
        unsecured, options, loader, order=UTF16
    ):
        raise SigningError(
            "the credential's canonical form depends on the sort order (values mixing characters "
            "U+E000-U+FFFF and above U+FFFF in one multi-valued property): RDFC-1.0 (code point "
            "order) and rdf-canonize (UTF-16 order) would disagree, so it is not signed"
        )
    signature = private_key.sign(_sha256(texts[0]) + _sha256(texts[1]))
    return {**unsecured, "proof": {**options, "proofValue": "z" + b58encode(signature)}}


def _issuer_id(document: dict[str, Any]) -> str | None:
    issuer = document.get("issuer")
    if isinstance(issuer, dict):
        issuer = issuer.get("id")
    return issuer if isinstance(issuer, str) else None


def _valid(key: Ed25519PublicKey, signature: bytes, texts: tuple[str, str]) -> bool:
    try:
        key.verify(signature, _sha256(texts[0]) + _sha256(texts[1]))
    except InvalidSignature:
        return False
    return True


def _verify_data_integrity(
    unsecured: dict[str, Any],
    proof: dict[str, Any],
    resolver: KeyResolver,
    loader: StaticDocumentLoader | None,
    proof_purpose: str,
    check_controller: bool,
    canonicalizer: Canonicalizer | None,
) -> VerificationResult:
    suite = proof.get("cryptosuite") if proof.get("type") == "DataIntegrityProof" else None
    if proof.get("type") != ED25519_SIGNATURE_2020 and suite != EDDSA_RDFC_2022:
        return failed(f"unsupported proof type {proof.get('type')!r}/{suite!r}", proof)
    if proof.get("proofPurpose") != proof_purpose:
        return failed(f"proofPurpose is not {proof_purpose!r}", proof)
    method = proof.get("verificationMethod")
    value = proof.get("proofValue")
    if not isinstance(method, str) or not isinstance(value, str):
        return failed("the proof needs verificationMethod and proofValue strings", proof)
    options = {k: v for k, v in proof.items() if k != "proofValue"}
    if "@context" in options:
        own = options.pop("@context")
        own = own if isinstance(own, list) else [own]
        if _contexts(unsecured)[: len(own)] != own:
            return failed("the proof's @context does not start the document's", proof)
    try:
        signature = multibase_decode(value)
        resolved = resolver(method)
    except KeyFormatError as exc:
        return failed(str(exc), proof)
    # the method may publish several keys (DIVOC's `did:india`): each Ed25519 one is tried
    keys = resolved.candidates(Ed25519PublicKey)
    if not keys:
        return failed("the verification method is not an Ed25519 key", proof)
    issuer = _issuer_id(unsecured)
    if check_controller:
        keys = [k for k in keys if k.controller is None or k.controller == issuer]
        if not keys:
            return failed(
                f"the issuer {issuer!r} is not the controller of the verification method", proof
            )
    texts = canonical_texts(unsecured, options, loader, canonicalizer)
    # a signer sorting as rdf-canonize does (UTF-16 code units) may have signed the other order;
    # both describe the same RDF dataset, so either signature binds the same content
    other_order = order_sensitive(texts[0]) or order_sensitive(texts[1])
    utf16: tuple[str, str] | None = None
    for key in keys:
        assert isinstance(key.public_key, Ed25519PublicKey)
        valid = _valid(key.public_key, signature, texts)
        if not valid and other_order:
            utf16 = utf16 or canonical_texts(unsecured, options, loader, order=UTF16)
            valid = _valid(key.public_key, signature, utf16)
        if valid:
            return VerificationResult(
                verified=True,
                proof_type=suite or ED25519_SIGNATURE_2020,
                verification_method=method,
                controller=key.controller,
            )
    return failed("invalid signature", proof)


def verify(
    document: dict[str, Any],
    resolver: KeyResolver = resolve_did_key,
    *,
    loader: StaticDocumentLoader | None = None,
    proof_purpose: str = "assertionMethod",
    check_controller: bool = True,
    canonicalizer: Canonicalizer | None = None,
) -> VerificationResult:
    """Verify a credential's proof, or every proof of a proof set or chain (a `proof` array:
    Data Integrity 1.0, "Verify Proof Sets and Chains": the document verifies only when each
    of its proofs does); never raises for bad input (the result says why).

    `resolver` maps a verificationMethod to its public key and controller (did:key by default).
    With `check_controller`, the credential's issuer must be that controller (when known)."""
    proof = document.get("proof") if isinstance(document, dict) else None
    if isinstance(proof, list):
        return _verify_proof_set(
            document, proof, resolver, loader, proof_purpose, check_controller, canonicalizer
        )
    if not isinstance(proof, dict):
        return failed("the credential has no proof object (a proof, or a list of them)")
    unsecured = {k: v for k, v in document.items() if k != "proof"}  # read, never changed
    return _verify_proof(
        unsecured, proof, resolver, loader, proof_purpose, check_controller, canonicalizer
    )


def _verify_proof(
    unsecured: dict[str, Any],
    proof: dict[str, Any],
    resolver: KeyResolver,
    loader: StaticDocumentLoader | None,
    proof_purpose: str,
    check_controller: bool,
    canonicalizer: Canonicalizer | None,
) -> VerificationResult:
    """One proof of `unsecured` (the document without the proof being checked)."""
    try:
        if proof.get("type") in legacy.SUITES:
            return legacy.verify_2018(
                unsecured, proof, resolver, loader, proof_purpose, check_controller
            )
        return _verify_data_integrity(
            unsecured, proof, resolver, loader, proof_purpose, check_controller, canonicalizer
        )
    except (JsonLdProcessingError, UnknownContextError, CanonicalizationError) as exc:
        return failed(str(exc), proof)
    except (KeyFormatError, SigningError, TypeError, ValueError, KeyError, AttributeError) as exc:
        return failed(f"malformed credential or proof: {exc!r}", proof)


def _previous(proof: dict[str, Any]) -> list[Any]:
    previous = proof.get("previousProof")
    if previous is None:
        return []
    return previous if isinstance(previous, list) else [previous]


def _verify_proof_set(
    document: dict[str, Any],
    proofs: list[Any],
    resolver: KeyResolver,
    loader: StaticDocumentLoader | None,
    proof_purpose: str,
    check_controller: bool,
    canonicalizer: Canonicalizer | None,
) -> VerificationResult:
    """Data Integrity 1.0 section 4.5: every proof of the set verifies over the document without
    `proof`; a proof naming `previousProof` (a chain) verifies over the document carrying the
    proofs it names, each of which must be in the set (else PROOF_VERIFICATION_ERROR)."""
    if not proofs:
        return failed("the credential's proof set is empty")
    if len(proofs) > MAX_PROOFS:
        return failed(f"the proof set holds {len(proofs)} proofs; at most {MAX_PROOFS} are checked")
    if not all(isinstance(p, dict) for p in proofs):
        return failed("every member of the proof set must be a proof object")
    by_id = {p["id"]: p for p in proofs if isinstance(p.get("id"), str)}
    unsecured = {k: v for k, v in document.items() if k != "proof"}
    # the document's canonical form is the same for every proof of the set: made once
    memo = _memo(canonicalizer, unsecured) if canonicalizer is not None else None
    results: list[VerificationResult] = []
    for n, proof in enumerate(proofs, 1):
        previous = _previous(proof)
        if any(not isinstance(i, str) or i not in by_id for i in previous):
            missing = next(i for i in previous if not isinstance(i, str) or i not in by_id)
            return failed(
                f"proof {n} of {len(proofs)}: its previousProof {missing!r} is not a proof of "
                "this set (PROOF_VERIFICATION_ERROR)",
                proof,
            )
        if previous:  # a chained proof signed the document holding the proofs it follows
            base = {**unsecured, "proof": [by_id[i] for i in previous]}
            result = _verify_proof(
                base, proof, resolver, loader, proof_purpose, check_controller, canonicalizer
            )
        else:
            result = _verify_proof(
                unsecured, proof, resolver, loader, proof_purpose, check_controller, memo
            )
        if not result.verified:
            return replace(result, error=f"proof {n} of {len(proofs)}: {result.error}")
        results.append(result)
    first = results[0]
    return VerificationResult(
        verified=True,
        proof_type=", ".join(dict.fromkeys(r.proof_type or "?" for r in results)),
        verification_method=first.verification_method,
        controller=first.controller,
    )


def _memo(canonicalizer: Canonicalizer, shared: dict[str, Any]) -> Canonicalizer:
    """`canonicalizer`, computing the canonical form of the `shared` document only once."""
    known: dict[int, str] = {}

    def canonical(document: dict[str, Any], loader: StaticDocumentLoader | None) -> str:
        if document is not shared:
            return canonicalizer(document, loader)
        key = id(loader)
        if key not in known:
            known[key] = canonicalizer(document, loader)
        return known[key]

    return canonical
