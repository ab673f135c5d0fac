"""Encryption at rest of private fields: data keys, AES-256-GCM values, keyed blind indexes.

A stored private value reads `enc1:<key id>:<base64url(nonce | ciphertext | tag)>`: a fresh
96-bit random nonce per value, and associated data naming the entity, the field and the record
id, so a ciphertext copied into another column or another record does not decrypt. The key id
lets several keys live side by side while `registry data-key rotate` re-encrypts.

A private field that is `indexed` or `unique` also stores HMAC-SHA256(index key, entity, field,
normalised value) in a column of its own (the blind index): exact-match search and unique keys
use it, and the value itself never leaves the ciphertext.

Keys come from the `data_keys` setting (`REGISTRY_DATA_KEYS`, JSON) or from a key file
(`data_key_file`, default `<data_dir>/data-keys.json`, created with mode 0600 on first use):

    {"version": 1, "current": "3f9c2a71", "keys": {"3f9c2a71": "<base64, 32 bytes>"},
     "index_key": "<base64, 32 bytes>"}

Neither the keys nor a value ever appear in a message raised here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from open_registry.core.errors import RegistryError

log = logging.getLogger("registry")

PREFIX = "enc1"
KEY_FILE_NAME = "data-keys.json"
NONCE_BYTES = 12
KEY_BYTES = 32
#: How often a process looks at its key file for a new current key (seconds).
RELOAD_SECONDS = 1.0


class DataKeyError(RegistryError):
    """The data keys cannot be loaded or do not fit the stored data (a server-side problem)."""

    status = 500
    slug = "data-key"
    title = "Data key problem"


class DecryptError(DataKeyError):
    """A stored private value cannot be decrypted: wrong or missing key, or altered data."""

    title = "Cannot decrypt stored data"


def new_key_id() -> str:
    return secrets.token_hex(4)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _unb64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise DataKeyError(f"{what} must be base64 text")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise DataKeyError(f"{what} is not valid base64") from None
    if len(raw) != KEY_BYTES:
        raise DataKeyError(f"{what} must be {KEY_BYTES} bytes, got {len(raw)}")
    return raw


@dataclass(frozen=True)
class DataKeys:
    """One consistent set of keys: AES keys by id, the one new values use, the index key."""

    current: str
    keys: dict[str, bytes] = field(repr=False)
    index_key: bytes = field(repr=False)

    @classmethod
    def generate(cls) -> DataKeys:
        kid = new_key_id()
        return cls(kid, {kid: AESGCM.generate_key(bit_length=256)}, secrets.token_bytes(KEY_BYTES))

    @classmethod
    def from_json(cls, text: str | bytes, source: str) -> DataKeys:
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise DataKeyError(f"{source}: not valid JSON") from None
        if not isinstance(data, dict) or not isinstance(data.get("keys"), dict):
            raise DataKeyError(
                f'{source}: expected {{"current", "keys": {{id: key}}, "index_key"}}'
            )
        keys = {
            str(kid): _unb64(raw, f"{source}: key {kid!r}") for kid, raw in data["keys"].items()
        }
        current = data.get("current")
        if current not in keys:
            raise DataKeyError(f"{source}: 'current' must name one of the keys ({', '.join(keys)})")
        for kid in keys:
            if not kid or ":" in kid or len(kid) > 32:
                raise DataKeyError(f"{source}: key id {kid!r} must be 1-32 characters without ':'")
        index = _unb64(data.get("index_key"), f"{source}: index_key")
        return cls(current, keys, index)

    def to_json(self) -> bytes:
        body = {
            "version": 1,
            "current": self.current,
            "keys": {kid: _b64(k) for kid, k in self.keys.items()},
            "index_key": _b64(self.index_key),
        }
        return orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n"

    def with_new_current(self) -> DataKeys:
        kid = new_key_id()
        while kid in self.keys:
            kid = new_key_id()
        return DataKeys(kid, {**self.keys, kid: AESGCM.generate_key(256)}, self.index_key)

    def without(self, kids: set[str]) -> DataKeys:
        if self.current in kids:
            raise ValueError("the current key cannot be removed")
        return DataKeys(
            self.current, {k: v for k, v in self.keys.items() if k not in kids}, self.index_key
        )


def write_secret_file(path: Path, data: bytes, *, replace: bool = False) -> bool:
    """Write `data` to `path`, readable by the owner only (mode 0600), in one step: another
    process sees the old file or the new one. Without `replace` an existing file is kept (two
    processes starting at once agree on one key); returns whether the file was written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if replace:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        tmp.unlink(missing_ok=True)


