"""One-time sign-in codes by mobile or email: 6 digits, valid `otp_ttl_seconds` (5 minutes),
`otp_max_attempts` (3) wrong tries then the identifier is locked out for `otp_lockout_seconds`,
and rate limits per identifier and per client address.

Identifiers are kept as keyed hashes only. Unknown identifiers get the same answers as known
ones (a code is "sent", tries are counted, lock-outs happen), so the API is no directory of who
is registered; only known, enabled users are actually sent a code, unless `otp_signup` is on:
then unknown identifiers are sent one too, and its verification signs them up (a new user with
the `recipient` role and no record yet; disabled users still get nothing).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from open_registry.core import storage
from open_registry.core.auth.principal import Principal
from open_registry.core.auth.ratelimit import RateLimiter, TooManyRequests
from open_registry.core.auth.users import Users, check_identifier, principal_of
from open_registry.core.codec import utcnow
from open_registry.core.errors import Unauthorized
from open_registry.core.settings import Settings

DIGITS = 6


class CodeRefused(Unauthorized):
    """A wrong, expired or used code (the same answer for each)."""

    def __init__(self, detail: str = "the code is wrong or has expired; ask for a new one"):
        super().__init__(detail)


@dataclass
class Outcome:
    """What a verification did, for the audit log."""

    principal: Principal | None
    reason: str


class OneTimeCodes:
    """Asks for and checks sign-in codes."""

    def __init__(self, settings: Settings, users: Users, limiter: RateLimiter):
        self.settings = settings
        self.users = users
        self.limiter = limiter
        self.db = users.db
        self.table = self.db.metadata.tables["registry_otp"]

    def _key(self, channel: str, normalised: str) -> str:
        return self.users.identifier_hash(channel, normalised)

    def _code_hash(self, key: str, code: str) -> str:
        secret = self.db.keyring().index_key
        return hmac.new(secret, f"otp\x00{key}\x00{code}".encode(), hashlib.sha256).hexdigest()

    def request(self, channel: str, to: Any, address: str) -> tuple[str, str | None]:
        """Start a sign-in: (normalised identifier, the code to send or None when the
        identifier is no enabled user's). Raises `TooManyRequests` past the rate limits."""
        s = self.settings
        norm = check_identifier(channel, to)
        key = self._key(channel, norm)
        window = s.otp_rate_window_seconds
        self.limiter.hit(f"otp-addr:{address}", s.otp_rate_per_address, window, "code requests")
        self.limiter.hit(f"otp-id:{key}", s.otp_rate_per_identifier, window, "code requests")
        user = self.users.by_identifier(channel, norm)
        wanted = (user is None and s.otp_signup) or (user is not None and not user["disabled"])
        code = f"{secrets.randbelow(10**DIGITS):0{DIGITS}d}"
        now = utcnow()
        t = self.table
        with storage.write(self.db.engine) as conn:
            row = conn.execute(sa.select(t).where(t.c.identifier == key)).mappings().first()
            if row is not None and row["locked_until"] is not None and row["locked_until"] > now:
                return norm, None  # locked out: nothing sent, and the answer is the same
            values = {
                "code_hash": self._code_hash(key, code) if wanted else None,
                "expires_at": now + timedelta(seconds=s.otp_ttl_seconds),
                "attempts": 0,
                "locked_until": None,
            }
            if row is None:
                conn.execute(t.insert().values(identifier=key, **values))
            else:
                conn.execute(t.update().where(t.c.identifier == key).values(**values))
        return norm, (code if wanted else None)

    def verify(self, channel: str, to: Any, code: Any, address: str) -> Outcome:
        """The user's principal for a right code; `CodeRefused` or `TooManyRequests`."""
        s = self.settings
        norm = check_identifier(channel, to)
        self.limiter.hit(
            f"login-addr:{address}",
            s.login_rate_per_address,
            s.otp_rate_window_seconds,
            "sign-in attempts from this address",
        )
        key = self._key(channel, norm)
        now = utcnow()
        t = self.table
        well_formed = isinstance(code, str) and len(code) == DIGITS and code.isdigit()
        with storage.write(self.db.engine) as conn:
            stmt = sa.select(t).where(t.c.identifier == key)
            if self.db.dialect == "postgresql":
                stmt = stmt.with_for_update()
            row = conn.execute(stmt).mappings().first()
            if row is None:
                raise CodeRefused()
            if row["locked_until"] is not None and row["locked_until"] > now:
                wait = int((row["locked_until"] - now).total_seconds()) + 1
                raise TooManyRequests(
                    f"too many wrong codes: locked out, try again in {wait} seconds",
                    headers={"Retry-After": str(wait)},
                )
            expected = row["code_hash"]
            given = self._code_hash(key, code) if well_formed else ""
            ok = (
                expected is not None
                and row["expires_at"] is not None
                and row["expires_at"] > now
                and hmac.compare_digest(expected, given)
            )
            if ok:
                conn.execute(
                    t.update()
                    .where(t.c.identifier == key)
                    .values(code_hash=None, expires_at=None, attempts=0)
                )
            else:
                attempts = row["attempts"] + 1
                values: dict[str, Any] = {"attempts": attempts}
                expired = row["expires_at"] is None or row["expires_at"] <= now
                if attempts >= s.otp_max_attempts:
                    values.update(
                        code_hash=None,
                        expires_at=None,
                        attempts=0,
                        locked_until=now + timedelta(seconds=s.otp_lockout_seconds),
                    )
                conn.execute(t.update().where(t.c.identifier == key).values(**values))
        if not ok:
            if attempts >= s.otp_max_attempts:
                raise TooManyRequests(
                    "too many wrong codes: locked out, ask for a new code later",
                    headers={"Retry-After": str(s.otp_lockout_seconds)},
                )
            raise CodeRefused(
                "the code has expired; ask for a new one"
                if expired
                else "the code is wrong or has expired"
            )
        user = self.users.by_identifier(channel, norm)
        if user is None and s.otp_signup:
            user = self.users.sign_up(channel, norm)
            if user is not None and not user["disabled"]:
                return Outcome(principal_of(user, via="otp"), "signup")
        if user is None or user["disabled"]:  # disabled since the code was sent
            raise CodeRefused()
        return Outcome(principal_of(user, via="otp"), "ok")
