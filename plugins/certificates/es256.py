"""ES256 (ECDSA P-256) issuer keys for the formats that require them: SMART Health Cards (JWS)
and EU DCC / WHO GDHCN HCERT (COSE). Kept beside the Ed25519 keys, in `<keys_dir>/es256/`:
`index.json` holds the public JWKs and which key is current, `<kid>.pem` each private key (PKCS#8,
mode 0600); the first key is made when the plugin starts. The key id is the RFC 7638 JWK
thumbprint (what SMART Health Cards ask for); HCERT's 8-byte `kid` is the start of the SHA-256
of the public key's SubjectPublicKeyInfo (the EU derives it from a document-signer X.509
certificate, which this registry does not have).
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.hashes import SHA256

INDEX = "index.json"
LOCK = ".lock"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def public_jwk(key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    numbers = key.public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": b64url(numbers.x.to_bytes(32, "big")),
        "y": b64url(numbers.y.to_bytes(32, "big")),
    }


def thumbprint(jwk: dict[str, str]) -> str:
    """RFC 7638 thumbprint of an EC JWK (its `kid` for SMART Health Cards)."""
    canonical = json.dumps({k: jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"))
    return b64url(hashlib.sha256(canonical.encode()).digest())


def key_from_jwk(jwk: dict[str, Any]) -> ec.EllipticCurvePublicKey:
    if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
        raise ValueError("not a P-256 EC key")
    x = int.from_bytes(unb64url(jwk["x"]), "big")
    y = int.from_bytes(unb64url(jwk["y"]), "big")
    return ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()


def hcert_kid(key: ec.EllipticCurvePublicKey) -> bytes:
    spki = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).digest()[:8]


def sign_raw(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """ES256 signature as JWS and COSE want it: r || s, 32 bytes each."""
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def verify_raw(key: ec.EllipticCurvePublicKey, signature: bytes, data: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature

    if len(signature) != 64:
        return False
    der = encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )
    try:
        key.verify(der, data, ec.ECDSA(SHA256()))
    except InvalidSignature:
        return False
    return True


class EcKeys:
    """The ES256 keys in `<keys_dir>/es256`.

    The first key is made when the plugin starts (`ensure`), so `/.well-known/jwks.json` holds
    it before the first card is signed. Changes to the index are made under an exclusive lock
    on `<keys_dir>/es256/.lock` (processes sharing the folder, e.g. several workers, neither
    make two first keys nor lose one another's key from the index)."""

    def __init__(self, keys_dir: Path):
        self.folder = Path(keys_dir) / "es256"
        self._lock = threading.Lock()
        self._current: tuple[float, str, ec.EllipticCurvePrivateKey] | None = None

    def _index(self) -> dict[str, Any]:
        path = self.folder / INDEX
        if not path.exists():
            return {"current": None, "keys": []}
        return json.loads(path.read_text())

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """This thread and process alone change the index meanwhile."""
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        with self._lock, open(self.folder / LOCK, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _generate(self) -> str:
        """A new current key (the lock is held); returns its kid."""
        data = self._index()
        key = ec.generate_private_key(ec.SECP256R1())
        jwk = public_jwk(key.public_key())
        kid = thumbprint(jwk)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(self.folder / f"{kid}.pem", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        data["keys"].append({**jwk, "kid": kid, "use": "sig", "alg": "ES256"})
        data["current"] = kid
        tmp = self.folder / (INDEX + ".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(self.folder / INDEX)
        self._current = None
        return kid

    def generate(self) -> str:
        """A new current key (a rotation); returns its kid."""
        with self._locked():
            return self._generate()

    def ensure(self) -> str:
        """The current key's kid, making the first key when there is none."""
        current = self._index()["current"]
        if current:
            return str(current)
        with self._locked():
            current = self._index()["current"]  # another process may have made it meanwhile
            return str(current) if current else self._generate()

    def current(self) -> tuple[str, ec.EllipticCurvePrivateKey]:
        """(kid, private key) of the current key, generating the first one if needed."""
        path = self.folder / INDEX
        mtime = path.stat().st_mtime if path.exists() else 0.0
        cached = self._current
        if cached is not None and cached[0] == mtime:
            return cached[1], cached[2]
        data = self._index()
        if not data["current"]:
            self.ensure()
            return self.current()
        kid = data["current"]
        pem_path = self.folder / f"{kid}.pem"
        if pem_path.stat().st_mode & 0o077:
            raise ValueError(f"{pem_path} is readable by others; run: chmod 600 {pem_path}")
        key = serialization.load_pem_private_key(pem_path.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        self._current = (path.stat().st_mtime, kid, key)
        return kid, key

    def jwks(self) -> dict[str, Any]:
        """Every public key (old ones too, so old cards verify) as a JWK set."""
        return {"keys": [dict(k) for k in self._index()["keys"]]}

    def public_keys(self) -> dict[str, ec.EllipticCurvePublicKey]:
        """kid -> public key, for every key."""
        return {k["kid"]: key_from_jwk(k) for k in self._index()["keys"]}
