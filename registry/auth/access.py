"""Access rules of one entity, from its schema: who may do what, on which rows, and which fields
they see and may write.

- `x-registry.access` maps create/read/update/delete to roles, plus `public` (anyone, no login)
  and `owner` (a caller whose facility code or recipient id is the record's, see
  `EntitySchema.owner_paths`). An entity without `access`, or an operation it does not list, is
  for `system-admin` only.
- Facility roles listed for an entity with a facility owner path act on their facility's rows
  only; `recipient` on an entity with a recipient owner path on their own rows only. Every other
  role listed acts on every row.
- Private fields are shown only to the roles of `x-registry.privateAccess` (default
  `system-admin`, `owner`), with the same row rules; for everyone else they are left out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from open_registry.core.auth.principal import (
    FACILITY_ROLES,
    OWNER,
    PUBLIC,
    RECIPIENT,
    SYSTEM,
    SYSTEM_ADMIN,
    Principal,
)
from open_registry.core.errors import Forbidden, Invalid, Unauthorized
from open_registry.core.query import Scope
from open_registry.generators.schema import EntitySchema

ADMIN_ONLY = (SYSTEM_ADMIN,)


@dataclass(frozen=True)
class Grant:
    """The answer to "may this caller do this": `allowed`, and on which rows (`scope` None:
    all of them)."""

    allowed: bool
    scope: Scope | None = None

    @property
    def everywhere(self) -> bool:
        return self.allowed and self.scope is None


DENIED = Grant(False, Scope())
EVERYWHERE = Grant(True, None)


def _kind_of_role(role: str) -> str | None:
    if role in FACILITY_ROLES:
        return "facility"
    if role == RECIPIENT:
        return "recipient"
    return None


class Access:
    """The access rules of one entity."""

    def __init__(self, entity: EntitySchema):
        self.entity = entity
        self.paths = entity.owner_paths
        self.private = frozenset(entity.private)
        self.internal = frozenset(entity.internal)

    def roles_for(self, operation: str) -> tuple[str, ...]:
        """The roles `x-registry.access` gives an operation (system-admin when it says none)."""
        found = self.entity.access.get(operation) if self.entity.access else None
        return ADMIN_ONLY if found is None else tuple(found)

    def _keys(self, p: Principal, kinds: Iterable[str]) -> list[tuple[str, Any]]:
        out = []
        for kind in kinds:
            path = self.paths.get(kind)
            key = p.facility if kind == "facility" else p.recipient
            if path is not None and key:
                out.append((path, key))
        return out

    def grant_of(self, p: Principal, roles: Iterable[str]) -> Grant:
        """What `roles` (an access list) give `p` (a `system` principal: everything)."""
        if p.kind == SYSTEM:
            return EVERYWHERE
        allowed = False
        alternatives: list[tuple[str, Any]] = []
        for role in roles:
            if role == PUBLIC:
                return EVERYWHERE
            if not p.authenticated:
                continue
            if role == OWNER:
                allowed = True
                alternatives.extend(self._keys(p, self.paths))
                continue
            if role not in p.roles:
                continue
            kind = _kind_of_role(role)
            if kind is None or kind not in self.paths:
                return EVERYWHERE
            allowed = True
            alternatives.extend(self._keys(p, [kind]))
        if not allowed:
            return DENIED
        return Grant(True, Scope(tuple(dict.fromkeys(alternatives))))

    def grant(self, p: Principal, operation: str) -> Grant:
        return self.grant_of(p, self.roles_for(operation))

    def can(self, p: Principal, operation: str) -> bool:
        """Whether `p` may do `operation` on some record of this entity."""
        return self.grant(p, operation).allowed

    def require(self, p: Principal, operation: str) -> Scope | None:
        """The rows `p` may do `operation` on; `Unauthorized` (no login) or `Forbidden`."""
        return self.require_roles(p, self.roles_for(operation), operation)

    def require_roles(self, p: Principal, roles: Iterable[str], operation: str) -> Scope | None:
        """Like `require`, for an access list of a plugin's own (e.g. who may revoke)."""
        g = self.grant_of(p, roles)
        if g.allowed:
            return g.scope
        name = self.entity.name
        if not p.authenticated:
            raise Unauthorized(
                f"sign in to {operation} {name} records", headers={"WWW-Authenticate": "Bearer"}
            )
        raise Forbidden(
            f"your roles ({', '.join(sorted(p.roles)) or 'none'}) may not "
            f"{operation} {name} records"
        )

    # -- private fields ----------------------------------------------------------------------
    def private_grant(self, p: Principal) -> Grant:
        if not self.private:
            return EVERYWHERE
        return self.grant_of(p, self.entity.private_access)

    def never_sees_private(self, p: Principal) -> bool:
        """Whether `p` sees the private fields of no record at all."""
        g = self.private_grant(p)
        return not g.allowed or (g.scope is not None and not g.scope.alternatives)

    def sees_private(self, p: Principal, record: Mapping[str, Any]) -> bool:
        g = self.private_grant(p)
        return g.allowed and (g.scope is None or g.scope.matches(record))

    def viewer(self, p: Principal) -> Any:
        """A function record -> the record as `p` may see it (private fields left out where
        `p` has no grant)."""
        g = self.private_grant(p)
        if g.everywhere:
            return _same
        private = self.private
        scope = g.scope if g.allowed else Scope()

        def view(record: dict[str, Any]) -> dict[str, Any]:
            if scope is not None and scope.matches(record):
                return record
            return {k: v for k, v in record.items() if k not in private}

        return view

    def may_filter_private(self, p: Principal, read_scope: Scope | None) -> bool:
        """Searching by a private value is for callers who would see it in every result."""
        g = self.private_grant(p)
        if g.everywhere:
            return True
        if not g.allowed or g.scope is None or read_scope is None:
            return False
        return set(read_scope.alternatives) <= set(g.scope.alternatives)

    # -- writes ------------------------------------------------------------------------------
    def unwritable(self, p: Principal) -> tuple[str, ...]:
        """The fields of `x-registry.writableBy` that `p` may not set or change: those whose
        roles `p` holds none of (none for the `system` principal and system-admins)."""
        rules = self.entity.writable_by
        if not rules or p.kind == SYSTEM or SYSTEM_ADMIN in p.roles:
            return ()
        return tuple(k for k, roles in rules.items() if not p.has(*roles))

    def writable_by_errors(
        self,
        fields: Iterable[str],
        old: Mapping[str, Any] | None,
        body: Mapping[str, Any],
        new: dict[str, Any],
    ) -> list[dict[str, str]]:
        """The `writableBy` rule for `fields` (`unwritable`) on one write: `old` the stored
        record (None: a create), `body` what the caller sent, `new` the record to be written.

        A field `body` leaves out keeps its stored value in `new` (a replace, as for internal
        fields); one `new` would change is an error. On create a field may be left out or hold
        its schema's `default`; any other value (any value at all without a default) is an
        error. One error per field (pointer, message, keyword `writableBy`), never quoting the
        value sent; the importer can report them as row errors."""
        errors: list[dict[str, str]] = []
        rules = self.entity.writable_by
        for k in fields:
            who = ", ".join(rules[k])
            if old is None:
                schema = self.entity.fields[k].schema if k in self.entity.fields else {}
                if k not in new or ("default" in schema and new[k] == schema["default"]):
                    continue
                message = f"only {who} may set it: leave it out"
                if "default" in schema:
                    message += f" or send its default {schema['default']!r}"
            else:
                if k not in body:
                    if k in old:
                        new[k] = old[k]
                    else:
                        new.pop(k, None)
                if old.get(k) == new.get(k):
                    continue
                message = f"only {who} may change it"
            errors.append({"pointer": f"/{k}", "message": message, "keyword": "writableBy"})
        return errors

    def preparer(self, p: Principal, operation: str, scope: Scope | None) -> Any:
        """The write rules of `p` for `EntityService.create/update(prepare=...)`: internal
        fields, private fields, `writableBy` (`writable_by_errors`), the row scope."""
        internal, private, paths = self.internal, self.private, self.paths
        pgrant = self.private_grant(p)
        unwritable = self.unwritable(p)

        def prepare(
            old: Mapping[str, Any] | None, body: Mapping[str, Any], new: dict[str, Any]
        ) -> dict[str, Any]:
            errors = [
                {
                    "pointer": f"/{k}",
                    "message": f"{k!r} is set by the server",
                    "keyword": "readOnly",
                }
                for k in body
                if k in internal
            ]
            if errors:
                raise Invalid(f"{len(errors)} field(s) failed validation", errors=errors)
            if old is not None:
                for k in internal:  # a replace keeps what the caller cannot see
                    if k in old and k not in body:
                        new[k] = old[k]
                if private and not (
                    pgrant.allowed and (pgrant.scope is None or pgrant.scope.matches(old))
                ):
                    refused = sorted(k for k in body if k in private)
                    if refused:
                        raise Forbidden(
                            "your roles may not change private fields of this record",
                            errors=[
                                {
                                    "pointer": f"/{k}",
                                    "message": "a private field: you may not change it",
                                    "keyword": "forbidden",
                                }
                                for k in refused
                            ],
                        )
                    for k in private:
                        if k in old:
                            new[k] = old[k]
            denied = self.writable_by_errors(unwritable, old, body, new) if unwritable else []
            if denied:
                names = ", ".join(e["pointer"][1:] for e in denied)
                raise Forbidden(
                    f"your roles ({', '.join(sorted(p.roles)) or 'none'}) may not "
                    f"{'set' if old is None else 'change'} {names} of {self.entity.name} "
                    "records",
                    errors=denied,
                )
            if scope is not None and not scope.matches(new):
                owned = sorted({path for path, _ in scope.alternatives} or set(paths.values()))
                raise Forbidden(
                    f"you may only {operation} records of your own "
                    f"{' or '.join(k for k in paths if paths[k] in owned) or 'scope'}",
                    errors=[
                        {
                            "pointer": f"/{path.replace('.', '/')}",
                            "message": "must name your own facility or recipient record",
                            "keyword": "scope",
                        }
                        for path in owned
                    ],
                )
            return new

        return prepare


def _same(record: dict[str, Any]) -> dict[str, Any]:
    return record


class Policy:
    """`Access` of every entity, built once per schema version."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[EntitySchema, Access]] = {}

    def __call__(self, entity: EntitySchema) -> Access:
        hit = self._cache.get(entity.name)
        if hit is None or hit[0] is not entity:
            hit = (entity, Access(entity))
            self._cache[entity.name] = hit
        return hit[1]
