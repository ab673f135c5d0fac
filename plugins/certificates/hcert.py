"""EU Digital COVID Certificate / WHO GDHCN HCERT: the EU DCC JSON (schema 1.3.0) in a CWT
(CBOR claims: 1 iss, 4 exp, 6 iat, -260 hcert), signed as COSE_Sign1 with ES256, compressed with
zlib, encoded in base45 and prefixed `HC1:` (all QR alphanumeric characters).

Codes come from DIVOC's EU value set mappings (`codes/eu*.json`, matched on the vaccine's name
and manufacturer); a vaccine they do not know keeps its own name as `mp` and manufacturer as
`ma`, and a disease other than COVID-19 its ICD-11 code as `tg` (the EU value sets cover COVID-19
only). `ci`, the certificate identifier (UVCI), carries this registry's certificate id, so a
verifier asking this registry can tell a revoked certificate.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import cbor2
from cryptography.hazmat.primitives.asymmetric import ec

from open_registry.plugins.certificates.es256 import sign_raw, verify_raw
from open_registry.plugins.certificates.fhir import HealthRecord, code_list, lookup

PREFIX = "HC1:"
B45 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
_B45_INDEX = {c: i for i, c in enumerate(B45)}
COVID19_SNOMED = "840539006"
COSE_SIGN1_TAG = 18
MAX_INFLATED = 64 * 1024


class HCertError(ValueError):
    """An HCERT that cannot be made or read."""


def b45encode(data: bytes) -> str:
    out = []
    for i in range(0, len(data) - 1, 2):
        n = data[i] * 256 + data[i + 1]
        n, c = divmod(n, 45)
        e, d = divmod(n, 45)
        out.append(B45[c] + B45[d] + B45[e])
    if len(data) % 2:
        d, c = divmod(data[-1], 45)
        out.append(B45[c] + B45[d])
    return "".join(out)


def b45decode(text: str) -> bytes:
    try:
        values = [_B45_INDEX[c] for c in text]
    except KeyError as exc:
        raise HCertError(f"not base45: {exc.args[0]!r}") from None
    out = bytearray()
    for i in range(0, len(values), 3):
        chunk = values[i : i + 3]
        if len(chunk) == 3:
            n = chunk[0] + chunk[1] * 45 + chunk[2] * 2025
            if n > 0xFFFF:
                raise HCertError("not base45: a triplet is over 65535")
            out += n.to_bytes(2, "big")
        elif len(chunk) == 2:
            n = chunk[0] + chunk[1] * 45
            if n > 0xFF:
                raise HCertError("not base45: a final pair is over 255")
            out.append(n)
        else:
            raise HCertError("not base45: a lone character at the end")
    return bytes(out)


def icao(name: str) -> str:
    """The ICAO 9303 transliteration EU DCC wants in `fnt`/`gnt` (A-Z and `<`)."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^A-Z<]", "", re.sub(r"[\s\-]+", "<", ascii_name.upper()))[:80]


def uvci(country: str, certificate_id: str) -> str:
    return f"URN:UVCI:01:{country}:{uuid.UUID(certificate_id).hex.upper()}"


def certificate_of(ci: str) -> str | None:
    tail = ci.rsplit(":", 1)[-1]
    try:
        return str(uuid.UUID(hex=tail))
    except ValueError:
        return None


