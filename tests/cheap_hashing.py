"""Passwords and client secrets hashed with argon2's profile for tests.

Still argon2id hashes, with `argon2.profiles.CHEAPEST` instead of the library's defaults (64 MiB
x 3 passes): ~0.1 s of CPU per user made and per sign-in otherwise, hundreds of times a run.
`tests/conftest.py` installs it in the test processes, and the app factories of the servers the
browser tests start (`uvicorn --factory tests...:build`) in theirs. The real cost is kept where a
test runs the product's own commands (`registry serve`, `registry user add`).
"""

from __future__ import annotations

import argon2.profiles
from argon2 import PasswordHasher

import open_registry.core.auth.clients as auth_clients
import open_registry.core.auth.users as auth_users

HASHER = PasswordHasher.from_parameters(argon2.profiles.CHEAPEST)


def install() -> None:
    """Make users and clients of this process hash with `HASHER`."""
    for module in (auth_users, auth_clients):
        module._HASHER = HASHER  # type: ignore[attr-defined]
