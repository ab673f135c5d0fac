"""Ed25519 keys as Multikey and did:key, base58btc, and the resolution of verification methods.

Multikey (W3C Controlled Identifiers): `publicKeyMultibase` = `z` + base58btc(0xed 0x01 + 32-byte
public key); the secret key is `z` + base58btc(0x80 0x26 + 32-byte seed). A did:key for Ed25519 is
`did:key:` + publicKeyMultibase, its verification method `did:key:<mb>#<mb>`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import lru_cache

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_INDEX = {c: i for i, c in enumerate(_ALPHABET)}
_CHUNK = 58**10
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]  # 58**2 = 3364 two-digit strings
ED25519_PUB_PREFIX = b"\xed\x01"
ED25519_PRIV_PREFIX = b"\x80\x26"

PublicKey = Ed25519PublicKey | RSAPublicKey


class KeyFormatError(ValueError):
    """A key or verification method that cannot be decoded or resolved."""


def b58encode(data: bytes) -> str:
    """base58btc (Bitcoin alphabet), leading zero bytes as '1'."""
    zeros = len(data) - len(data.lstrip(b"\0"))
    n = int.from_bytes(data, "big")
    out = []
    while n:
        # ten base-58 digits per big-integer division (58**10 < 2**63), two per table lookup
        n, chunk = divmod(n, _CHUNK)
        for _ in range(5):
            chunk, r = divmod(chunk, 3364)
            out.append(_PAIRS[r])
    digits = "".join(reversed(out)).lstrip("1")
    return "1" * zeros + digits


def b58decode(text: str) -> bytes:
    """Inverse of `b58encode`; raises `KeyFormatError` on a character outside the alphabet."""
    n = 0
    try:
        for start in range(0, len(text), 10):
            chunk = text[start : start + 10]
            value = 0
            for c in chunk:
                value = value * 58 + _INDEX[c]
            n = n * 58 ** len(chunk) + value
    except KeyError as exc:
        raise KeyFormatError(f"not base58btc: {exc.args[0]!r}") from None
    zeros = len(text) - len(text.lstrip("1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * zeros + body


def multibase_decode(value: str) -> bytes:
    """Bytes of a base58btc multibase string (`z...`)."""
    if not value.startswith("z"):
        raise KeyFormatError(f"multibase value {value[:12]!r}... is not base58btc ('z')")
    return b58decode(value[1:])


def public_raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def public_multikey(key: Ed25519PublicKey) -> str:
    """`publicKeyMultibase` of an Ed25519 public key."""
    return "z" + b58encode(ED25519_PUB_PREFIX + public_raw(key))


def public_from_multikey(value: str) -> Ed25519PublicKey:
    raw = multibase_decode(value)
    if len(raw) != 34 or not raw.startswith(ED25519_PUB_PREFIX):
        raise KeyFormatError("not an Ed25519 Multikey public key (0xed01 + 32 bytes)")
    return Ed25519PublicKey.from_public_bytes(raw[2:])


def secret_multikey(key: Ed25519PrivateKey) -> str:
    """`secretKeyMultibase` of an Ed25519 private key (handle as a secret)."""
    seed = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return "z" + b58encode(ED25519_PRIV_PREFIX + seed)


def private_from_multikey(value: str) -> Ed25519PrivateKey:
    raw = multibase_decode(value)
    if len(raw) != 34 or not raw.startswith(ED25519_PRIV_PREFIX):
        raise KeyFormatError("not an Ed25519 Multikey secret key (0x8026 + 32 bytes)")
    return Ed25519PrivateKey.from_private_bytes(raw[2:])


def did_key(key: Ed25519PublicKey) -> str:
    """The did:key DID of an Ed25519 public key."""
    return "did:key:" + public_multikey(key)


def did_key_method(key: Ed25519PublicKey) -> str:
    """The verification method id of an Ed25519 did:key (`did:key:<mb>#<mb>`)."""
    mb = public_multikey(key)
    return f"did:key:{mb}#{mb}"


@dataclass(frozen=True)
class ResolvedKey:
    """A verification method's public key and controller (None: controller not checked).

    `others` are further keys published under the same verification method id: DIVOC
    deployments name their RSA and their Ed25519 key both `did:india`, so a proof tries each key
    of the type its suite needs (`candidates`)."""

    public_key: PublicKey
    controller: str | None
    others: tuple[ResolvedKey, ...] = ()

    def candidates(self, *kinds: type) -> list[ResolvedKey]:
        """This key and the others whose public key is one of `kinds`, in the order given."""
        return [k for k in (self, *self.others) if isinstance(k.public_key, kinds)]

    def adding(self, other: ResolvedKey) -> ResolvedKey:
        """This method with `other`'s keys added (tried after this one's)."""
        extra = tuple(replace(k, others=()) for k in (other, *other.others))
        return replace(self, others=(*self.others, *extra))


KeyResolver = Callable[[str], ResolvedKey]


@lru_cache(maxsize=1024)
def resolve_did_key(method: str) -> ResolvedKey:
    """Resolve an Ed25519 did:key verification method offline (`did:key:<mb>#<mb>`)."""
    did, _, fragment = method.partition("#")
    if not did.startswith("did:key:z6Mk"):
        raise KeyFormatError(f"not an Ed25519 did:key: {method!r}")
    mb = did.removeprefix("did:key:")
    if fragment and fragment != mb:
        raise KeyFormatError(f"did:key fragment does not match its key: {method!r}")
    return ResolvedKey(public_from_multikey(mb), did)


def static_resolver(
    keys: Mapping[str, ResolvedKey], fallback: KeyResolver | None = resolve_did_key
) -> KeyResolver:
    """A resolver answering the given verification methods, then `fallback` (did:key)."""

    def resolve(method: str) -> ResolvedKey:
        if method in keys:
            return keys[method]
        if fallback is None:
            raise KeyFormatError(f"unknown verification method {method!r}")
        return fallback(method)

    return resolve


def ed25519_from_base58(value: str) -> Ed25519PublicKey:
    """An Ed25519 public key from raw base58 (Ed25519VerificationKey2018 `publicKeyBase58`)."""
    raw = b58decode(value)
    if len(raw) != 32:
        raise KeyFormatError("an Ed25519 public key is 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)
