"""Test helpers: another issuer, with its own P-256 key, that signs SMART Health Cards and EU DCC
HCERTs through the registry's own signing code (`shc.sign`, `hcert.encode`), a self-signed
document signer certificate for it, a DIVOC deployment signing `Ed25519Signature2018`
certificates, and a `trust_dir` that trusts them."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from open_registry.plugins.certificates import hcert, keys, legacy, shc
from open_registry.plugins.certificates.es256 import b64url, public_jwk, thumbprint
from open_registry.plugins.certificates.fhir import HealthRecord
from open_registry.plugins.certificates.trust_lists import certificate_kid
from tests.plugins.certificates.conftest import DIVOC, read_json, vaccination_credential

CARD_ISSUER = "https://cards.other.example"
EU_CODES = {"euMa": "ORG-100001699", "euMp": "EU/1/21/1529", "euVp": "J07BX03"}
VACCINATION_EKU = x509.ObjectIdentifier("1.3.6.1.4.1.1847.2021.1.2")
TEST_EKU = x509.ObjectIdentifier("1.3.6.1.4.1.1847.2021.1.1")
DIVOC_ISSUER = "https://divoc.dev/"
#: DIVOC's two public keys, both under `did:india`, signing for `https://divoc.dev/`
DIVOC_KEYS = [
    {
        "id": "did:india",
        "publicKeyPem": (DIVOC / "rsa-sample-public.pem").read_text(),
        "issuers": [DIVOC_ISSUER],
    },
    {
        "id": "did:india",
        "publicKeyBase58": (DIVOC / "ed25519-sample-public.base58").read_text().strip(),
        "issuers": [DIVOC_ISSUER],
    },
]
DIVOC_SAMPLE = DIVOC / "ed25519-signed-sample.extracted.json"


def divoc_sample() -> dict[str, Any]:
    """DIVOC's own signed sample certificate (Ed25519Signature2018, issuer https://divoc.dev/)."""
    sample: dict[str, Any] = read_json(DIVOC_SAMPLE)
    return sample


def record(name: str = "Erika Mustermann", issued: datetime | None = None) -> HealthRecord:
    """A vaccination record as another issuer would state it (a COVID-19 vaccine, EU coded)."""
    issued = issued or datetime.now(UTC) - timedelta(days=1)
    credential = vaccination_credential(
        CARD_ISSUER, validFrom=issued.strftime("%Y-%m-%dT%H:%M:%SZ")
    )
    credential["credentialSubject"]["name"] = name
    vaccine = {"icd11Code": "XM9QW8", "code": "CVX-AV", **EU_CODES}
    return HealthRecord.from_credential(str(uuid.uuid4()), credential, vaccine)


def self_signed(
    key: ec.EllipticCurvePrivateKey, country: str, usage: x509.ObjectIdentifier | None
) -> x509.Certificate:
    """A document signer certificate (self-signed: trust lists hold the DSC itself)."""
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, country),
            x509.NameAttribute(NameOID.COMMON_NAME, f"DSC {country} test"),
        ]
    )
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=30))
        .not_valid_after(now + timedelta(days=365))
    )
    if usage is not None:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING, usage]), critical=False
        )
    return builder.sign(key, hashes.SHA256())


