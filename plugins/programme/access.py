"""Who may use the plugin's own routes, and on which records.

Every route declares a `Rule` (`registry.auth.rules`): the named ones below, or an entity rule
(`rules.entity("appointment", "update", record="appointment_id")`). A rule of roles always
includes `system-admin`. Records are read and written through the caller's `Gate`
(`registry.records(principal)[entity]`), so facility staff reach only their facility's records
(404 outside, no existence oracle) and may not write records naming another facility (403).
Where a route must write what the caller could not write through the generic API (a
recipient's own enrolment, a booking taking over the programme's suggested appointment), it
checks the caller's scope through their gate first (`check_scope`) and then writes as
`system("programme")`, explicitly (`as_programme`).
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from open_registry.core import Gate, NotFound, Principal, Records, principal_of, system
from open_registry.core.auth import rules
from open_registry.core.auth.rules import Rule
from open_registry.plugins.programme.runtime import ACTOR

SYSTEM_ADMIN = "system-admin"
CONTROLLER = "controller"
MONITORING = "monitoring"
FACILITY_ADMIN = "facility-admin"
FACILITY_STAFF = "facility-staff"
RECIPIENT = "recipient"
FACILITY_ROLES = frozenset({FACILITY_ADMIN, FACILITY_STAFF})

__all__ = [
    "Principal",
    "as_programme",
    "check_recipient",
    "check_scope",
    "principal",
    "records",
    "roles",
]


def roles(*names: str) -> Rule:
    """The rule "one of `names`, or a system administrator" (401 anonymous, 403 otherwise)."""
    return rules.roles(*names, SYSTEM_ADMIN)


#: the rules of the routes that are not about one entity's records
CONTROLLERS = roles(CONTROLLER)
MONITORS = roles(MONITORING, CONTROLLER)
STAFF = roles(FACILITY_ADMIN, FACILITY_STAFF)
PEOPLE_AND_STAFF = roles(RECIPIENT, FACILITY_ADMIN, FACILITY_STAFF)
STOCK_READERS = roles(CONTROLLER, MONITORING, FACILITY_ADMIN, FACILITY_STAFF)
#: a signed-up person (the recipient role only; the handlers refuse anyone with more roles)
SIGNED_UP = rules.roles(RECIPIENT)


def principal(request: Request) -> Principal:
    """The caller (anonymous when nothing authenticated the request)."""
    return principal_of(request)


def records(request: Request) -> Records:
    """Every entity's records as the caller may read and write them."""
    return request.app.state.registry.records(principal_of(request))


def as_programme(registry: Any) -> Records:
    """Every entity's records as the programme writes them on its own account: only after the
    caller's scope was checked through their own gate (`check_scope`)."""
    return registry.records(system(ACTOR))


def check_scope(gate: Gate, operation: str, record: dict[str, Any]) -> None:
    """Refuse (401/403) a `record` the gate's caller may not `operation`: the same rule and the
    same answer as a write of it through the generic API (e.g. "you may only create records of
    your own facility", naming the field)."""
    scope = gate.scope(operation)
    if scope is None:
        return
    # only the owner fields: this checks the scope, the write itself checks the rest
    owned = {path.split(".")[0] for path in gate.access.paths.values()}
    fields = {k: v for k, v in record.items() if k in owned}
    gate.access.preparer(gate.principal, operation, scope)(None, {}, fields)


def in_scope(gate: Gate, operation: str, record: dict[str, Any]) -> bool:
    """Whether the gate's caller may `operation` this very record (no error raised)."""
    if not gate.can(operation):
        return False
    scope = gate.scope(operation)
    return scope is None or scope.matches(record)


def check_recipient(who: Principal, recipient: str | None, what: str = "record") -> None:
    """A recipient reaches only their own records (404 for others)."""
    if who.roles == {RECIPIENT} and (recipient is None or recipient != who.recipient):
        raise NotFound(f"no such {what}")
