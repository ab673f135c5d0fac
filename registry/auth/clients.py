"""API clients (OAuth2 client credentials): an id and a secret shown once (only its argon2 hash
is kept), the roles the client acts with (always `api-client` plus those given) and the
facility code when a facility role is among them."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from typing import Any

import sqlalchemy as sa
from argon2.exceptions import InvalidHashError, VerificationError

from open_registry.core import storage
from open_registry.core.auth.passwords import HASHER as _HASHER
from open_registry.core.auth.passwords import decoy_hash
from open_registry.core.auth.principal import API_CLIENT, RECIPIENT, SCOPES, Principal
from open_registry.core.auth.standing import revoke
from open_registry.core.auth.users import check_roles
from open_registry.core.codec import utcnow
from open_registry.core.errors import Invalid, NotFound
from open_registry.core.storage import Database


class Clients:
    """The clients table."""

    def __init__(self, db: Database, on_revoke: Callable[[str], None] | None = None):
        self.db = db
        self.table = db.metadata.tables["registry_clients"]
        #: told the actor (`client:<id>`) whose tokens were just voided (`Standing.forget`)
        self.on_revoke = on_revoke
        decoy_hash(_HASHER)  # now, not at the first unknown name (which would take longer)

    def add(
        self,
        *,
        roles: Iterable[str] = (),
        facility: str | None = None,
        name: str | None = None,
        scopes: Iterable[str] = (),
        actor: str | None = None,
    ) -> tuple[dict[str, Any], str]:
        """A new client and its secret (shown once: it cannot be read back)."""
        scope_list = sorted(set(scopes))
        unknown = [s for s in scope_list if s not in SCOPES]
        if unknown:
            raise Invalid(
                f"unknown scope(s) {', '.join(unknown)}; scopes: {', '.join(SCOPES)}",
                errors=[{"pointer": "/scopes", "message": "unknown scope", "keyword": "enum"}],
            )
        wanted = {API_CLIENT, *roles}
        if RECIPIENT in wanted:
            raise Invalid(
                "an API client cannot act as a recipient",
                errors=[{"pointer": "/roles", "message": "not for clients", "keyword": "roles"}],
            )
        role_list = check_roles(wanted, facility, None)
        client_id = "cl_" + secrets.token_hex(12)
        secret = secrets.token_urlsafe(32)
        row = {
            "client_id": client_id,
            "secret_hash": _HASHER.hash(secret),
            "name": name,
            "roles": role_list,
            "facility": facility or None,
            "scopes": scope_list,
            "disabled": False,
            "created_at": utcnow(),
            "created_by": actor,
        }
        with storage.write(self.db.engine) as conn:
            conn.execute(self.table.insert().values(**row))
        return self.public(row), secret

    @staticmethod
    def public(row: Any) -> dict[str, Any]:
        return {
            "clientId": row["client_id"],
            "name": row["name"],
            "roles": list(row["roles"]),
            "facility": row["facility"],
            "scopes": list(row["scopes"] or []),
            "disabled": bool(row["disabled"]),
        }

    def list(self) -> list[dict[str, Any]]:
        with storage.read(self.db.engine) as conn:
            rows = conn.execute(sa.select(self.table).order_by(self.table.c.created_at))
            return [self.public(r) for r in rows.mappings()]

    def set_disabled(self, client_id: str, disabled: bool) -> dict[str, Any]:
        t = self.table
        with storage.write(self.db.engine) as conn:
            done = conn.execute(
                t.update().where(t.c.client_id == client_id).values(disabled=disabled)
            )
            if done.rowcount != 1:
                raise NotFound(f"no client {client_id!r}")
            if disabled:  # its tokens stop working at once, and stay void if enabled again
                revoke(conn, self.db.metadata, f"client:{client_id}")
            row = conn.execute(sa.select(t).where(t.c.client_id == client_id)).mappings().one()
        if self.on_revoke is not None:
            self.on_revoke(f"client:{client_id}")
        return self.public(row)

    def authenticate(self, client_id: str, secret: str) -> Principal | None:
        """The client's principal when the secret is right and the client enabled."""
        row = None
        if isinstance(client_id, str) and len(client_id) <= 64:
            with storage.read(self.db.engine, snapshot=False) as conn:
                row = (
                    conn.execute(sa.select(self.table).where(self.table.c.client_id == client_id))
                    .mappings()
                    .first()
                )
        try:
            _HASHER.verify(row["secret_hash"] if row is not None else decoy_hash(_HASHER), secret)
        except (VerificationError, InvalidHashError):
            return None
        if row is None or row["disabled"]:
            return None
        return Principal(
            kind="client",
            subject=row["client_id"],
            roles=frozenset(row["roles"]),
            facility=row["facility"],
            via="client_credentials",
            scopes=frozenset(row["scopes"] or []),
        )
