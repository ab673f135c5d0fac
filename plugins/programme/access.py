"""Who is asking, for the plugin's own routes: one small place to rewire when access control
lands (roles and the facility or recipient a user is tied to).

Until the registry authenticates requests, a request carries no principal and every route is
open, as the generated API is; with a principal, `require` checks its roles and `scope` limits
facility staff to their facility and recipients to themselves (404 outside, no existence oracle).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from fastapi import Request

from registry import Forbidden, NotFound

SYSTEM_ADMIN = "system-admin"
CONTROLLER = "controller"
MONITORING = "monitoring"
FACILITY_ADMIN = "facility-admin"
FACILITY_STAFF = "facility-staff"
RECIPIENT = "recipient"
FACILITY_ROLES = frozenset({FACILITY_ADMIN, FACILITY_STAFF})


@dataclass(frozen=True)
class Principal:
    """The caller: its actor name (for the audit log), roles, facility and recipient record.

    `roles` is None when the registry does not authenticate (everything allowed)."""

    actor: str | None = None
    roles: frozenset[str] | None = None
    facility: str | None = None
    recipient: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def open(self) -> bool:
        return self.roles is None

    def has(self, roles: Iterable[str]) -> bool:
        return self.roles is None or bool(self.roles & set(roles))


def principal(request: Request) -> Principal:
    """The request's principal as access control leaves it on `request.state`."""
    state = request.state
    found = getattr(state, "principal", None)
    if found is not None:
        roles = getattr(found, "roles", None)
        return Principal(
            actor=getattr(found, "actor", None) or getattr(found, "subject", None),
            roles=frozenset(roles) if roles is not None else None,
            facility=getattr(found, "facility", None),
            recipient=getattr(found, "recipient", None),
        )
    return Principal(actor=getattr(state, "actor", None))


def require(request: Request, *roles: str) -> Principal:
    """The principal, if it has one of `roles` (system administrators always do); else 403."""
    who = principal(request)
    if not who.has({*roles, SYSTEM_ADMIN}):
        raise Forbidden(f"this needs one of the roles: {', '.join(sorted(roles))}")
    return who


def check_facility(who: Principal, facility: str | None, what: str = "record") -> None:
    """Facility staff reach only their own facility's records (404 for others)."""
    if who.open or who.roles is None or not (who.roles & FACILITY_ROLES):
        return
    if who.roles - FACILITY_ROLES - {RECIPIENT}:
        return  # also holds a wider role
    if facility != who.facility:
        raise NotFound(f"no such {what}")


def check_recipient(who: Principal, recipient: str | None, what: str = "record") -> None:
    """A recipient reaches only their own records (404 for others)."""
    if who.open or who.roles is None or who.roles != {RECIPIENT}:
        return
    if recipient is None or recipient != who.recipient:
        raise NotFound(f"no such {what}")