def read_secret_file(path: Path, what: str, error: type[Exception]) -> bytes:
    """The bytes of the key file `path` (`what`: "data key", ...); `error` naming the file when
    it cannot be read, and a warning when other users may read it."""
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise error(f"cannot read the {what} file {path}: {exc.strerror}") from None
    mode = path.stat().st_mode
    if mode & 0o077:
        log.warning("the %s file %s can be read by other users (mode %o)", what, path, mode & 0o777)
    return text


def write_key_file(path: Path, keys: DataKeys, *, replace: bool = False) -> bool:
    """Write `keys` to `path` (`write_secret_file`)."""
    return write_secret_file(path, keys.to_json(), replace=replace)


def read_key_file(path: Path) -> DataKeys:
    text = read_secret_file(path, "data key", DataKeyError)
    return DataKeys.from_json(text, str(path))


class Keyring:
    """The data keys of one process. A key file is looked at again when it changes (a rotation
    run by another process), so running servers read re-encrypted values and write new ones
    with the new current key."""

    def __init__(self, keys: DataKeys, path: Path | None = None):
        self.path = path
        # keys and their ciphers change together, in one assignment (readers on other threads)
        self._state = (keys, {kid: AESGCM(k) for kid, k in keys.keys.items()})
        self._mtime = self._stat()
        self._checked = time.monotonic()
        self._lock = threading.Lock()

    @property
    def keys(self) -> DataKeys:
        return self._state[0]

    @property
    def current(self) -> str:
        self._maybe_reload()
        return self._state[0].current

    @property
    def index_key(self) -> bytes:
        return self._state[0].index_key

    def _stat(self) -> tuple[int, int, int] | None:
        if self.path is None:
            return None
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def reload(self) -> None:
        """Read the key file again now if it changed."""
        self._maybe_reload(force=True)

    def _maybe_reload(self, force: bool = False) -> None:
        if self.path is None:
            return
        now = time.monotonic()
        if not force and now - self._checked < RELOAD_SECONDS:
            return
        with self._lock:
            self._checked = now
            mtime = self._stat()
            if mtime is None or mtime == self._mtime:
                return
            keys = read_key_file(self.path)
            if keys.index_key != self._state[0].index_key:
                raise DataKeyError(
                    f"the index key in {self.path} changed; blind indexes would no longer match"
                )
            self._state = (keys, {kid: AESGCM(k) for kid, k in keys.keys.items()})
            self._mtime = mtime

    def aead(self, kid: str) -> AESGCM | None:
        found = self._state[1].get(kid)
        if found is None:
            self._maybe_reload(force=True)
            found = self._state[1].get(kid)
        return found

    def current_aead(self) -> tuple[str, AESGCM]:
        self._maybe_reload()
        keys, ciphers = self._state
        return keys.current, ciphers[keys.current]


def load_keyring(data_keys: str, key_file: Path, *, create: bool = True) -> tuple[Keyring, bool]:
    """The keyring from `data_keys` (JSON text) or else `key_file`; creates the file (0600) when
    missing and `create` is on. Returns (keyring, whether a new key file was written)."""
    if data_keys.strip():
        return Keyring(DataKeys.from_json(data_keys, "REGISTRY_DATA_KEYS")), False
    if not key_file.exists():
        if not create:
            raise DataKeyError(
                f"no data key file at {key_file}; create one with `registry data-key init`"
            )
        created = write_key_file(key_file, DataKeys.generate())
        if created:
            log.warning(
                "created the data key file %s: back it up; without it private fields cannot "
                "be read",
                key_file,
            )
        return Keyring(read_key_file(key_file), key_file), created
    return Keyring(read_key_file(key_file), key_file), False


def key_id_of(stored: str) -> str | None:
    """The key id of a stored value (None when it is not one of ours)."""
    if not isinstance(stored, str) or not stored.startswith(PREFIX + ":"):
        return None
    kid, sep, _ = stored[len(PREFIX) + 1 :].partition(":")
    return kid if sep else None