@dataclass
class OtherIssuer:
    """A card issuer with two keys (`key` with a saved revocation list, `key2` without one),
    a document signer (DE, vaccinations only) and a DIVOC deployment nobody trusts."""

    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    key2: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    dsc_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    divoc_key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)

    def __post_init__(self) -> None:
        self.dsc = self_signed(self.dsc_key, "DE", VACCINATION_EKU)
        self.revoked = record("Revoked Person")

    @staticmethod
    def kid_of(key: ec.EllipticCurvePrivateKey) -> str:
        return thumbprint(public_jwk(key.public_key()))

    @property
    def kid(self) -> str:
        return self.kid_of(self.key)

    @property
    def dsc_kid(self) -> bytes:
        return certificate_kid(self.dsc)

    def card(
        self, rec: HealthRecord | None = None, *, second_key: bool = False, **claims: Any
    ) -> str:
        """The `shc:/` text of a card of `rec`, signed by this issuer."""
        key = self.key2 if second_key else self.key
        payload = {**shc.payload(rec or record(), CARD_ISSUER), **claims}
        return shc.to_qr_text(shc.sign(payload, self.kid_of(key), key))

    def hcert(
        self,
        rec: HealthRecord | None = None,
        *,
        country: str = "DE",
        key: ec.EllipticCurvePrivateKey | None = None,
        kid: bytes | None = None,
    ) -> str:
        """An `HC1:` text signed by the document signer (or `key` under `kid`)."""
        return hcert.encode(
            rec or record(),
            country=country,
            issuer="Robert Koch-Institut",
            kid=kid or self.dsc_kid,
            key=key or self.dsc_key,
        )

    def divoc_certificate(self, issuer: str = "https://divoc.other-state.example/") -> dict:
        """DIVOC's sample certificate re-issued by another DIVOC deployment: signed with
        `Ed25519Signature2018` (b64: false detached JWS over the legacy verify data)."""
        credential = divoc_sample()
        credential.pop("proof")
        credential["issuer"] = issuer
        credential["credentialSubject"]["name"] = "Anand Rao"
        proof = {
            "type": legacy.ED25519_SIGNATURE_2018,
            "created": "2021-08-27T10:57:57Z",
            "verificationMethod": "did:other-state",
            "proofPurpose": "assertionMethod",
        }
        header = b64url(json.dumps({"alg": "EdDSA", "b64": False, "crit": ["b64"]}).encode())
        data = header.encode("ascii") + b"." + legacy.verify_data(credential, proof)
        signature = b64url(self.divoc_key.sign(data))
        return {**credential, "proof": {**proof, "jws": f"{header}..{signature}"}}

    def divoc_key_document(self) -> dict[str, Any]:
        """The other deployment's key, published without naming any issuer it signs for."""
        return {
            "id": "did:other-state",
            "publicKeyBase58": keys.b58encode(keys.public_raw(self.divoc_key.public_key())),
        }

    def trust_dir(self, folder: Path, *, divoc: bool = True) -> Path:
        """A `trust_dir` trusting DIVOC (its two keys), this issuer's cards (`key` with
        `crlVersion` 2 and a saved revocation list naming `revoked`; `key2` without one) and
        its document signer (a PEM certificate)."""
        folder.mkdir(parents=True, exist_ok=True)
        if divoc:
            for n, doc in enumerate(DIVOC_KEYS):
                (folder / f"divoc-{n}.json").write_text(json.dumps(doc))
            (folder / "other-state.json").write_text(json.dumps(self.divoc_key_document()))
        cards = folder / "shc"
        (cards / "crl").mkdir(parents=True, exist_ok=True)
        jwks = {
            "keys": [
                {**public_jwk(self.key.public_key()), "kid": self.kid, "use": "sig",
                 "alg": "ES256", "crlVersion": 2},
                {**public_jwk(self.key2.public_key()), "kid": self.kid_of(self.key2),
                 "use": "sig", "alg": "ES256"},
            ]
        }  # fmt: skip
        (cards / "other.jwks.json").write_text(json.dumps(jwks))
        (cards / "issuers.json").write_text(json.dumps({CARD_ISSUER: "other.jwks.json"}))
        rid = shc.rid_of(self.revoked.certificate_id)
        crl = {"kid": self.kid, "method": "rid", "ctr": 2, "rids": [rid]}
        (cards / "crl" / f"{self.kid}.json").write_text(json.dumps(crl))
        signers = folder / "dcc"
        signers.mkdir(exist_ok=True)
        pem = self.dsc.public_bytes(serialization.Encoding.PEM)
        (signers / "DE-dsc.pem").write_bytes(pem)
        return folder


def gateway_entry(certificate: x509.Certificate, country: str) -> dict[str, Any]:
    """One entry of the EU gateway's trust list export."""
    der = certificate.public_bytes(serialization.Encoding.DER)
    return {
        "kid": base64.b64encode(certificate_kid(certificate)).decode(),
        "country": country,
        "certificateType": "DSC",
        "rawData": base64.b64encode(der).decode(),
    }
