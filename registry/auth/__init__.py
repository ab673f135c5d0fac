"""Users, roles, tokens and access rules (docs/security.md).

Plugins use `principal_of(request)` for the caller and `registry.auth.access(entity)` for an
entity's rules (`require`, `viewer`, `preparer`); both are in `registry`'s public names too.
"""

from open_registry.core.auth.access import Access, Grant, Policy
from open_registry.core.auth.deps import Auth, AuthMiddleware, principal_of
from open_registry.core.auth.principal import ANONYMOUS, OWNER, PUBLIC, ROLES, Principal

__all__ = [
    "ANONYMOUS",
    "OWNER",
    "PUBLIC",
    "ROLES",
    "Access",
    "Auth",
    "AuthMiddleware",
    "Grant",
    "Policy",
    "Principal",
    "principal_of",
]
