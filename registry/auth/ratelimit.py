"""Fixed-window counters in the database, shared by every process of a deployment.

Keys name what is counted: `login-addr:<client address>` (sign-ins from an address, see
`auth/addresses.py` for which address that is), `login-user:<sha256 of the username>` (failed
password sign-ins of a username, from any address), `otp-addr:...`, `otp-id:...` (codes asked
for)."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from open_registry.core import storage
from open_registry.core.codec import utcnow
from open_registry.core.errors import RegistryError


class TooManyRequests(RegistryError):
    status = 429
    slug = "too-many-requests"
    title = "Too many requests"


class RateLimiter:
    """`hit(key, limit, window)`: count one more use of `key`; `TooManyRequests` past `limit`."""

    def __init__(self, engine: Engine, table: sa.Table):
        self.engine = engine
        self.table = table

    def hit(self, key: str, limit: int, window_seconds: int, what: str) -> None:
        now = utcnow()
        t = self.table
        with storage.write(self.engine) as conn:
            stmt = sa.select(t.c.window_start, t.c.count).where(t.c.key == key)
            if self.engine.dialect.name == "postgresql":
                stmt = stmt.with_for_update()
            row = conn.execute(stmt).first()
            if row is None:
                try:
                    with conn.begin_nested():
                        conn.execute(t.insert().values(key=key, window_start=now, count=1))
                    return
                except sa.exc.IntegrityError:  # another process inserted it first
                    row = conn.execute(stmt).first()
                    assert row is not None
            start, count = row
            end = start + timedelta(seconds=window_seconds)
            if now >= end:
                conn.execute(t.update().where(t.c.key == key).values(window_start=now, count=1))
                return
            if count >= limit:
                wait = max(1, int((end - now).total_seconds()))
                raise TooManyRequests(
                    f"too many {what}; try again in {wait} seconds",
                    headers={"Retry-After": str(wait)},
                )
            conn.execute(t.update().where(t.c.key == key).values(count=count + 1))

    def refund(self, key: str) -> None:
        """Take back one use of `key` (a sign-in that succeeded: only failures count)."""
        t = self.table
        with storage.write(self.engine) as conn:
            conn.execute(
                t.update().where(t.c.key == key, t.c.count > 0).values(count=t.c.count - 1)
            )
