"""The argon2id hasher of user passwords and client secrets, and the decoy hash verified when
the named user or client does not exist, so that a wrong name costs what a wrong password does.

The decoy is made on first use (`decoy_hash`), not at import: every command, worker and import
process imports this package and few of them check a password, while one argon2id hash costs
a few hundred milliseconds of CPU. `Users` and `Clients` ask for it when they are made (by
`Auth`, before a server's first request), so the first unknown name is not slower than the next.
"""

from __future__ import annotations

import secrets
import threading

from argon2 import PasswordHasher

#: one hasher (argon2-cffi's defaults: argon2id, RFC 9106 low-memory profile) for every secret
HASHER = PasswordHasher()

_decoys: dict[tuple[object, ...], str] = {}
_decoys_lock = threading.Lock()


def decoy_hash(hasher: PasswordHasher = HASHER) -> str:
    """A hash of a random secret nobody knows, made with `hasher`'s parameters (so verifying
    against it costs what verifying a real hash of that hasher does) on the first call for
    those parameters, whichever thread asks first, and kept for the life of the process."""
    key = (
        hasher.type,
        hasher.time_cost,
        hasher.memory_cost,
        hasher.parallelism,
        hasher.hash_len,
        hasher.salt_len,
    )
    decoy = _decoys.get(key)
    if decoy is None:
        with _decoys_lock:
            decoy = _decoys.get(key)
            if decoy is None:
                decoy = _decoys[key] = hasher.hash(secrets.token_urlsafe(32))
    return decoy
