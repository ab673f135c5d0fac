"""SMART Health Cards: a JWS (ES256, `zip: DEF`) over a FHIR bundle, carried in a QR code as
`shc:/` followed by digits (each JWS character as two digits, `ord(c) - 45`), at most QR
version 22, so phones read it easily.

The payload's `iss` is the issuer's base URL; verifiers find its keys at
`<iss>/.well-known/jwks.json` (served by this registry, with CORS). `vc.rid` is the
certificate's revocation id (its UUID as base64url, 22 characters): each key's Card Revocation
List at `<iss>/.well-known/crl/<kid>.json` lists the rids of revoked certificates
(`health_formats.revocation_list`), and this registry's own verifier looks the certificate up.
"""

from __future__ import annotations

import json
import re
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from open_registry.plugins.certificates.es256 import b64url, sign_raw, unb64url, verify_raw
from open_registry.plugins.certificates.fhir import HealthRecord, minimal_bundle

PREFIX = "shc:/"
MAX_VERSION = 22
MAX_INFLATED = 64 * 1024
CARD_TYPES = ["https://smarthealth.cards#health-card", "https://smarthealth.cards#immunization"]


class SHCError(ValueError):
    """A SMART Health Card that cannot be made or read."""


def rid_of(certificate_id: str) -> str:
    return b64url(uuid.UUID(certificate_id).bytes)


def certificate_of(rid: str) -> str | None:
    try:
        return str(uuid.UUID(bytes=unb64url(rid)))
    except (ValueError, TypeError):
        return None


def _timestamp(value: str) -> int:
    try:
        return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
    except ValueError:
        raise SHCError(f"not a date-time: {value!r}") from None


def payload(record: HealthRecord, issuer_url: str) -> dict[str, Any]:
    types = list(CARD_TYPES)
    if record.disease == "COVID-19":
        types.append("https://smarthealth.cards#covid19")
    return {
        "iss": issuer_url.rstrip("/"),
        "nbf": _timestamp(record.issued_at),
        "vc": {
            "type": types,
            "credentialSubject": {"fhirVersion": "4.0.1", "fhirBundle": minimal_bundle(record)},
            "rid": rid_of(record.certificate_id),
        },
    }


def _deflate(data: bytes) -> bytes:
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    return z.compress(data) + z.flush()


def _inflate(data: bytes) -> bytes:
    z = zlib.decompressobj(-15)
    out = z.decompress(data, MAX_INFLATED + 1)
    if len(out) > MAX_INFLATED or z.unconsumed_tail:
        raise SHCError("the card's payload inflates beyond 64 KiB")
    return out


def sign(card: dict[str, Any], kid: str, key: ec.EllipticCurvePrivateKey) -> str:
    """The compact JWS of a card payload."""
    header = b64url(
        json.dumps({"alg": "ES256", "zip": "DEF", "kid": kid}, separators=(",", ":")).encode()
    )
    body = b64url(_deflate(json.dumps(card, separators=(",", ":"), ensure_ascii=False).encode()))
    signing_input = f"{header}.{body}".encode("ascii")
    return f"{header}.{body}.{b64url(sign_raw(key, signing_input))}"


def to_qr_text(jws: str) -> str:
    return PREFIX + "".join(f"{ord(c) - 45:02d}" for c in jws)


def from_qr_text(text: str) -> str:
    if not text.startswith(PREFIX):
        raise SHCError("a SMART Health Card QR starts with 'shc:/'")
    digits = text[len(PREFIX) :]
    if "/" in digits:
        raise SHCError("chunked SMART Health Cards are not supported (one QR code per card)")
    if not re.fullmatch(r"(?:\d\d)+", digits):
        raise SHCError("after 'shc:/' a card is pairs of digits")
    return "".join(chr(int(digits[i : i + 2]) + 45) for i in range(0, len(digits), 2))


@dataclass
class Card:
    """A verified card's contents."""

    header: dict[str, Any]
    payload: dict[str, Any]


def verify(jws: str, keys_for: Callable[[str, str], ec.EllipticCurvePublicKey | None]) -> Card:
    """Check a card's JWS; `keys_for(iss, kid)` gives the trusted key (None: untrusted).

    Raises `SHCError` saying what is wrong."""
    parts = jws.split(".")
    if len(parts) != 3:
        raise SHCError("a card is a compact JWS: header.payload.signature")
    try:
        header = json.loads(unb64url(parts[0]))
        raw = unb64url(parts[1])
        signature = unb64url(parts[2])
    except (ValueError, TypeError) as exc:
        raise SHCError(f"the JWS is not base64url JSON: {exc}") from None
    if not isinstance(header, dict) or header.get("alg") != "ES256":
        raise SHCError("the card's JWS header must say alg ES256")
    if header.get("zip") != "DEF":
        raise SHCError("the card's payload must be deflated (zip: DEF)")
    try:
        card = json.loads(_inflate(raw))
    except (zlib.error, ValueError) as exc:
        raise SHCError(f"the card's payload cannot be read: {exc}") from None
    if not isinstance(card, dict) or not isinstance(card.get("iss"), str):
        raise SHCError("the card's payload has no issuer (iss)")
    key = keys_for(card["iss"], str(header.get("kid", "")))
    if key is None:
        raise SHCError(f"the issuer {card['iss']!r} with key {header.get('kid')!r} is not trusted")
    if not verify_raw(key, signature, f"{parts[0]}.{parts[1]}".encode("ascii")):
        raise SHCError("invalid signature")
    return Card(header, card)
