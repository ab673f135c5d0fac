"""Signing keys: files in the keys folder, never in the database, logs or responses.

The folder holds `keys.json` (public: every key's id, public Multikey, creation time, which one is
current) and one `<key id>.key` file per private key (a Multikey secret, mode 0600). A key in the
environment variable `REGISTRY_CERTIFICATES_SIGNING_KEY` takes precedence as the current key (its
public half is added to `keys.json` so certificates it signs keep verifying). Rotation makes a new
key current and keeps the old public keys in the DID document, so old certificates still verify.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from open_registry.plugins.certificates.keys import (
    KeyFormatError,
    ResolvedKey,
    private_from_multikey,
    public_from_multikey,
    public_multikey,
    resolve_did_key,
    secret_multikey,
)
from open_registry.plugins.certificates.loader import DID_V1_URL, MULTIKEY_V1_URL

INDEX = "keys.json"


class KeyStoreError(ValueError):
    """The keys folder or a key cannot be used; the message says what to do."""


@dataclass(frozen=True)
class KeyInfo:
    """The public facts of one signing key."""

    kid: str
    public_multibase: str
    created: str
    current: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "kid": self.kid,
            "publicKeyMultibase": self.public_multibase,
            "created": self.created,
            "current": self.current,
        }


@dataclass(frozen=True)
class SigningKey:
    """The current private key and how a proof names it."""

    kid: str
    private_key: Ed25519PrivateKey
    issuer: str
    verification_method: str


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _kid_for(public: str) -> str:
    return "key-" + public[-10:]


class KeyStore:
    """The signing keys of one registry (`folder`), for issuer `issuer` (`did:key` or did:web)."""

    def __init__(
        self, folder: Path, issuer: str = "did:key", environ: Mapping[str, str] | None = None
    ):
        self.folder = Path(folder)
        self.issuer_setting = issuer
        self.environ = os.environ if environ is None else environ
        self._lock = threading.Lock()
        self._cached: tuple[float, SigningKey] | None = None

    # -- the index file ---------------------------------------------------------------------
    def _read_index(self) -> dict[str, Any]:
        path = self.folder / INDEX
        if not path.exists():
            return {"current": None, "keys": []}
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise KeyStoreError(f"cannot read {path}: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
            raise KeyStoreError(f"{path} is not a keys index (expected {{current, keys: [...]}})")
        return data

    def _write_index(self, data: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / (INDEX + ".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(self.folder / INDEX)

    def _write_secret(self, kid: str, key: Ed25519PrivateKey) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        path = self.folder / f"{kid}.key"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secret_multikey(key) + "\n")

    def _read_secret(self, kid: str) -> Ed25519PrivateKey:
        path = self.folder / f"{kid}.key"
        try:
            mode = path.stat().st_mode & 0o777
            if mode & 0o077:
                raise KeyStoreError(
                    f"{path} is readable by others (mode {mode:o}); run: chmod 600 {path}"
                )
            return private_from_multikey(path.read_text().strip())
        except FileNotFoundError:
            raise KeyStoreError(f"the private key file {path} is missing") from None
        except KeyFormatError as exc:
            raise KeyStoreError(f"{path}: {exc}") from None

    # -- public operations ------------------------------------------------------------------
    def keys(self) -> list[KeyInfo]:
        """Every key, oldest first (public facts only)."""
        data = self._read_index()
        env_key = self._env_key()
        current = _kid_for(public_multikey(env_key.public_key())) if env_key else data["current"]
        return [
            KeyInfo(k["kid"], k["publicKeyMultibase"], k["created"], k["kid"] == current)
            for k in data["keys"]
        ]

    def generate(self) -> KeyInfo:
        """A new key, made current (`rotate` by another name when keys exist)."""
        with self._lock:
            data = self._read_index()
            key = Ed25519PrivateKey.generate()
            public = public_multikey(key.public_key())
            kid = _kid_for(public)
            while any(k["kid"] == kid for k in data["keys"]):  # practically never
                kid = f"key-{secrets.token_hex(5)}"
            self._write_secret(kid, key)
            info = {"kid": kid, "publicKeyMultibase": public, "created": _now()}
            data["keys"].append(info)
            data["current"] = kid
            self._write_index(data)
            self._cached = None
            return KeyInfo(kid, public, info["created"], True)

    def rotate(self) -> KeyInfo:
        """Make a new key current; old public keys stay published, so old certificates verify."""
        if not self._read_index()["keys"]:
            raise KeyStoreError("no key to rotate yet; run `registry keys generate` first")
        return self.generate()

    def ensure(self) -> SigningKey:
        """The current signing key, generating the first one if the folder has none."""
        if self._env_key() is None and not self._read_index()["keys"]:
            self.generate()
        return self.current()

    def _env_key(self) -> Ed25519PrivateKey | None:
        from open_registry.plugins.certificates.config import KEY_ENV

        raw = self.environ.get(KEY_ENV)
        if not raw:
            return None
        try:
            return private_from_multikey(raw.strip())
        except KeyFormatError as exc:
            raise KeyStoreError(
                f"{KEY_ENV} does not hold an Ed25519 Multikey secret: {exc}"
            ) from None

    def _index_mtime(self) -> float:
        try:
            return (self.folder / INDEX).stat().st_mtime
        except FileNotFoundError:
            return 0.0

    def current(self) -> SigningKey:
        """The key new certificates are signed with (re-read when `keys.json` changes)."""
        mtime = self._index_mtime()
        cached = self._cached
        if cached is not None and cached[0] == mtime:
            return cached[1]
        with self._lock:
            env_key = self._env_key()
            data = self._read_index()
            if env_key is not None:
                key = env_key
                public = public_multikey(key.public_key())
                kid = _kid_for(public)
                if not any(k["kid"] == kid for k in data["keys"]):
                    data["keys"].append(
                        {"kid": kid, "publicKeyMultibase": public, "created": _now()}
                    )
                    self._write_index(data)
                    mtime = self._index_mtime()
            else:
                kid = data["current"]
                if not kid:
                    raise KeyStoreError(
                        f"no signing key in {self.folder}; run `registry keys generate`"
                    )
                key = self._read_secret(kid)
                public = public_multikey(key.public_key())
            issuer = self.issuer_for(public)
            method = f"{issuer}#{public}" if issuer.startswith("did:key:") else f"{issuer}#{kid}"
            signing = SigningKey(kid, key, issuer, method)
            self._cached = (mtime, signing)
            return signing

    def issuer_for(self, public: str) -> str:
        return f"did:key:{public}" if self.issuer_setting == "did:key" else self.issuer_setting

    def issuers(self) -> set[str]:
        """Every DID this registry has issued under (one per key with did:key)."""
        if self.issuer_setting != "did:key":
            return {self.issuer_setting}
        return {self.issuer_for(k.public_multibase) for k in self.keys()}

    def did_document(self) -> dict[str, Any] | None:
        """The did:web DID document listing every key (None with did:key issuers)."""
        if self.issuer_setting == "did:key":
            return None
        did = self.issuer_setting
        methods = [
            {
                "id": f"{did}#{k.kid}",
                "type": "Multikey",
                "controller": did,
                "publicKeyMultibase": k.public_multibase,
            }
            for k in self.keys()
        ]
        ids = [m["id"] for m in methods]
        return {
            "@context": [DID_V1_URL, MULTIKEY_V1_URL],
            "id": did,
            "verificationMethod": methods,
            "assertionMethod": ids,
            "authentication": ids,
        }

    def resolve(self, method: str) -> ResolvedKey:
        """A verification method of ours (did:web#kid or did:key) -> its public key."""
        did, _, fragment = method.partition("#")
        if did.startswith("did:key:"):
            return resolve_did_key(method)
        if did == self.issuer_setting:
            for k in self.keys():
                if k.kid == fragment:
                    return ResolvedKey(public_from_multikey(k.public_multibase), did)
        raise KeyFormatError(f"unknown verification method {method!r}")