def dcc(record: HealthRecord, country: str, issuer: str) -> dict[str, Any]:
    """The EU DCC JSON (vaccination) of a record."""
    family, given = record.family_given
    names = {"fn": family, "fnt": icao(family)}
    if given:
        names["gn"] = " ".join(given)
        names["gnt"] = icao(" ".join(given))
    mp = lookup(code_list("euVaccineCode.json"), record.vaccine_name) or record.vaccine_name
    ma = lookup(code_list("euVaccineManuf.json"), record.manufacturer, record.vaccine_name)
    vp = lookup(code_list("euVaccineProph.json"), record.vaccine_name)
    covid = record.disease == "COVID-19"
    vaccination = {
        "tg": COVID19_SNOMED if covid else (record.icd11 or "unknown"),
        "vp": vp or (record.icd11 or "unknown"),
        "mp": mp,
        "ma": ma or (record.manufacturer or "unknown"),
        "dn": record.dose,
        "sd": record.total_doses or record.dose,
        "dt": record.date[:10],
        "co": country,
        "is": issuer,
        "ci": uvci(country, record.certificate_id),
    }
    return {"ver": "1.3.0", "nam": names, "dob": record.birth_date or "", "v": [vaccination]}


def _sig_structure(protected: bytes, payload: bytes) -> bytes:
    return cbor2.dumps(["Signature1", protected, b"", payload])


def encode(
    record: HealthRecord,
    *,
    country: str,
    issuer: str,
    kid: bytes,
    key: ec.EllipticCurvePrivateKey,
    valid_days: int = 365,
) -> str:
    """The `HC1:` text of a record, signed with `key` (ES256) under the 8-byte `kid`."""
    issued = datetime.fromisoformat(record.issued_at.replace("Z", "+00:00"))
    claims = {
        1: country,
        4: int((issued + timedelta(days=valid_days)).timestamp()),
        6: int(issued.timestamp()),
        -260: {1: dcc(record, country, issuer)},
    }
    payload = cbor2.dumps(claims)
    protected = cbor2.dumps({1: -7, 4: kid})
    signature = sign_raw(key, _sig_structure(protected, payload))
    cose = cbor2.dumps(cbor2.CBORTag(COSE_SIGN1_TAG, [protected, {}, payload, signature]))
    return PREFIX + b45encode(zlib.compress(cose, 9))


@dataclass
class HCert:
    """A verified HCERT's claims."""

    kid: bytes
    claims: dict[Any, Any]

    @property
    def dcc(self) -> dict[str, Any]:
        return self.claims.get(-260, {}).get(1, {})


def decode(text: str, key_for: Callable[[bytes], ec.EllipticCurvePublicKey | None]) -> HCert:
    """Check an `HC1:` text; `key_for(kid)` gives the trusted key (None: untrusted)."""
    if not text.startswith(PREFIX):
        raise HCertError("an HCERT starts with 'HC1:'")
    try:
        z = zlib.decompressobj()
        cose_bytes = z.decompress(b45decode(text[len(PREFIX) :]), MAX_INFLATED + 1)
    except zlib.error as exc:
        raise HCertError(f"the HCERT is not zlib data: {exc}") from None
    if len(cose_bytes) > MAX_INFLATED or z.unconsumed_tail:
        raise HCertError("the HCERT inflates beyond 64 KiB")
    try:
        cose = cbor2.loads(cose_bytes)
        if isinstance(cose, cbor2.CBORTag):
            if cose.tag != COSE_SIGN1_TAG:
                raise HCertError(f"not a COSE_Sign1 (tag {cose.tag})")
            cose = cose.value
        protected, unprotected, payload, signature = cose
        header = cbor2.loads(protected) if protected else {}
        claims = cbor2.loads(payload)
    except (cbor2.CBORDecodeError, ValueError, TypeError) as exc:
        raise HCertError(f"the HCERT is not a COSE_Sign1 message: {exc}") from None
    if header.get(1) != -7:
        raise HCertError("the HCERT must be signed with ES256 (alg -7)")
    kid = header.get(4) or (unprotected or {}).get(4)
    if not isinstance(kid, bytes):
        raise HCertError("the HCERT names no key (kid)")
    key = key_for(kid)
    if key is None:
        raise HCertError(f"the signing key {kid.hex()} is not trusted")
    if not verify_raw(key, signature, _sig_structure(protected, payload)):
        raise HCertError("invalid signature")
    if not isinstance(claims, dict):
        raise HCertError("the HCERT's claims are not a map")
    return HCert(kid, claims)
