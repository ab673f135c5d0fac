"""The one enforcement point: an entity's records as one caller may read and write them.

Every read or write of records on behalf of someone goes through a `Gate` (`Records(...)[name]`):
the generated API, the pages, exports and every plugin route; bulk imports check the caller with
the same rules (`Access.require`, the row scope, `writableBy`) before and while writing. A gate
applies the entity's `access` roles (401 without a login, 403 without the role), its `owner`
scope (a record outside it is not found, a write that would move a record out of it is
refused), `privateAccess` (private fields left out of what the caller may not see, filters on
them refused) and the write rules of `x-registry` (server-set and private fields; per-field
`writableBy`), all from `registry.auth.access`.

Work that is nobody's request names itself with `system(name)` (`registry.auth.principal`):
an explicit principal that passes every rule and is written to the audit log as
`system:<name>`; routes use it only after the caller's own Gate allowed the request (the
programme's bookings for recipients, the certificates' output formats). Outbox workers, the
command line and start-up still call the record services beneath the Gate, with their own
actor names (`certificates`, `sync:<source>`, `cli`): they serve no caller. A Gate always has
a principal: there is no unscoped default.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from open_registry.core import storage
from open_registry.core.auth.access import Access, Policy
from open_registry.core.auth.principal import Principal, system
from open_registry.core.errors import Forbidden, NotFound
from open_registry.core.query import Scope, Search
from open_registry.core.records import API, EntityService, Page


def check_private_filters(
    access: Access, principal: Principal, search: Search, scope: Scope | None
) -> None:
    """Searching by a private value is refused to callers who may not see it in every result
    (no lookup oracle: "whose is this identity number?")."""
    private = access.private
    if not private:
        return
    for f in search.filters:
        top = f.path.split(".")[0]
        if top in private and not access.may_filter_private(principal, scope):
            raise Forbidden(
                f"your roles may not search by the private field {top!r}",
                errors=[
                    {
                        "pointer": f"/filters/{f.path}/{f.op}",
                        "message": "a private field: your roles may not search by it",
                        "keyword": "private",
                    }
                ],
            )


__all__ = ["Gate", "Records", "check_private_filters", "system"]


class Gate:
    """One entity's records as `principal` may use them (see the module's docstring)."""

    def __init__(self, service: EntityService, access: Access, principal: Principal):
        self.service = service
        self.access = access
        self.principal = principal
        self.entity = service.entity
        self.name = service.entity.name

    # -- what the caller may do -----------------------------------------------------------
    def can(self, operation: str) -> bool:
        """Whether the caller may do `operation` on some record (for links and buttons)."""
        return self.access.can(self.principal, operation)

    def scope(self, operation: str) -> Scope | None:
        """The records the caller may do `operation` on (None: all); 401 or 403 otherwise."""
        return self.access.require(self.principal, operation)

    def view(self, record: dict[str, Any]) -> dict[str, Any]:
        """`record` as the caller may see it (private fields left out without the grant)."""
        return self.access.viewer(self.principal)(record)

    def check_filters(self, search: Search, scope: Scope | None) -> None:
        """Refuse (403) filters on private fields the caller may not search by."""
        check_private_filters(self.access, self.principal, search, scope)

    # -- reads ------------------------------------------------------------------------------
    def get(self, record_id: str) -> dict[str, Any]:
        """One record the caller may read, as they may see it (404 outside their scope)."""
        scope = self.scope("read")
        with storage.replica_reads():  # a caller's read: the read replica may serve it
            return self.view(self.service.get(record_id, scope=scope))

    async def get_async(self, record_id: str) -> dict[str, Any]:
        """`get` for a caller in the event loop (the read itself may still go to a thread)."""
        scope = self.scope("read")
        with storage.replica_reads():
            return self.view(await self.service.get_async(record_id, scope=scope))

    def find(self, record_id: str) -> dict[str, Any] | None:
        """Like `get`, or None when the caller may not read it (no 401/403/404 raised)."""
        if not self.can("read"):
            return None
        try:
            return self.get(record_id)
        except NotFound:
            return None

    def search(self, search: Search) -> Page:
        """A page of the records the caller may read, as they may see them."""
        scope = self.scope("read")
        self.check_filters(search, scope)
        with storage.replica_reads():
            page = self.service.search(search, scope=scope)
        view = self.access.viewer(self.principal)
        page.items = [view(r) for r in page.items]
        return page

    # -- writes -----------------------------------------------------------------------------
    def create(
        self, body: Any, *, record_id: str | None = None, origin: str = API
    ) -> dict[str, Any]:
        scope = self.scope("create")
        record = self.service.create(
            body,
            actor=self.principal.actor,
            record_id=record_id,
            prepare=self.access.preparer(self.principal, "create", scope),
            origin=origin,
        )
        return self.view(record)

    def update(
        self,
        record_id: str,
        body: Any,
        *,
        patch: bool = False,
        if_match: int | None = None,
        origin: str = API,
    ) -> dict[str, Any]:
        scope = self.scope("update")
        record = self.service.update(
            record_id,
            body,
            actor=self.principal.actor,
            if_match=if_match,
            patch=patch,
            scope=scope,
            prepare=self.access.preparer(self.principal, "update", scope),
            origin=origin,
        )
        return self.view(record)

    def delete(self, record_id: str, *, if_match: int | None = None, purge: bool = False) -> None:
        scope = self.scope("delete")
        self.service.delete(
            record_id, actor=self.principal.actor, if_match=if_match, purge=purge, scope=scope
        )


class Records(Mapping[str, Gate]):
    """Every entity's `Gate` for one principal: `Records(services, policy, p)["facility"]`."""

    def __init__(self, services: Mapping[str, EntityService], policy: Policy, principal: Principal):
        self.services = services
        self.policy = policy
        self.principal = principal

    def __getitem__(self, name: str) -> Gate:
        service = self.services.get(name)
        if service is None:
            raise NotFound(f"no entity {name!r}")
        return Gate(service, self.policy(service.entity), self.principal)

    def __iter__(self) -> Iterator[str]:
        return iter(self.services)

    def __len__(self) -> int:
        return len(self.services)
