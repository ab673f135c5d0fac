"""The registry's audit key: the Ed25519 key that signs audit checkpoints.

The private key lives in a file of its own, `<data_dir>/audit-key.pem` (PKCS #8 PEM), created
with mode 0600 on first use the way the data key file is (written to a temporary file, then
linked into place, so two processes starting at once agree on one key). Every process that
writes checkpoints (workers, `registry audit checkpoint|verify`) needs the same file: copy it
to each machine, like the data key file. An auditor needs only the public key
(`registry audit public-key`), passed to `registry audit verify --public-key`.

A key is named by its id, the first 16 hex digits of SHA-256 over the raw public key; a
checkpoint carries the id of the key that signed it. Neither the key nor its file's content is
ever logged or put in a message.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from open_registry.core.crypto import read_secret_file, write_secret_file
from open_registry.core.errors import RegistryError

log = logging.getLogger("registry")

KEY_FILE_NAME = "audit-key.pem"


class AuditKeyError(RegistryError):
    """The audit key file cannot be read or made (a server-side problem)."""

    status = 500
    slug = "audit-key"
    title = "Audit key problem"


def key_id_of(public: Ed25519PublicKey) -> str:
    """The id of a public key: 16 hex digits of SHA-256 over its 32 raw bytes."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class AuditKey:
    """A key that checkpoints are checked with (`public`), and signed with when the private
    half is known."""

    id: str
    public: Ed25519PublicKey = field(repr=False)
    private: Ed25519PrivateKey | None = field(default=None, repr=False)

    @classmethod
    def of_private(cls, private: Ed25519PrivateKey) -> AuditKey:
        public = private.public_key()
        return cls(key_id_of(public), public, private)

    @classmethod
    def of_public(cls, public: Ed25519PublicKey) -> AuditKey:
        return cls(key_id_of(public), public)

    def sign(self, message: bytes) -> str:
        """The signature of `message`, base64 (88 characters)."""
        if self.private is None:
            raise AuditKeyError(f"audit key {self.id}: only its public half is known")
        return base64.b64encode(self.private.sign(message)).decode()

    def verifies(self, message: bytes, signature: str) -> bool:
        """Whether `signature` (base64) is this key's signature of `message`."""
        try:
            raw = base64.b64decode(signature, validate=True)
            self.public.verify(raw, message)
        except (InvalidSignature, ValueError):
            return False
        return True

    def public_pem(self) -> str:
        """The public key as PEM text (SubjectPublicKeyInfo), for auditors."""
        return self.public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()


def key_path(data_dir: Path) -> Path:
    """Where the audit key file of a data folder is."""
    return Path(data_dir) / KEY_FILE_NAME


def _write_new(path: Path) -> bool:
    """Write a new key to `path` (mode 0600) unless a file is there; whether it was written."""
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return write_secret_file(path, pem)


def read_key(path: Path) -> AuditKey:
    """The signing key in `path`."""
    text = read_secret_file(path, "audit key", AuditKeyError)
    try:
        private = serialization.load_pem_private_key(text, password=None)
    except (ValueError, TypeError):
        raise AuditKeyError(f"{path}: not an unencrypted PEM private key") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise AuditKeyError(f"{path}: the audit key must be an Ed25519 key")
    return AuditKey.of_private(private)


def read_public_key(path: Path) -> AuditKey:
    """A public key (PEM) an auditor checks checkpoints with."""
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise AuditKeyError(f"cannot read the public key file {path}: {exc.strerror}") from None
    try:
        public = serialization.load_pem_public_key(text)
    except (ValueError, TypeError):
        raise AuditKeyError(f"{path}: not a PEM public key") from None
    if not isinstance(public, Ed25519PublicKey):
        raise AuditKeyError(f"{path}: the audit key must be an Ed25519 key")
    return AuditKey.of_public(public)


_loaded: dict[Path, AuditKey] = {}
_lock = threading.Lock()


def signing_key(data_dir: Path, *, create: bool = True) -> AuditKey:
    """The audit key of `data_dir`, read once per process; made when missing and `create`."""
    path = key_path(data_dir).resolve()
    with _lock:
        found = _loaded.get(path)
        if found is not None:
            return found
        if not path.exists():
            if not create:
                raise AuditKeyError(
                    f"no audit key file at {path}; it is made by the first checkpoint "
                    "(`registry audit checkpoint`)"
                )
            if _write_new(path):
                log.warning(
                    "created the audit key file %s: back it up and give every worker the same "
                    "file; checkpoints it signed can only be checked with it (or its public key)",
                    path,
                )
        key = _loaded[path] = read_key(path)
        return key
