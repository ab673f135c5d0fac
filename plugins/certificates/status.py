"""W3C Bitstring Status List v1.0: one revocation and one suspension list per 131,072
certificates, published as signed `BitstringStatusListCredential`s.

A certificate's `statusIndex` names its bit in both lists: list number `index // LIST_SIZE`, bit
`index % LIST_SIZE` (bit 0 is the most significant bit of the first byte). `encodedList` is the
multibase base64url (`u`, no padding) of the GZIP-compressed bitstring.
"""

from __future__ import annotations

import base64
import gzip
import io
from collections.abc import Iterable
from typing import Any

from open_registry.plugins.certificates.loader import CREDENTIALS_V2_URL

LIST_SIZE = 131_072  # bits: the specification's minimum, 16 KiB before compression
PURPOSES = ("revocation", "suspension")
MAX_ENCODED = 1 << 20  # refuse a list that inflates beyond 1 MiB (a decompression bomb)
#: the highest list number: every status index of its list, and the end of its range, fit the
#: 64-bit `statusIndex` column (a list past it would be a database error, not an empty list)
MAX_LIST_NUMBER = (2**63 - 1) // LIST_SIZE - 1


class StatusListError(ValueError):
    """A status list credential or entry that cannot be read."""


def encode(indices: Iterable[int], size: int = LIST_SIZE) -> str:
    """`encodedList` with the given bits set."""
    bits = bytearray(size // 8)
    for i in indices:
        if not 0 <= i < size:
            raise StatusListError(f"bit {i} is outside a list of {size}")
        bits[i >> 3] |= 0x80 >> (i & 7)
    return encode_bits(bytes(bits))


def encode_bits(bits: bytes) -> str:
    """`encodedList` of a bitstring."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as fh:
        fh.write(bits)
    return "u" + base64.urlsafe_b64encode(buffer.getvalue()).decode("ascii").rstrip("=")


def decode(encoded: str) -> bytes:
    """The bitstring of an `encodedList`."""
    if not isinstance(encoded, str) or not encoded.startswith("u"):
        raise StatusListError("encodedList must be multibase base64url (starting with 'u')")
    body = encoded[1:]
    if not body or body.strip("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"):
        raise StatusListError("encodedList holds characters outside base64url")
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as fh:
            bits = fh.read(MAX_ENCODED + 1)
    except (ValueError, OSError, EOFError) as exc:
        raise StatusListError(f"encodedList is not base64url GZIP data: {exc}") from None
    if len(bits) > MAX_ENCODED:
        raise StatusListError("encodedList inflates beyond 1 MiB")
    if not bits:
        raise StatusListError("encodedList is an empty list")
    return bits


def bit(bits: bytes, index: int) -> bool:
    if not 0 <= index < len(bits) * 8:
        raise StatusListError(f"statusListIndex {index} is outside the list ({len(bits) * 8})")
    return bool(bits[index >> 3] & (0x80 >> (index & 7)))


def list_number(value: int | str) -> int:
    """A status list's number as a URL or path names it: a whole number from 0 to
    `MAX_LIST_NUMBER` (in text, ASCII digits only: `int()` also reads `"²"`-like digits, spaces
    and underscores). Anything else is a `StatusListError` (the route's 404, the verifier's
    INVALID): a number past the range would overflow the query that reads the list's bits."""
    if isinstance(value, bool):
        raise StatusListError("a status list number is a whole number")
    if isinstance(value, str):
        text = value
        if not text or not text.isascii() or not text.isdigit():
            raise StatusListError(f"{text[:40]!r} is not a status list number")
        # the length first: int() is slow on long text, and refuses more than 4300 digits
        value = int(text) if len(text) <= len(str(MAX_LIST_NUMBER)) else MAX_LIST_NUMBER + 1
    if not isinstance(value, int):
        raise StatusListError("a status list number is a whole number")
    if not 0 <= value <= MAX_LIST_NUMBER:
        raise StatusListError(f"no such status list: numbers run from 0 to {MAX_LIST_NUMBER}")
    return value


def locate(index: int) -> tuple[int, int]:
    """(list number, bit in that list) of a certificate's status index."""
    return divmod(index, LIST_SIZE)


def list_url(api_base: str, purpose: str, number: int) -> str:
    return f"{api_base}/status-lists/{purpose}/{number}"


def list_credential(
    url: str, purpose: str, issuer: str, encoded: str, valid_from: str, valid_until: str
) -> dict[str, Any]:
    """The unsigned status list credential."""
    return {
        "@context": [CREDENTIALS_V2_URL],
        "id": url,
        "type": ["VerifiableCredential", "BitstringStatusListCredential"],
        "issuer": issuer,
        "validFrom": valid_from,
        "validUntil": valid_until,
        "credentialSubject": {
            "id": f"{url}#list",
            "type": "BitstringStatusList",
            "statusPurpose": purpose,
            "encodedList": encoded,
        },
    }


def entries(credential: dict[str, Any]) -> list[dict[str, Any]]:
    """The credential's BitstringStatusListEntry objects (none is fine; a bad one raises)."""
    status = credential.get("credentialStatus")
    if status is None:
        return []
    items = status if isinstance(status, list) else [status]
    out = []
    for item in items:
        if not isinstance(item, dict) or item.get("type") != "BitstringStatusListEntry":
            raise StatusListError("credentialStatus holds an entry that is not a status list entry")
        try:
            index = int(item["statusListIndex"])
        except (KeyError, TypeError, ValueError):
            raise StatusListError("a status entry has no whole-number statusListIndex") from None
        if not isinstance(item.get("statusListCredential"), str):
            raise StatusListError("a status entry has no statusListCredential URL")
        out.append({**item, "statusListIndex": index})
    return out
