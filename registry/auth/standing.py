"""Whether the user or API client a valid token of ours names may still act.

A token is refused, whatever its expiry, when its user or client is disabled now, or when it was
issued before the `not_before` of `registry_revocations` for that caller (set when the user is
disabled or given a new password, and when a client is disabled): so a disabled user's tokens
stop working at once, and re-enabling them does not bring the old tokens back.

Each request asks the database (one lookup by primary key or unique index) at most once per
`ttl` seconds per caller; disabling through this process's `Users`/`Clients` forgets the answer
at once, other processes (`registry user disable` on the command line) see it within `ttl`.

A token naming a user or client unknown here (the testing kit mints tokens for callers that have
no user) is checked for its signature and times only: users and clients are never deleted, so a
token of a real one always finds its row.
"""

from __future__ import annotations

import threading
import time

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from open_registry.core import storage
from open_registry.core.auth.principal import Principal
from open_registry.core.auth.tokens import TokenRefused
from open_registry.core.codec import utcnow
from open_registry.core.storage import Database

TABLE = "registry_revocations"
#: how long an answer is kept, in seconds
TTL = 1.0
CACHE_SIZE = 4096


class Revoked(TokenRefused):
    """A valid token of a disabled caller, or one issued before the caller's `not_before`."""

    def __init__(self, reason: str):
        super().__init__(
            reason,
            "the token was revoked (its user or client was disabled, or the password was "
            "changed); sign in again",
        )


def revoke(conn: Connection, metadata: sa.MetaData, actor: str) -> None:
    """Void every token of `actor` issued until now, in the caller's write transaction."""
    t = metadata.tables[TABLE]
    now = utcnow()
    if conn.execute(t.update().where(t.c.actor == actor).values(not_before=now)).rowcount:
        return
    try:
        with conn.begin_nested():
            conn.execute(t.insert().values(actor=actor, not_before=now))
    except sa.exc.IntegrityError:  # another process revoked it first: ours is later
        conn.execute(t.update().where(t.c.actor == actor).values(not_before=now))


class Standing:
    """The enabled state and `not_before` of callers, cached `ttl` seconds."""

    def __init__(self, db: Database, ttl: float = TTL):
        self.db = db
        self.ttl = ttl
        tables = db.metadata.tables
        self.revocations = tables[TABLE]
        self.users = tables["registry_users"]
        self.clients = tables["registry_clients"]
        #: actor -> (when looked up, monotonic; disabled; not_before in ms or None)
        self._cache: dict[str, tuple[float, bool, int | None]] = {}
        self._lock = threading.Lock()
        self._generation = 0  # moved by `forget`: an answer looked up meanwhile is not kept

    def forget(self, actor: str) -> None:
        """Drop what is known of `actor` (after disabling it or voiding its tokens)."""
        with self._lock:
            self._generation += 1
            self._cache.pop(actor, None)

    def known(self, p: Principal) -> bool:
        """Whether `check(p, ...)` can answer without the database."""
        if p.kind not in ("user", "client"):
            return True
        hit = self._cache.get(p.actor or "")
        return hit is not None and time.monotonic() - hit[0] <= self.ttl

    def check(self, p: Principal, issued_ms: int) -> None:
        """`Revoked` when `p` (from a token issued at `issued_ms`) may no longer act."""
        if p.kind not in ("user", "client"):
            return  # OpenID Connect subjects: their provider decides
        actor = p.actor or ""
        now = time.monotonic()
        hit = self._cache.get(actor)
        if hit is None or now - hit[0] > self.ttl:
            generation = self._generation
            disabled, not_before = self._lookup(p, actor)
            hit = (now, disabled, not_before)
            with self._lock:
                if generation == self._generation:
                    if len(self._cache) >= CACHE_SIZE:
                        self._cache.clear()
                    self._cache[actor] = hit
        _, disabled, not_before = hit
        if disabled:
            raise Revoked(f"{p.kind} disabled")
        if not_before is not None and issued_ms < not_before:
            raise Revoked("revoked: issued before the last disable or password change")

    def _lookup(self, p: Principal, actor: str) -> tuple[bool, int | None]:
        floor = (
            sa.select(self.revocations.c.not_before)
            .where(self.revocations.c.actor == actor)
            .scalar_subquery()
        )
        if p.kind == "user":
            t, key = self.users, self.users.c.username
        else:
            t, key = self.clients, self.clients.c.client_id
        with storage.read(self.db.engine, snapshot=False) as conn:
            row = conn.execute(sa.select(t.c.disabled, floor).where(key == p.subject)).first()
        if row is None:
            return False, None
        disabled, not_before = row
        return bool(disabled), None if not_before is None else int(not_before.timestamp() * 1000)
