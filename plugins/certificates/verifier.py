"""Verification of a certificate: VALID, REVOKED, SUSPENDED, EXPIRED or INVALID, with the reason.

Checks, in order: the credential has a `credentialSubject` (VCDM 1.1 and 2.0 require one); the
issuer is trusted (this registry's own DIDs, `trusted_issuers`, and the documents in
`trust_dir`); the proof verifies (eddsa-rdfc-2022, Ed25519Signature2020, and DIVOC's
RsaSignature2018 / Ed25519Signature2018), or every proof of a proof set or chain does; the
validity dates; then the credential's status list entries. Status lists this registry publishes
are read from its own database (cached briefly); another issuer's list is looked up in
`trust_dir` (`status-lists/*.json`, signed list credentials saved there), never fetched:
without it the status is reported as not checked. The trust store also holds the trust lists of
other issuers' SMART Health Cards and EU DCC / HCERTs (`trust_dir/shc/`, `trust_dir/dcc/`:
`trust_lists.py`), which `health_formats` verifies those formats against.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import load_pem_public_key

from open_registry.plugins.certificates import shortcut, status, suites
from open_registry.plugins.certificates.keys import (
    KeyFormatError,
    ResolvedKey,
    ed25519_from_base58,
    public_from_multikey,
    resolve_did_key,
)
from open_registry.plugins.certificates.limits import LimitExceeded, VerifyLimits, check_document
from open_registry.plugins.certificates.trust_lists import TrustListError, TrustLists

VALID, REVOKED, SUSPENDED, EXPIRED, INVALID = "VALID", "REVOKED", "SUSPENDED", "EXPIRED", "INVALID"

#: (purpose, list number) -> the list's bits, read from this registry's database
LocalLists = Callable[[str, int], bytes]


@dataclass
class Verdict:
    """What a verifier says about one credential."""

    status: str
    reason: str
    issuer: str | None = None
    credential_id: str | None = None
    checks: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "reason": self.reason,
            "issuer": self.issuer,
            "credentialId": self.credential_id,
            "checks": self.checks,
            "warnings": self.warnings,
        }


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def subject_problem(credential: dict[str, Any]) -> str | None:
    """Why the credential's `credentialSubject` is unusable, or None. VCDM 1.1 and 2.0 require
    the property: an object, or a non-empty list of objects, each making a claim."""
    subject = credential.get("credentialSubject")
    if subject is None:
        return "credentialSubject is required (VC Data Model 1.1 and 2.0)"
    subjects = subject if isinstance(subject, list) else [subject]
    if not subjects:
        return "credentialSubject must hold at least one subject"
    if not all(isinstance(s, dict) for s in subjects):
        return "credentialSubject must be an object or a list of objects"
    if any(not s for s in subjects):
        return "credentialSubject must make a claim (an empty object makes none)"
    return None


def _key_from_document(doc: dict[str, Any]) -> Any:
    if "publicKeyMultibase" in doc:
        return public_from_multikey(doc["publicKeyMultibase"])
    if "publicKeyBase58" in doc:
        return ed25519_from_base58(doc["publicKeyBase58"])
    if "publicKeyPem" in doc:
        return load_pem_public_key(doc["publicKeyPem"].encode())
    raise KeyFormatError(f"verification method {doc.get('id')!r} has no public key I can read")


class TrustStore:
    """Trusted issuers and their keys: our own keystore plus files in `trust_dir`.

    A file is a DID document (`id`, `verificationMethod: [...]`) whose DID is then trusted, or a
    single key (`id` = the verification method, `publicKeyMultibase|Base58|Pem`, and `issuers`:
    the issuer ids it signs for, e.g. DIVOC's `did:india` key for `https://divoc.dev/`). Several
    files (or entries) may name the same verification method id with keys of different types:
    each is kept, and a proof is checked with the keys of its suite's type. `lists` are the
    card issuers and EU DCC document signers of `trust_dir/shc/` and `trust_dir/dcc/`."""

    def __init__(
        self, own: Any, trusted_issuers: tuple[str, ...] = (), trust_dir: Path | None = None
    ):
        self.own = own  # a KeyStore
        self.extra_issuers = set(trusted_issuers)
        self.methods: dict[str, ResolvedKey] = {}
        self.status_lists: dict[str, dict[str, Any]] = {}
        self.lists = TrustLists()
        if trust_dir is not None:
            self._load(Path(trust_dir))
            try:
                self.lists = TrustLists.load(Path(trust_dir))
            except TrustListError as exc:
                raise ValueError(f"trust_dir {trust_dir}: {exc}") from None

    def _load(self, folder: Path) -> None:
        if not folder.is_dir():
            raise ValueError(f"trust_dir {folder} is not a folder")
        for path in sorted(folder.glob("*.json")):
            try:
                doc = json.loads(path.read_text())
                self._add(doc)
            except (ValueError, KeyError, TypeError, KeyFormatError) as exc:
                raise ValueError(f"{path}: not a usable DID document or key: {exc}") from None
        for path in sorted((folder / "status-lists").glob("*.json")):
            doc = json.loads(path.read_text())
            self.status_lists[doc["id"]] = doc

    def _add(self, doc: dict[str, Any]) -> None:
        if "verificationMethod" in doc:
            did = doc["id"]
            self.extra_issuers.add(did)
            for vm in doc["verificationMethod"]:
                vid = vm["id"] if "#" in vm["id"] or ":" in vm["id"] else f"{did}{vm['id']}"
                if vid.startswith("#"):
                    vid = did + vid
                self._method(vid, ResolvedKey(_key_from_document(vm), vm.get("controller", did)))
        else:
            self._method(doc["id"], ResolvedKey(_key_from_document(doc), doc.get("controller")))
            self.extra_issuers.update(doc.get("issuers", []))

    def _method(self, method: str, key: ResolvedKey) -> None:
        """Publish `key` under `method`; a second key under the same id (DIVOC's `did:india`
        for its RSA and its Ed25519 key) is kept beside the first, and a proof tries each key
        of the type its suite needs."""
        known = self.methods.get(method)
        self.methods[method] = key if known is None else known.adding(key)

    def trusted(self, issuer: str | None) -> bool:
        return issuer is not None and (issuer in self.extra_issuers or issuer in self.own.issuers())

    def resolve(self, method: str) -> ResolvedKey:
        if method in self.methods:
            return self.methods[method]
        did = method.partition("#")[0]
        if did.startswith("did:key:"):
            return resolve_did_key(method)
        return self.own.resolve(method)


class Verifier:
    """Verifies credentials against a trust store and status lists."""

    def __init__(
        self,
        trust: TrustStore,
        *,
        local_prefix: str | None = None,
        local_lists: LocalLists | None = None,
        cache_seconds: float = 5.0,
    ):
        self.trust = trust
        self.local_prefix = local_prefix
        self.local_lists = local_lists
        self.cache_seconds = cache_seconds
        self._cache: dict[tuple[str, int], tuple[float, bytes]] = {}
        self._lock = threading.Lock()

    def forget_lists(self) -> None:
        """Drop cached status lists (after this process changed a certificate's status)."""
        with self._lock:
            self._cache.clear()

    def _local_bits(self, purpose: str, number: int) -> bytes:
        assert self.local_lists is not None
        key = (purpose, number)
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and now - cached[0] < self.cache_seconds:
            return cached[1]
        bits = self.local_lists(purpose, number)
        with self._lock:
            self._cache[key] = (now, bits)
        return bits

    def _bits_for(self, url: str, purpose: str, warnings: list[str]) -> bytes | None:
        prefix = self.local_prefix
        if prefix and self.local_lists is not None and url.startswith(prefix):
            tail = url[len(prefix) :].strip("/").split("/")
            if len(tail) == 2 and tail[0] == purpose:
                return self._local_bits(purpose, status.list_number(tail[1]))
            raise status.StatusListError(f"{url} is not one of this registry's status lists")
        doc = self.trust.status_lists.get(url)
        if doc is None:
            warnings.append(f"status list {url} is not available offline; status not checked")
            return None
        result = suites.verify(doc, self.trust.resolve)
        if not result.verified:
            raise status.StatusListError(f"the status list {url} does not verify: {result.error}")
        subject = doc.get("credentialSubject", {})
        return status.decode(subject.get("encodedList"))

    def verify(
        self, credential: Any, *, now: datetime | None = None, limits: VerifyLimits | None = None
    ) -> Verdict:
        """The verdict on one credential; never raises for bad input. With `limits`, a
        credential over them is INVALID before any JSON-LD work (the HTTP routes refuse such
        bodies with a 4xx first: `limits.py`)."""
        if not isinstance(credential, dict):
            return Verdict(INVALID, "a credential is a JSON object")
        if limits is not None:
            try:
                check_document(credential, limits)
            except LimitExceeded as exc:
                return Verdict(INVALID, str(exc), checks={"limits": False})
        try:
            return self._verify(credential, now)
        except RecursionError:  # pyld and the JSON-LD checks recurse over the document
            return Verdict(
                INVALID,
                "the credential nests too deeply to process (limit max_verify_depth)",
                checks={"limits": False},
            )

    def _verify(self, credential: dict[str, Any], now: datetime | None) -> Verdict:
        issuer = credential.get("issuer")
        issuer = issuer.get("id") if isinstance(issuer, dict) else issuer
        issuer = issuer if isinstance(issuer, str) else None
        cid = credential.get("id") if isinstance(credential.get("id"), str) else None
        verdict = Verdict(VALID, "", issuer=issuer, credential_id=cid)
        checks = verdict.checks
        problem = subject_problem(credential)
        if problem is not None:
            checks["credentialSubject"] = False
            verdict.status, verdict.reason = INVALID, problem
            return verdict
        if not self.trust.trusted(issuer):
            checks["issuer"] = False
            verdict.status, verdict.reason = INVALID, f"the issuer {issuer!r} is not trusted"
            return verdict
        checks["issuer"] = True
        result = suites.verify(credential, self.trust.resolve, canonicalizer=shortcut.canonicalize)
        checks["signature"] = result.verified
        if not result.verified:
            verdict.status, verdict.reason = INVALID, f"the signature: {result.error}"
            return verdict
        now = now or datetime.now(UTC)
        start = _parse_time(credential.get("validFrom") or credential.get("issuanceDate"))
        end = _parse_time(credential.get("validUntil") or credential.get("expirationDate"))
        if start is not None and start > now:
            checks["dates"] = False
            verdict.status, verdict.reason = INVALID, f"not valid before {start.isoformat()}"
            return verdict
        if end is not None and end < now:
            checks["dates"] = False
            verdict.status, verdict.reason = EXPIRED, f"expired on {end.isoformat()}"
            return verdict
        checks["dates"] = True
        try:
            for entry in status.entries(credential):
                purpose = entry.get("statusPurpose")
                if purpose not in status.PURPOSES:
                    verdict.warnings.append(f"status purpose {purpose!r} not checked")
                    continue
                bits = self._bits_for(entry["statusListCredential"], purpose, verdict.warnings)
                if bits is None:
                    continue
                flagged = status.bit(bits, entry["statusListIndex"])
                checks[purpose] = not flagged
                if flagged:
                    verdict.status = REVOKED if purpose == "revocation" else SUSPENDED
                    verdict.reason = f"the certificate is {verdict.status.lower()}"
                    if verdict.status == REVOKED:
                        return verdict
        except status.StatusListError as exc:
            checks["status"] = False
            verdict.status, verdict.reason = INVALID, f"credentialStatus: {exc}"
            return verdict
        if verdict.status == VALID and verdict.warnings:
            # honest about what could not be checked (another issuer's list not saved here)
            verdict.reason = "the signature, issuer and dates are good; " + "; ".join(
                verdict.warnings
            )
        elif verdict.status == VALID:
            verdict.reason = "the signature, issuer, dates and status are all good"
        return verdict
