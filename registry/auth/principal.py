"""Who is asking: the `Principal` every request carries (`request.state.principal`)."""

from __future__ import annotations

from dataclasses import dataclass, field

SYSTEM_ADMIN = "system-admin"
CONTROLLER = "controller"
MONITORING = "monitoring"
FACILITY_ADMIN = "facility-admin"
FACILITY_STAFF = "facility-staff"
RECIPIENT = "recipient"
API_CLIENT = "api-client"
#: The roles a user or a client can be given.
ROLES = (
    SYSTEM_ADMIN,
    CONTROLLER,
    MONITORING,
    FACILITY_ADMIN,
    FACILITY_STAFF,
    RECIPIENT,
    API_CLIENT,
)
#: Pseudo-roles of `x-registry.access`: anyone (no login needed), and the record's owner.
PUBLIC = "public"
OWNER = "owner"
#: Roles whose rights stop at their facility's records (when the entity has a facility owner).
FACILITY_ROLES = frozenset({FACILITY_ADMIN, FACILITY_STAFF})
#: OAuth2 scopes a client can be given besides its roles: signing credentials through the VC-API.
SCOPES = ("vc:issue",)


@dataclass(frozen=True)
class Principal:
    """An authenticated user, API client or OpenID Connect subject, or nobody (anonymous).

    `facility` is the facility code of facility roles; `recipient` the recipient id of a
    recipient. `via` says how it was authenticated (password, otp, client, oidc, session)."""

    kind: str  # anonymous | user | client | oidc
    subject: str | None = None
    roles: frozenset[str] = field(default_factory=frozenset)
    facility: str | None = None
    recipient: str | None = None
    via: str | None = None
    #: OAuth2 scopes of an API client (`vc:issue`)
    scopes: frozenset[str] = field(default_factory=frozenset)

    @property
    def authenticated(self) -> bool:
        return self.kind != "anonymous"

    @property
    def actor(self) -> str | None:
        """What the audit log and `_createdBy` / `_updatedBy` record: `user:asha`,
        `client:<client id>`, `oidc:<subject>`; None for anonymous requests."""
        if not self.authenticated:
            return None
        return f"{self.kind}:{self.subject}"

    def has(self, *roles: str) -> bool:
        return any(r in self.roles for r in roles)


ANONYMOUS = Principal("anonymous")
#: the kind of principal of work no caller asked for (see `system`)
SYSTEM = "system"


def system(name: str) -> Principal:
    """The principal of work no caller asked for (an outbox worker, a CLI command, start-up):
    every access rule lets it through, and the audit log names it `system:<name>`. Unscoped
    access is always this explicit principal, never a default."""
    return Principal(SYSTEM, subject=name, roles=frozenset({SYSTEM_ADMIN}), via=SYSTEM)
