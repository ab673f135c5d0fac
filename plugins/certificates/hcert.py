"""EU Digital COVID Certificate / WHO GDHCN HCERT: the EU DCC JSON (schema 1.3.0) in a CWT
(CBOR claims: 1 iss, 4 exp, 6 iat, -260 hcert), signed as COSE_Sign1 with ES256, compressed with
zlib, encoded in base45 and prefixed `HC1:` (all QR alphanumeric characters).

The vaccine's EU value set codes come from explicit fields of its vaccine record: `euMa`
(`ma`, marketing authorisation holder), `euMp` (`mp`, medicinal product) and `euVp` (`vp`,
vaccine or prophylaxis); nothing is guessed from the vaccine's name or manufacturer, and a
vaccine without them gets no HCERT (`HCertRefused` names the missing fields). `tg` is SNOMED
840539006 for a COVID-19 vaccine (by its ICD-11 code), the ICD-11 code otherwise (the EU value
sets cover COVID-19 only). `fnt`/`gnt` are the names transliterated as ICAO 9303 Part 3 says
(`icao`); a name in a script it does not cover is refused, never signed empty. `ci`, the
certificate identifier (UVCI), carries this registry's certificate id, so a verifier asking
this registry can tell a revoked certificate.
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
from open_registry.plugins.certificates.fhir import HealthRecord

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


#: ICAO 9303 Part 3, transliteration of multinational Latin characters that are not simply a
#: letter A-Z with a diacritic (those lose the diacritic: É -> E, Ç -> C, Ř -> R, ...)
_LATIN = {
    "Ä": "AE", "Å": "AA", "Æ": "AE", "Ĳ": "IJ", "Ö": "OE", "Ø": "OE", "Œ": "OE", "Ü": "UE",
    "ß": "SS", "ẞ": "SS", "Þ": "TH", "Ð": "D", "Đ": "D", "Ħ": "H", "Ł": "L", "Ŀ": "L",
    "Ŋ": "N", "İ": "I", "\u0131": "I", "ĸ": "K",
}  # fmt: skip
#: ICAO 9303 Part 3, transliteration of Cyrillic characters (by Unicode name: CYRILLIC CAPITAL
#: LETTER ...; the soft sign is not written)
_CYRILLIC = {
    unicodedata.lookup(f"CYRILLIC CAPITAL LETTER {name}"): latin
    for name, latin in (
        ("A", "A"), ("BE", "B"), ("VE", "V"), ("GHE", "G"), ("GHE WITH UPTURN", "G"),
        ("DE", "D"), ("DJE", "D"), ("GJE", "G"), ("IE", "E"), ("IO", "E"),
        ("UKRAINIAN IE", "IE"), ("ZHE", "ZH"), ("ZE", "Z"), ("DZE", "DZ"), ("I", "I"),
        ("BYELORUSSIAN-UKRAINIAN I", "I"), ("YI", "I"), ("SHORT I", "I"), ("JE", "J"),
        ("KA", "K"), ("KJE", "K"), ("EL", "L"), ("LJE", "LJ"), ("EM", "M"), ("EN", "N"),
        ("NJE", "NJ"), ("O", "O"), ("PE", "P"), ("ER", "R"), ("ES", "S"), ("TE", "T"),
        ("TSHE", "C"), ("U", "U"), ("SHORT U", "U"), ("EF", "F"), ("HA", "KH"), ("TSE", "TS"),
        ("CHE", "CH"), ("DZHE", "DZ"), ("SHA", "SH"), ("SHCHA", "SHCH"), ("HARD SIGN", "IE"),
        ("YERU", "Y"), ("SOFT SIGN", ""), ("E", "E"), ("YU", "IU"), ("YA", "IA"),
    )
}  # fmt: skip
#: separators written as the filler `<`; punctuation left out (ICAO 9303 Part 3)
_FILLER = frozenset(" -\u2010\u2011\u2012\u2013\u2014\u00a0\t")
_DROPPED = frozenset("'`.,\u2018\u2019\u02bc")
MAX_NAME = 80


class NameNotTransliterable(HCertError):
    """A name ICAO 9303 transliteration cannot write in A-Z (the message says why)."""


def _letter(char: str) -> str | None:
    """The A-Z spelling of one character (upper case), or None when ICAO 9303 has none."""
    upper = char.upper() if len(char.upper()) == 1 else char
    if upper in _LATIN:
        return _LATIN[upper]
    if upper in _CYRILLIC:
        return _CYRILLIC[upper]
    if "A" <= upper <= "Z":
        return upper
    if unicodedata.name(char, "").startswith(("LATIN ", "FULLWIDTH LATIN ")):
        base = "".join(
            c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c)
        ).upper()
        if base and all("A" <= c <= "Z" for c in base):
            return base
    return None


def _script(char: str) -> str:
    """The first word of the character's Unicode name: its script, mostly ("Devanagari")."""
    word = unicodedata.name(char, "").split(" ")[0]
    if not word:
        return f"U+{ord(char):04X}"
    return word if len(word) <= 3 else word.capitalize()


