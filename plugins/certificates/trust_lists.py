"""Trust lists for other issuers' SMART Health Cards and EU DCC / HCERTs, read offline from
`trust_dir` (never fetched at run time):

- `trust_dir/shc/issuers.json` maps each trusted card issuer (`iss`, the URL in its cards) to a
  JWK set saved beside it, as the issuer serves it at `<iss>/.well-known/jwks.json`:
  `{"https://cards.example.org": "cards.example.org.json"}`. Its ES256 (P-256) keys verify the
  issuer's cards by `kid`.
- `trust_dir/shc/crl/<kid>.json`: a Card Revocation List saved as the issuer serves it at
  `<iss>/.well-known/crl/<kid>.json` (`{"kid", "method": "rid", "ctr", "rids"}`). A card whose
  `rid` it lists is REVOKED (a `rid.<timestamp>` entry: only cards with `nbf` before it). Without
  one, the verdict says revocation was not checked.
- `trust_dir/dcc/`: EU DCC document signers. X.509 Document Signer Certificates (`*.pem`, `*.crt`,
  `*.cer`, `*.der`; the COSE `kid` is the first 8 bytes of the SHA-256 of the DER certificate),
  public keys (`PUBLIC KEY` PEM; the `kid` is the first 8 bytes of the SHA-256 of the
  SubjectPublicKeyInfo, as this registry and the WHO GDHCN's raw keys make it), and JSON trust
  lists: the EU gateway's export (a list of `{"kid", "country", "certificateType", "rawData"}`,
  or `{"certificates": [...]}`), entries with a raw key (`publicKeyPem`, or a JWK's `x`/`y`)
  and an optional `kid` (base64 of 8 bytes), or a JWK set (`{"keys": [...]}`, e.g. another
  registry's `/.well-known/jwks.json`: its HCERT kids are made from the keys). A certificate's
  country (subject `C`), validity and EU DCC extended key usages (test / vaccination /
  recovery) are kept and checked against each HCERT it verifies.

Only ES256 (P-256) keys verify cards and HCERTs here; other keys in a trust list (RSA document
signers of PS256 issuers) are skipped and logged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID, NameOID

from open_registry.plugins.certificates.es256 import (
    b64url,
    hcert_kid,
    key_from_jwk,
    thumbprint,
)

log = logging.getLogger(__name__)

SHC_FOLDER = "shc"
SHC_INDEX = "issuers.json"
CRL_FOLDER = "crl"
DCC_FOLDER = "dcc"
CERT_SUFFIXES = (".pem", ".crt", ".cer", ".der")
#: EU DCC extended key usages of a document signer: what kind of certificate it may sign (both
#: spellings are in use: the EU's and the early `1.3.6.1.4.1.0.1847...` one)
DCC_KEY_USAGES = {
    f"1.3.6.1.4.1.{infix}1847.2021.1.{n}": kind
    for infix in ("", "0.")
    for n, kind in ((1, "t"), (2, "v"), (3, "r"))
}
DCC_KINDS = {"v": "vaccination", "t": "test", "r": "recovery"}


class TrustListError(ValueError):
    """A trust list file that cannot be used; the message names the file and why."""


# -- SMART Health Cards ------------------------------------------------------------------------


@dataclass(frozen=True)
class CardRevocations:
    """A key's Card Revocation List: revoked `rid`s, each with the time before which cards are
    revoked (None: every card with that rid)."""

    kid: str
    ctr: int
    rids: dict[str, int | None]
    source: str

    def revoked(self, rid: str, nbf: Any) -> bool:
        if rid not in self.rids:
            return False
        until = self.rids[rid]
        return until is None or not isinstance(nbf, int | float) or nbf < until

    def as_bundle(self) -> dict[str, Any]:
        return {
            "ctr": self.ctr,
            "rids": [rid if t is None else f"{rid}.{t}" for rid, t in self.rids.items()],
        }


@dataclass(frozen=True)
class CardKey:
    """One ES256 key of a trusted card issuer."""

    iss: str
    kid: str
    key: ec.EllipticCurvePublicKey
    #: the JWK's `crlVersion`: the issuer publishes a revocation list of this key (None: not)
    crl_version: int | None
    source: str
    crl: CardRevocations | None = None


# -- EU DCC document signers -------------------------------------------------------------------


@dataclass(frozen=True)
class DocumentSigner:
    """A trusted EU DCC document signer: its key and what its certificate limits it to."""

    kid: bytes
    key: ec.EllipticCurvePublicKey
    source: str
    country: str | None = None
    not_before: datetime | None = None
    not_after: datetime | None = None
    #: the EU DCC kinds it may sign (`v`, `t`, `r`); None: any (no EU DCC key usage)
    kinds: frozenset[str] | None = None

    def problem(self, claims: dict[Any, Any], dcc: dict[str, Any]) -> str | None:
        """Why this signer may not have signed an HCERT with these claims, or None."""
        name = f"the document signer {self.kid.hex()} ({self.source})"
        issuer = claims.get(1)
        if self.country and isinstance(issuer, str) and issuer.upper() != self.country.upper():
            return f"{name} signs for {self.country}, but the HCERT's issuer (claim 1) is {issuer}"
        iat = claims.get(6)
        if isinstance(iat, int | float):
            signed = datetime.fromtimestamp(iat, UTC)
            if self.not_before and signed < self.not_before:
                return f"{name} was not valid yet when the HCERT was issued ({signed:%Y-%m-%d})"
            if self.not_after and signed > self.not_after:
                return f"{name} had expired when the HCERT was issued ({signed:%Y-%m-%d})"
        if self.kinds is not None:
            for kind, label in DCC_KINDS.items():
                if dcc.get(kind) and kind not in self.kinds:
                    return f"{name} may not sign {label} certificates (its extended key usage)"
        return None

    def as_bundle(self) -> dict[str, Any]:
        return {
            "kid": b64url(self.kid),
            **_xy(self.key),
            "country": self.country,
            "notBefore": _iso(self.not_before),
            "notAfter": _iso(self.not_after),
            "kinds": None if self.kinds is None else sorted(self.kinds),
        }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%SZ")


def _p256(key: Any) -> ec.EllipticCurvePublicKey | None:
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    return None


def spki_kid(key: ec.EllipticCurvePublicKey) -> bytes:
    """The HCERT `kid` of a raw key: the first 8 bytes of the SHA-256 of its
    SubjectPublicKeyInfo (how this registry makes its own)."""
    return hcert_kid(key)


def certificate_kid(certificate: x509.Certificate) -> bytes:
    """The EU DCC `kid` of a document signer certificate: the first 8 bytes of the SHA-256 of
    the DER certificate."""
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).digest()[:8]


def _signer_of_certificate(
    certificate: x509.Certificate, source: str, country: str | None = None
) -> DocumentSigner | None:
    key = _p256(certificate.public_key())
    if key is None:
        log.warning("%s: document signer is not an ES256 (P-256) key; skipped", source)
        return None
    subject_country = certificate.subject.get_attributes_for_oid(NameOID.COUNTRY_NAME)
    if country is None and subject_country:
        country = str(subject_country[0].value)
    kinds: frozenset[str] | None = None
    try:
        usage = certificate.extensions.get_extension_for_oid(ExtensionOID.EXTENDED_KEY_USAGE)
    except x509.ExtensionNotFound:
        pass
    else:
        assert isinstance(usage.value, x509.ExtendedKeyUsage)
        found = {DCC_KEY_USAGES.get(oid.dotted_string) for oid in usage.value} - {None}
        kinds = frozenset(k for k in found if k) or None
    return DocumentSigner(
        kid=certificate_kid(certificate),
        key=key,
        source=source,
        country=country,
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        kinds=kinds,
    )


def _kid_bytes(value: Any, where: str) -> bytes:
    """An 8-byte COSE kid from base64 (standard or URL-safe, padded or not)."""
    if not isinstance(value, str):
        raise TrustListError(f"{where}: kid must be base64 text")
    text = value.strip().replace("-", "+").replace("_", "/")
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise TrustListError(f"{where}: kid {value[:20]!r} is not base64") from None
    if len(raw) != 8:
        raise TrustListError(f"{where}: kid {value[:20]!r} is {len(raw)} bytes, not 8")
    return raw


def _signer_of_entry(entry: Any, where: str) -> DocumentSigner | None:
    """A document signer from one JSON trust list entry (None: not a DSC, or not ES256)."""
    if not isinstance(entry, dict):
        raise TrustListError(f"{where}: an entry must be a JSON object")
    kind = entry.get("certificateType")
    if kind is not None and kind != "DSC":
        return None  # the gateway's lists also hold CSCA, UPLOAD and AUTHENTICATION certificates
    country = entry.get("country") if isinstance(entry.get("country"), str) else None
    if "rawData" in entry:
        try:
            der = base64.b64decode(str(entry["rawData"]), validate=True)
            certificate = x509.load_der_x509_certificate(der)
        except (binascii.Error, ValueError) as exc:
            message = f"{where}: rawData is not a base64 DER certificate: {exc}"
            raise TrustListError(message) from None
        signer = _signer_of_certificate(certificate, where, country)
        if signer is not None and "kid" in entry and _kid_bytes(entry["kid"], where) != signer.kid:
            raise TrustListError(
                f"{where}: kid {entry['kid']!r} is not the certificate's "
                f"({base64.b64encode(signer.kid).decode()}: SHA-256 of the DER, first 8 bytes)"
            )
        return signer
    try:
        if "publicKeyPem" in entry:
            loaded = serialization.load_pem_public_key(str(entry["publicKeyPem"]).encode())
        elif "x" in entry and "y" in entry:
            loaded = key_from_jwk({"kty": "EC", "crv": "P-256", **entry})
        else:
            raise TrustListError(f"{where}: give rawData, publicKeyPem or a JWK's x and y")
    except (ValueError, TypeError, KeyError) as exc:
        if isinstance(exc, TrustListError):
            raise
        raise TrustListError(f"{where}: not a usable public key: {exc}") from None
    key = _p256(loaded)
    if key is None:
        log.warning("%s: not an ES256 (P-256) key; skipped", where)
        return None
    kid = _kid_bytes(entry["kid"], where) if "kid" in entry else spki_kid(key)
    return DocumentSigner(kid=kid, key=key, source=where, country=country)


def _signers_in(path: Path) -> Iterator[DocumentSigner | None]:
    name = f"{DCC_FOLDER}/{path.name}"
    data = path.read_bytes()
    if path.suffix == ".json":
        try:
            doc = json.loads(data)
        except ValueError as exc:
            raise TrustListError(f"{name}: not JSON: {exc}") from None
        if isinstance(doc, dict) and isinstance(doc.get("keys"), list):
            # a JWK set: its `kid`s name keys for SMART Health Cards; HCERT kids come from the keys
            entries = [{k: v for k, v in jwk.items() if k != "kid"} for jwk in doc["keys"]]
        elif isinstance(doc, dict) and isinstance(doc.get("certificates"), list):
            entries = doc["certificates"]
        elif isinstance(doc, list):
            entries = doc
        else:
            raise TrustListError(
                f'{name}: a trust list is a list of entries, {{"certificates": [...]}} '
                'or a JWK set {"keys": [...]}'
            )
        for n, entry in enumerate(entries):
            if isinstance(entry, dict) and (
                entry.get("kty") not in (None, "EC") or entry.get("crv") not in (None, "P-256")
            ):
                continue  # an RSA, OKP or other curve's JWK: not ES256
            yield _signer_of_entry(entry, f"{name} entry {n}")
        return
    if b"-----BEGIN" not in data:
        try:
            yield _signer_of_certificate(x509.load_der_x509_certificate(data), name)
        except ValueError as exc:
            raise TrustListError(f"{name}: not a DER X.509 certificate: {exc}") from None
        return
    if b"-----BEGIN CERTIFICATE-----" in data:
        try:
            certificates = x509.load_pem_x509_certificates(data)
        except ValueError as exc:
            raise TrustListError(f"{name}: not a PEM X.509 certificate: {exc}") from None
        for certificate in certificates:
            yield _signer_of_certificate(certificate, name)
    if b"-----BEGIN PUBLIC KEY-----" in data:
        yield _signer_of_entry({"publicKeyPem": data.decode("ascii", "replace")}, name)


# -- the trust lists -----------------------------------------------------------------------------


@dataclass
class TrustLists:
    """Other issuers' card keys (by `iss` and `kid`), their revocation lists, and EU DCC document
    signers (by COSE `kid`; several may share one)."""

    cards: dict[str, dict[str, CardKey]] = field(default_factory=dict)
    signers: dict[bytes, list[DocumentSigner]] = field(default_factory=dict)

    @classmethod
    def load(cls, folder: Path | None) -> TrustLists:
        """The lists in `folder` (a `trust_dir`); empty when it has no `shc/` or `dcc/`."""
        lists = cls()
        if folder is None:
            return lists
        if (Path(folder) / SHC_FOLDER).is_dir():
            lists._load_cards(Path(folder) / SHC_FOLDER)
        if (Path(folder) / DCC_FOLDER).is_dir():
            lists._load_signers(Path(folder) / DCC_FOLDER)
        return lists

    # -- loading ---------------------------------------------------------------------------------
    def _load_cards(self, folder: Path) -> None:
        index_path = folder / SHC_INDEX
        if not index_path.exists():
            raise TrustListError(
                f"{SHC_FOLDER}/{SHC_INDEX} is missing: it maps each trusted issuer (iss) to the "
                "JWK set file saved beside it"
            )
        index = _read_json(index_path, f"{SHC_FOLDER}/{SHC_INDEX}")
        if not isinstance(index, dict):
            raise TrustListError(f"{SHC_FOLDER}/{SHC_INDEX}: must map iss URLs to file names")
        for iss, file_name in index.items():
            where = f"{SHC_FOLDER}/{SHC_INDEX} {iss!r}"
            if not iss.startswith(("https://", "http://")):
                raise TrustListError(f"{where}: an issuer (iss) is an http(s) URL")
            if not isinstance(file_name, str) or "/" in file_name or file_name.startswith("."):
                raise TrustListError(f"{where}: name a JWK set file in {SHC_FOLDER}/")
            self._load_jwks(iss.rstrip("/"), folder / file_name, f"{SHC_FOLDER}/{file_name}")
        crls = folder / CRL_FOLDER
        for path in sorted(crls.glob("*.json")) if crls.is_dir() else []:
            self._load_crl(path, f"{SHC_FOLDER}/{CRL_FOLDER}/{path.name}")

    def _load_jwks(self, iss: str, path: Path, where: str) -> None:
        if not path.is_file():
            raise TrustListError(f"{where}: no such file (named in {SHC_FOLDER}/{SHC_INDEX})")
        doc = _read_json(path, where)
        if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
            raise TrustListError(f'{where}: a JWK set is {{"keys": [...]}}')
        keys = self.cards.setdefault(iss, {})
        for jwk in doc["keys"]:
            if not isinstance(jwk, dict) or jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
                continue
            if jwk.get("use", "sig") != "sig" or jwk.get("alg", "ES256") != "ES256":
                continue
            try:
                key = key_from_jwk(jwk)
                kid = str(jwk.get("kid") or thumbprint(jwk))
            except (ValueError, KeyError, TypeError) as exc:
                raise TrustListError(f"{where}: key {jwk.get('kid')!r}: {exc}") from None
            version = jwk.get("crlVersion")
            keys[kid] = CardKey(iss, kid, key, version if isinstance(version, int) else None, where)
        if not keys:
            raise TrustListError(f"{where}: no ES256 (P-256) signing key for {iss}")

    def _load_crl(self, path: Path, where: str) -> None:
        doc = _read_json(path, where)
        if not isinstance(doc, dict) or not isinstance(doc.get("rids"), list):
            raise TrustListError(f"{where}: a Card Revocation List has kid, method, ctr and rids")
        if doc.get("method", "rid") != "rid":
            raise TrustListError(
                f"{where}: revocation method {doc.get('method')!r} is not supported (only 'rid')"
            )
        kid = str(doc.get("kid") or path.stem)
        try:
            ctr = int(doc.get("ctr", 1))
        except (TypeError, ValueError):
            raise TrustListError(f"{where}: ctr must be a whole number") from None
        rids: dict[str, int | None] = {}
        for item in doc["rids"]:
            rid, dot, stamp = str(item).partition(".")
            if dot and not stamp.isdigit():
                raise TrustListError(f"{where}: {item!r} is not rid or rid.<timestamp>")
            rids[rid] = int(stamp) if dot else None
        owners = [keys[kid] for keys in self.cards.values() if kid in keys]
        if not owners:
            raise TrustListError(f"{where}: no trusted issuer's JWK set has key {kid!r}")
        crl = CardRevocations(kid, ctr, rids, where)
        for owner in owners:
            if owner.crl_version is not None and ctr < owner.crl_version:
                log.warning(
                    "%s: ctr %s is older than the issuer's crlVersion %s: save it again",
                    where,
                    ctr,
                    owner.crl_version,
                )
            self.cards[owner.iss][kid] = CardKey(
                owner.iss, kid, owner.key, owner.crl_version, owner.source, crl
            )

    def _load_signers(self, folder: Path) -> None:
        paths = [
            p
            for p in sorted(folder.iterdir())
            if p.is_file() and p.suffix.lower() in (*CERT_SUFFIXES, ".json")
        ]
        for path in paths:
            for signer in _signers_in(path):
                if signer is None:
                    continue
                known = self.signers.setdefault(signer.kid, [])
                if not any(_same_key(s.key, signer.key) for s in known):
                    known.append(signer)

    # -- questions -------------------------------------------------------------------------------
    def card_key(self, iss: str, kid: str) -> CardKey | None:
        return self.cards.get(iss.rstrip("/"), {}).get(kid)

    def untrusted_card(self, iss: str, kid: str) -> str:
        """Why a card of `iss` signed with `kid` is not trusted."""
        keys = self.cards.get(iss.rstrip("/"))
        if keys is None:
            return (
                f"the issuer {iss!r} is not trusted (no JWK set of it in trust_dir "
                f"{SHC_FOLDER}/{SHC_INDEX})"
            )
        source = next(iter(keys.values())).source
        return f"the key {kid!r} of the issuer {iss!r} is not trusted (not in {source})"

    def signers_for(self, kid: bytes) -> list[DocumentSigner]:
        return self.signers.get(kid, [])

    def bundle(self) -> dict[str, Any]:
        """What the verification page needs to check these offline (all of it public)."""
        issuers: dict[str, Any] = {}
        for iss, keys in sorted(self.cards.items()):
            issuers[iss] = {
                "keys": [
                    {
                        "kid": k.kid,
                        **_xy(k.key),
                        "crl": None if k.crl is None else k.crl.as_bundle(),
                    }
                    for k in keys.values()
                ]
            }
        signers = [s.as_bundle() for group in self.signers.values() for s in group]
        return {"cardIssuers": issuers, "dccSigners": signers}


def _xy(key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    numbers = key.public_numbers()
    return {
        "x": b64url(numbers.x.to_bytes(32, "big")),
        "y": b64url(numbers.y.to_bytes(32, "big")),
    }


def _same_key(a: ec.EllipticCurvePublicKey, b: ec.EllipticCurvePublicKey) -> bool:
    return a.public_numbers() == b.public_numbers()


def _read_json(path: Path, where: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise TrustListError(f"{where}: not JSON: {exc}") from None


__all__ = [
    "CardKey",
    "CardRevocations",
    "DocumentSigner",
    "TrustListError",
    "TrustLists",
    "certificate_kid",
    "spki_kid",
]
