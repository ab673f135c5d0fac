"""Who may use the plugin's own routes: the caller is access control's `Principal`
(`registry.principal_of`); routes ask `require` for roles, and `check_facility` /
`check_recipient` keep facility staff to their facility's records and recipients to their own
(404 outside, no existence oracle)."""

from __future__ import annotations

from fastapi import Request

from open_registry.core import Forbidden, NotFound, Principal, Unauthorized, principal_of

SYSTEM_ADMIN = "system-admin"
CONTROLLER = "controller"
MONITORING = "monitoring"
FACILITY_ADMIN = "facility-admin"
FACILITY_STAFF = "facility-staff"
RECIPIENT = "recipient"
FACILITY_ROLES = frozenset({FACILITY_ADMIN, FACILITY_STAFF})

__all__ = ["Principal", "check_facility", "check_recipient", "principal", "require"]


def principal(request: Request) -> Principal:
    """The caller (anonymous when nothing authenticated the request)."""
    return principal_of(request)


def require(request: Request, *roles: str) -> Principal:
    """The caller, if it has one of `roles` (system administrators always do); 401 when not
    signed in, 403 otherwise."""
    who = principal_of(request)
    if not who.has(*roles, SYSTEM_ADMIN):
        if not who.authenticated:
            raise Unauthorized("sign in first", headers={"WWW-Authenticate": "Bearer"})
        raise Forbidden(f"this needs one of the roles: {', '.join(sorted(roles))}")
    return who


def only_facility_roles(who: Principal) -> bool:
    """Whether every role the caller holds stops at its facility."""
    return (
        bool(who.roles)
        and who.roles <= FACILITY_ROLES | {RECIPIENT}
        and bool(who.roles & FACILITY_ROLES)
    )


def check_facility(who: Principal, facility: str | None, what: str = "record") -> None:
    """Facility staff reach only their own facility's records (404 for others)."""
    if only_facility_roles(who) and facility != who.facility:
        raise NotFound(f"no such {what}")


def check_recipient(who: Principal, recipient: str | None, what: str = "record") -> None:
    """A recipient reaches only their own records (404 for others)."""
    if who.roles == {RECIPIENT} and (recipient is None or recipient != who.recipient):
        raise NotFound(f"no such {what}")