def icao(name: str) -> str:
    """`name` as ICAO 9303 Part 3 transliterates it for a machine-readable zone, which EU DCC
    wants in `fnt`/`gnt`: Latin letters without their diacritics, or as the table says (Ä AE,
    Å AA, Ø OE, Ü UE, ß SS, ...), Cyrillic by its table, spaces and hyphens as `<`, upper-case
    A-Z only, at most 80 characters. Raises `NameNotTransliterable` for any other character
    (another script, digits, symbols) or a name with no letter."""
    out: list[str] = []
    unsupported: dict[str, None] = {}
    for char in unicodedata.normalize("NFC", name.strip()):
        if char in _FILLER or char.isspace():
            out.append("<")
        elif char in _DROPPED:
            continue
        elif (letters := _letter(char)) is not None:
            out.append(letters)
        else:
            unsupported[char] = None
    if unsupported:
        shown = "".join(unsupported)[:10]
        scripts = ", ".join(dict.fromkeys(_script(c) for c in unsupported))
        raise NameNotTransliterable(
            f"ICAO 9303 transliteration (EU DCC fnt/gnt) has no A-Z spelling for {shown!r} "
            f"({scripts}); this registry transliterates Latin and Cyrillic letters only"
        )
    text = re.sub(r"<+", "<", "".join(out)).strip("<")
    if not text:
        raise NameNotTransliterable(f"the name {name[:40]!r} has no letter to transliterate")
    return text[:MAX_NAME]


def uvci(country: str, certificate_id: str) -> str:
    return f"URN:UVCI:01:{country}:{uuid.UUID(certificate_id).hex.upper()}"


def certificate_of(ci: str) -> str | None:
    tail = ci.rsplit(":", 1)[-1]
    try:
        return str(uuid.UUID(hex=tail))
    except ValueError:
        return None


class HCertRefused(HCertError):
    """An HCERT this record cannot honestly be: `problems` names each missing or unusable input
    as (`field`, reason), e.g. `("euMa", "...")` or `("name", "...")`."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{field}: {reason}" for field, reason in problems))


#: the vaccine record fields an EU DCC needs, and what each becomes
EU_CODES = (
    ("euMa", "eu_ma", "ma", "the marketing authorisation holder code, e.g. ORG-100001699"),
    ("euMp", "eu_mp", "mp", "the medicinal product code, e.g. EU/1/21/1529"),
    ("euVp", "eu_vp", "vp", "the vaccine or prophylaxis code, e.g. J07BX03"),
)


def dcc(record: HealthRecord, country: str, issuer: str) -> dict[str, Any]:
    """The EU DCC JSON (vaccination) of a record. Raises `HCertRefused` naming every missing
    EU code of the vaccine record and a name ICAO 9303 cannot transliterate."""
    problems: list[tuple[str, str]] = []
    vaccine = f"the vaccine {record.vaccine_code or record.vaccine_name!r}"
    codes: dict[str, str] = {}
    for field, attribute, key, what in EU_CODES:
        value = getattr(record, attribute)
        if value:
            codes[key] = value
        else:
            problems.append((field, f"{vaccine} has no {field} ({key}: {what})"))
    covid = record.disease == "COVID-19"
    if not covid and not record.icd11:
        problems.append(
            ("icd11Code", f"{vaccine} has no ICD-11 code, so the disease targeted (tg) is unknown")
        )
    family, given = record.family_given
    names: dict[str, str] = {"fn": family}
    for key, value in (("fnt", family), ("gnt", " ".join(given))):
        if not value:
            continue
        try:
            names[key] = icao(value)
        except NameNotTransliterable as exc:
            problems.append(("name", f"the holder's name cannot be written for EU DCC: {exc}"))
            break
    if problems:
        raise HCertRefused(problems)
    if given:
        names["gn"] = " ".join(given)
    vaccination = {
        "tg": COVID19_SNOMED if covid else str(record.icd11),
        "vp": codes["vp"],
        "mp": codes["mp"],
        "ma": codes["ma"],
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


@dataclass(frozen=True)
class Unverified:
    """An `HC1:` text taken apart, its signature not checked yet: `kid` says whose key to check
    it with (`verified_by`)."""

    protected: bytes
    payload: bytes
    signature: Any
    kid: bytes
    claims: Any

    def verified_by(self, key: ec.EllipticCurvePublicKey) -> HCert:
        """The HCERT, if `key` signed it; `HCertError("invalid signature")` otherwise."""
        if not isinstance(self.signature, bytes) or not verify_raw(
            key, self.signature, _sig_structure(self.protected, self.payload)
        ):
            raise HCertError("invalid signature")
        if not isinstance(self.claims, dict):
            raise HCertError("the HCERT's claims are not a map")
        return HCert(self.kid, self.claims)


def read(text: str) -> Unverified:
    """Take an `HC1:` text apart (base45, zlib, COSE_Sign1 ES256 with a kid, CBOR claims);
    `HCertError` saying what is wrong. Nothing is verified yet."""
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
    if not isinstance(header, dict) or header.get(1) != -7:
        raise HCertError("the HCERT must be signed with ES256 (alg -7)")
    kid = header.get(4) or (unprotected if isinstance(unprotected, dict) else {}).get(4)
    if not isinstance(kid, bytes):
        raise HCertError("the HCERT names no key (kid)")
    return Unverified(protected, payload, signature, kid, claims)


def decode(text: str, key_for: Callable[[bytes], ec.EllipticCurvePublicKey | None]) -> HCert:
    """Check an `HC1:` text; `key_for(kid)` gives the trusted key (None: untrusted)."""
    unverified = read(text)
    key = key_for(unverified.kid)
    if key is None:
        raise HCertError(f"the signing key {unverified.kid.hex()} is not trusted")
    return unverified.verified_by(key)
