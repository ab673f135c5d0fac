"""Local users: argon2id password hashes, roles, the facility of facility roles, the recipient id
of recipients, and sign-in identifiers (email, mobile) kept only as keyed hashes.

Who may create which users is decided here, once (`grantable_roles`, `check_grant`, and
`Users.add(by=...)`): a system-admin (or work of the system itself) any user; a facility-admin
only `facility-staff` of their own facility, never linked to a recipient record. Linking a user
to a recipient record is for system-admins, and for the self-enrolment flow
(`Users.link_recipient`, a user claiming their own record)."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import re
import secrets
import unicodedata
from collections.abc import Callable, Iterable
from typing import Any

import sqlalchemy as sa
from argon2.exceptions import InvalidHashError, VerificationError

from open_registry.core import storage
from open_registry.core.auth.passwords import HASHER as _HASHER
from open_registry.core.auth.passwords import decoy_hash
from open_registry.core.auth.principal import (
    FACILITY_ADMIN,
    FACILITY_ROLES,
    FACILITY_STAFF,
    RECIPIENT,
    ROLES,
    SYSTEM_ADMIN,
    Principal,
)
from open_registry.core.auth.standing import revoke
from open_registry.core.codec import new_id, utcnow
from open_registry.core.errors import Conflict, Forbidden, Invalid, NotFound
from open_registry.core.storage import Database

#: matched whole (`fullmatch`: `$` would let a trailing newline through)
USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{1,99}")
MIN_PASSWORD = 10
CHANNELS = ("email", "sms")


def _bad(field: str, message: str) -> Invalid:
    return Invalid(message, errors=[{"pointer": f"/{field}", "message": message, "keyword": field}])


def normalise_identifier(channel: str, value: str) -> str:
    """An email in lower case; a mobile number as its digits with a leading + kept."""
    value = unicodedata.normalize("NFC", value.strip())
    if channel == "email":
        return value.lower()
    digits = re.sub(r"[^0-9]", "", value)
    return ("+" if value.startswith("+") else "") + digits


def check_identifier(channel: str, value: Any) -> str:
    if channel not in CHANNELS:
        raise _bad("channel", f"channel must be one of {', '.join(CHANNELS)}")
    if not isinstance(value, str) or not value.strip() or len(value) > 200:
        raise _bad("to", "give the email address or mobile number to send the code to")
    norm = normalise_identifier(channel, value)
    if channel == "email" and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", norm):
        raise _bad("to", "not an email address")
    if channel == "sms" and not re.fullmatch(r"\+?[0-9]{6,15}", norm):
        raise _bad("to", "not a mobile number (6 to 15 digits, + and country code allowed)")
    return norm


def check_roles(
    roles: Iterable[str], facility: str | None, recipient: str | None, *, signup: bool = False
) -> list[str]:
    """Roles known, the facility given for facility roles, the recipient id for recipients
    (except a user who signed up by code, whose record comes when they enrol)."""
    out = sorted(set(roles))
    if not out:
        raise _bad("roles", f"give at least one role: {', '.join(ROLES)}")
    unknown = [r for r in out if r not in ROLES]
    if unknown:
        raise _bad("roles", f"unknown role(s) {', '.join(unknown)}; roles: {', '.join(ROLES)}")
    if FACILITY_ROLES & set(out) and not facility:
        raise _bad("facility", "facility roles need the facility code (--facility)")
    if RECIPIENT in out and not recipient and not signup:
        raise _bad("recipient", "the recipient role needs the recipient id (--recipient)")
    return out


def grantable_roles(by: Principal) -> tuple[str, ...]:
    """The roles `by` may give a new user: any for a system-admin (and `system(...)` work),
    `facility-staff` for a facility-admin tied to a facility, none for anyone else."""
    if SYSTEM_ADMIN in by.roles:
        return ROLES
    if FACILITY_ADMIN in by.roles and by.facility:
        return (FACILITY_STAFF,)
    return ()


def check_grant(
    by: Principal, roles: Iterable[str], facility: str | None, recipient: str | None
) -> str | None:
    """Refuse (`Forbidden`, naming each field) a user `by` may not create; returns the facility
    the new user gets.

    A system-admin may create any user, linked to any facility or recipient record. A
    facility-admin only users of the roles `grantable_roles` gives them, always of their own
    facility (whatever `facility` says), and never linked to a recipient record (the link
    would make its user the owner of that person's records)."""
    if SYSTEM_ADMIN in by.roles:
        return facility
    allowed = grantable_roles(by)
    if not allowed:
        raise Forbidden("your roles may not create users")
    errors = []
    refused = sorted(set(roles) - set(allowed))
    if refused:
        errors.append(
            {
                "pointer": "/roles",
                "message": f"you may not give the role(s) {', '.join(refused)}; "
                f"yours to give: {', '.join(allowed)}",
                "keyword": "forbidden",
            }
        )
    if recipient:
        errors.append(
            {
                "pointer": "/recipient",
                "message": "only a system-admin may link a user to a recipient record",
                "keyword": "forbidden",
            }
        )
    if errors:
        fields = ", ".join(e["pointer"].strip("/") for e in errors)
        raise Forbidden(f"your roles may not create this user ({fields})", errors=errors)
    return by.facility


class Users:
    """The users table."""

    def __init__(self, db: Database, on_revoke: Callable[[str], None] | None = None):
        self.db = db
        self.table = db.metadata.tables["registry_users"]
        #: told the actor (`user:<name>`) whose tokens were just voided (`Standing.forget`)
        self.on_revoke = on_revoke
        decoy_hash(_HASHER)  # now, not at the first unknown name (which would take longer)

    def _revoked(self, username: str) -> None:
        if self.on_revoke is not None:
            self.on_revoke(f"user:{username}")

    def identifier_hash(self, channel: str, normalised: str) -> str:
        key = self.db.keyring().index_key
        msg = f"registry_users\x00{channel}\x00{normalised}".encode()
        return hmac.new(key, msg, hashlib.sha256).hexdigest()

    def add(
        self,
        username: str,
        *,
        roles: Iterable[str],
        password: str | None = None,
        facility: str | None = None,
        recipient: str | None = None,
        email: str | None = None,
        phone: str | None = None,
        actor: str | None = None,
        signup: bool = False,
        by: Principal | None = None,
    ) -> dict[str, Any]:
        """Create a user; `Invalid` naming the field, `Conflict` when the name or an
        identifier is taken. `signup`: a recipient without a record yet (see `sign_up`).
        `by`: the caller who asks (a page or route on someone's behalf), checked by
        `check_grant` first (`Forbidden`); the command line and sign-up pass none."""
        if by is not None:
            roles = list(roles)
            facility = check_grant(by, roles, facility, recipient)
            actor = actor or by.actor
        if not isinstance(username, str) or not USERNAME.fullmatch(username):
            raise _bad("username", "2-100 letters, digits, '.', '_', '@' or '-'")
        role_list = check_roles(roles, facility, recipient, signup=signup)
        if password is not None and len(password) < MIN_PASSWORD:
            raise _bad("password", f"at least {MIN_PASSWORD} characters")
        if password is None and not (email or phone):
            raise _bad("password", "give a password, or an email or mobile to sign in by code")
        now = utcnow()
        row = {
            "id": new_id(),
            "username": username,
            "password_hash": _HASHER.hash(password) if password else None,
            "roles": role_list,
            "facility": facility or None,
            "recipient": recipient or None,
            "email_bi": self.identifier_hash("email", check_identifier("email", email))
            if email
            else None,
            "phone_bi": self.identifier_hash("sms", check_identifier("sms", phone))
            if phone
            else None,
            "disabled": False,
            "created_at": now,
            "created_by": actor,
            "updated_at": now,
        }
        try:
            with storage.write(self.db.engine) as conn:
                conn.execute(self.table.insert().values(**row))
        except sa.exc.IntegrityError:
            raise Conflict(
                "a user with this username, email or mobile already exists",
                errors=[{"pointer": "/username", "message": "taken", "keyword": "unique"}],
            ) from None
        return self.public(row)

    @staticmethod
    def public(row: Any) -> dict[str, Any]:
        """A user as shown: no hashes."""
        return {
            "id": row["id"],
            "username": row["username"],
            "roles": list(row["roles"]),
            "facility": row["facility"],
            "recipient": row["recipient"],
            "password": row["password_hash"] is not None,
            "email": row["email_bi"] is not None,
            "mobile": row["phone_bi"] is not None,
            "disabled": bool(row["disabled"]),
        }

    def list(self, facility: str | None = None) -> list[dict[str, Any]]:
        stmt = sa.select(self.table).order_by(self.table.c.username)
        if facility is not None:
            stmt = stmt.where(self.table.c.facility == facility)
        with storage.read(self.db.engine) as conn:
            return [self.public(r) for r in conn.execute(stmt).mappings()]

    def get(self, username: str) -> Any:
        with storage.read(self.db.engine, snapshot=False) as conn:
            return (
                conn.execute(sa.select(self.table).where(self.table.c.username == username))
                .mappings()
                .first()
            )

    def set_disabled(self, username: str, disabled: bool) -> dict[str, Any]:
        """Disable a user (their tokens and sessions stop working at once, and stay void when
        they are enabled again) or enable them."""
        t = self.table
        with storage.write(self.db.engine) as conn:
            done = conn.execute(
                t.update()
                .where(t.c.username == username)
                .values(disabled=disabled, updated_at=utcnow())
            )
            if done.rowcount != 1:
                raise NotFound(f"no user {username!r}")
            if disabled:
                revoke(conn, self.db.metadata, f"user:{username}")
        self._revoked(username)
        return self.public(self.get(username))

    def set_password(self, username: str, password: str, *, revoke_tokens: bool = True) -> None:
        """A new password; the user's tokens and sessions issued before it stop working
        (unless `revoke_tokens` is false: the same password rehashed)."""
        if len(password) < MIN_PASSWORD:
            raise _bad("password", f"at least {MIN_PASSWORD} characters")
        t = self.table
        with storage.write(self.db.engine) as conn:
            done = conn.execute(
                t.update()
                .where(t.c.username == username)
                .values(password_hash=_HASHER.hash(password), updated_at=utcnow())
            )
            if done.rowcount != 1:
                raise NotFound(f"no user {username!r}")
            if revoke_tokens:
                revoke(conn, self.db.metadata, f"user:{username}")
        if revoke_tokens:
            self._revoked(username)

    def authenticate(self, username: str, password: str) -> Principal | None:
        """The user's principal when the password is right and the user enabled."""
        row = self.get(username) if isinstance(username, str) and len(username) <= 100 else None
        stored = row["password_hash"] if row is not None else None
        try:
            # no such user (or no password): the decoy, so it costs what a wrong password does
            _HASHER.verify(stored or decoy_hash(_HASHER), password)
        except (VerificationError, InvalidHashError):
            return None
        if row is None or stored is None or row["disabled"]:
            return None
        if _HASHER.check_needs_rehash(stored):
            self.set_password(username, password, revoke_tokens=False)
        return principal_of(row, via="password")

    def by_identifier(self, channel: str, normalised: str) -> Any:
        col = self.table.c.email_bi if channel == "email" else self.table.c.phone_bi
        h = self.identifier_hash(channel, normalised)
        with storage.read(self.db.engine, snapshot=False) as conn:
            return conn.execute(sa.select(self.table).where(col == h)).mappings().first()

    def sign_up(self, channel: str, normalised: str) -> Any:
        """A new user for an identifier that proved itself with a one-time code: the
        `recipient` role, no password, no recipient record yet (they enrol next). Returns the
        user's row (the existing one if a concurrent sign-up made it first)."""
        contact: dict[str, Any] = {"email" if channel == "email" else "phone": normalised}
        # a Conflict: the same identifier signed up meanwhile, and theirs is the user
        with contextlib.suppress(Conflict):
            self.add(
                f"recipient-{secrets.token_hex(6)}",
                roles=[RECIPIENT],
                actor="signup",
                signup=True,
                **contact,
            )
        return self.by_identifier(channel, normalised)

    def has_identifier(self, row: Any, channel: str, value: Any) -> bool:
        """Whether `value` (an email or mobile number, any spacing) is the user's sign-in
        identifier on `channel`."""
        try:
            norm = check_identifier(channel, value)
        except Invalid:
            return False
        stored = row["email_bi"] if channel == "email" else row["phone_bi"]
        return stored is not None and hmac.compare_digest(
            stored, self.identifier_hash(channel, norm)
        )

    def link_recipient(self, username: str, recipient: str) -> Principal:
        """Give a recipient-role user without a record their recipient record (in the caller's
        write transaction when there is one); `Conflict` if they have one already."""
        t = self.table
        with storage.write(self.db.engine) as conn:
            done = conn.execute(
                t.update()
                .where(t.c.username == username, t.c.recipient.is_(None), t.c.disabled.is_(False))
                .values(recipient=recipient, updated_at=utcnow())
            )
            if done.rowcount != 1:
                raise Conflict(
                    "this user has a recipient record already (or is disabled)",
                    errors=[{"pointer": "/recipient", "message": "linked", "keyword": "unique"}],
                )
            row = conn.execute(sa.select(t).where(t.c.username == username)).mappings().one()
        return principal_of(row, via="otp")

    def active(self, username: str) -> Principal | None:
        """The principal of an enabled user (sessions check this on every page)."""
        row = self.get(username)
        if row is None or row["disabled"]:
            return None
        return principal_of(row, via="session")


def principal_of(row: Any, *, via: str) -> Principal:
    return Principal(
        kind="user",
        subject=row["username"],
        roles=frozenset(row["roles"]),
        facility=row["facility"],
        recipient=row["recipient"],
        via=via,
    )