def hmac_pads(key: bytes, prefix: bytes = b"") -> tuple[Any, Any]:
    """HMAC-SHA256 (RFC 2104) of `key` as its two SHA-256 states, the inner one having taken
    `prefix`: HMAC(key, prefix + m) is `outer.update(inner.update(m).digest()).hexdigest()` on
    copies of them, about half the time of copying an `hmac` object (a blind index per private
    value of every imported row)."""
    if len(key) > 64:  # the block size
        key = hashlib.sha256(key).digest()
    key = key.ljust(64, b"\x00")
    inner = hashlib.sha256(bytes(k ^ 0x36 for k in key) + prefix)
    return inner, hashlib.sha256(bytes(k ^ 0x5C for k in key))


#: standard base64 to its URL-safe alphabet (`base64.urlsafe_b64encode`)
_URLSAFE = bytes.maketrans(b"+/", b"-_")


class FieldCipher:
    """Seals and opens the private values of one entity, and computes its blind indexes."""

    def __init__(self, keyring: Keyring, entity: str):
        self.keyring = keyring
        self.entity = entity
        self._aad = f"{entity}\x00".encode()
        #: per field: what its associated data and its blind index input begin with
        self._field_aad: dict[str, bytes] = {}
        self._blind: dict[str, tuple[Any, Any]] = {}

    def _associated(self, name: str, record_id: str) -> bytes:
        head = self._field_aad.get(name)
        if head is None:
            head = self._field_aad[name] = self._aad + name.encode() + b"\x00"
        return head + record_id.encode()

    def seal(self, name: str, record_id: str, value: Any) -> str:
        """`value` (JSON) encrypted for field `name` of record `record_id`."""
        return self.seal_many([(name, record_id, value)])[0]

    def seal_many(self, items: Sequence[tuple[str, str, Any]]) -> list[str]:
        """`seal` of each (field name, record id, value), in one place for both: the key looked
        up once, and the nonces (random, 96 bits each) drawn from the OS in one call rather than
        one system call per value (a bulk import seals hundreds of thousands)."""
        if not items:
            return []
        kid, aead = self.keyring.current_aead()
        nonces = os.urandom(NONCE_BYTES * len(items))
        head, encrypt, associated = f"{PREFIX}:{kid}:", aead.encrypt, self._associated
        b64, dumps = binascii.b2a_base64, orjson.dumps  # urlsafe_b64encode, without its layers
        out = []
        for at, (name, record_id, value) in enumerate(items):
            nonce = nonces[at * NONCE_BYTES : (at + 1) * NONCE_BYTES]
            sealed = encrypt(nonce, dumps(value), associated(name, record_id))
            out.append(head + b64(nonce + sealed, newline=False).translate(_URLSAFE).decode())
        return out

    def open(self, name: str, record_id: str, stored: str) -> Any:
        """The JSON value of a stored private value; `DecryptError` when it cannot be read."""
        where = f"{self.entity}.{name} of record {record_id}"
        kid = key_id_of(stored)
        if kid is None:
            raise DecryptError(
                f"{where} is not encrypted (stored before encryption was on?); run "
                "`registry data-key rotate --no-new-key` to encrypt stored values"
            )
        aead = self.keyring.aead(kid)
        if aead is None:
            raise DecryptError(
                f"{where} was encrypted with data key {kid!r}, which is not among the loaded "
                f"keys ({', '.join(sorted(self.keyring.keys.keys))})"
            )
        try:
            raw = base64.urlsafe_b64decode(stored[len(PREFIX) + len(kid) + 2 :])
            if len(raw) < NONCE_BYTES + 16:
                raise ValueError
            plain = aead.decrypt(
                raw[:NONCE_BYTES], raw[NONCE_BYTES:], self._associated(name, record_id)
            )
        except (InvalidTag, ValueError, binascii.Error):
            raise DecryptError(
                f"{where} cannot be decrypted with data key {kid!r}: the stored value was "
                "altered, moved from another record or field, or the key is not the one used"
            ) from None
        return orjson.loads(plain)

    def blind(self, name: str, normalised: Any) -> str:
        """The blind index of a normalised value of field `name` (hex HMAC-SHA256)."""
        pads = self._blind.get(name)
        if pads is None:
            pads = self._blind[name] = hmac_pads(
                self.keyring.index_key, f"{self.entity}\x00{name}\x00".encode()
            )
        inner, outer = pads[0].copy(), pads[1].copy()
        inner.update(orjson.dumps(normalised, option=orjson.OPT_SORT_KEYS))
        outer.update(inner.digest())
        return outer.hexdigest()
