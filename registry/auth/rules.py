"""Who may use each route: every route of the app declares a `Rule`, checked before its handler.

A rule is a FastAPI dependency (`dependencies=[Depends(rule)]`, or `declare(rule)` on a page
handler) and the route's declaration at once: the route-inventory test
(`tests/registry/test_route_rules.py`) fails for any route of the built app without one, and
tries each route as anonymous, as a role without the right and as staff of another facility.

- `PUBLIC`: anyone, no sign-in (`why` says why it may be public);
- `SIGNED_IN`: any signed-in caller (what they then see is theirs: `/auth/me`);
- `roles(...)`: callers with one of the roles (401 anonymous, 403 otherwise);
- `entity(name, operation, record=...)`: the entity's `x-registry.access` for the operation
  (401/403); the handler then reads and writes through `registry.gate` (records outside the
  caller's scope are not found). `name` may be `"{entity}"`: the route's path parameter.

A `system` principal (`registry.auth.principal.system`) passes every rule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from open_registry.core.auth.deps import principal_of
from open_registry.core.auth.principal import SYSTEM, Principal
from open_registry.core.errors import Forbidden, NotFound, Unauthorized

#: the attribute a handler's rule is kept in (`declare`)
ATTRIBUTE = "__access_rule__"


@dataclass(frozen=True)
class Rule:
    """Who may use a route (see the module's docstring)."""

    who: str  # public | signed-in | roles | entity
    roles: tuple[str, ...] = ()
    entity: str | None = None
    operation: str | None = None
    #: the path parameter naming a record of `entity` (callers outside its scope: 404)
    record: str | None = None
    why: str = ""

    def entity_name(self, request: Request) -> str | None:
        if self.entity == "{entity}":
            return str(request.path_params.get("entity", ""))
        return self.entity

    def check(self, request: Request) -> Principal:
        """The caller, if the rule lets them in; else `Unauthorized` or `Forbidden`."""
        p = principal_of(request)
        if self.who == "public" or p.kind == SYSTEM:
            return p
        if self.who == "entity":
            name = self.entity_name(request)
            registry = request.app.state.registry
            service = registry.services.get(name)
            if service is None:
                raise NotFound(f"no entity {name!r}")
            registry.auth.policy(service.entity).require(p, self.operation or "read")
            return p
        if not p.authenticated:
            raise Unauthorized("sign in first", headers={"WWW-Authenticate": "Bearer"})
        if self.who == "roles" and not p.has(*self.roles):
            raise Forbidden(f"this needs one of the roles {', '.join(self.roles)}")
        return p

    async def __call__(self, request: Request) -> None:
        self.check(request)

    def describe(self) -> str:
        """The rule in words (the OpenAPI document and the docs quote it)."""
        if self.who == "public":
            return f"public: {self.why}" if self.why else "public"
        if self.who == "signed-in":
            return "any signed-in caller"
        if self.who == "roles":
            return "roles: " + ", ".join(self.roles)
        scoped = f" (records outside the caller's scope are not found: {self.record})"
        return f"{self.entity}: x-registry.access.{self.operation}" + (
            scoped if self.record else ""
        )


def public(why: str) -> Rule:
    """Anyone may use the route; `why` says why that is safe."""
    return Rule("public", why=why)


SIGNED_IN = Rule("signed-in")


def roles(*names: str) -> Rule:
    return Rule("roles", roles=tuple(names))


def entity(name: str, operation: str, *, record: str | None = None) -> Rule:
    return Rule("entity", entity=name, operation=operation, record=record)


def declare(rule: Rule) -> Callable[[Any], Any]:
    """Mark a handler with its rule (for routes that check it themselves, e.g. pages, which
    answer a sign-in redirect rather than a 401)."""

    def mark(fn: Any) -> Any:
        setattr(fn, ATTRIBUTE, rule)
        return fn

    return mark


def declare_route(route: Any, rule: Rule) -> None:
    """Mark a route the framework made (a static mount, the OpenAPI document) with its rule."""
    setattr(route, ATTRIBUTE, rule)


def routes_of(app: Any) -> list[Any]:
    """Every route of `app`, through included routers (FastAPI keeps them nested: an included
    router is one route whose `effective_candidates()` are its routes)."""
    out: list[Any] = []

    def walk(routes: Any) -> None:
        for r in routes:
            if hasattr(r, "effective_candidates"):
                walk(r.effective_candidates())
            elif hasattr(r, "path"):
                out.append(r)

    walk(app.routes)
    return out


def rule_of(route: Any) -> Rule | None:
    """The rule a route declares: a `Rule` among its dependencies, on its handler, or on the
    route itself (`declare_route`)."""
    for dep in getattr(route, "dependencies", None) or ():
        call = getattr(dep, "dependency", None)
        if isinstance(call, Rule):
            return call
    found = getattr(getattr(route, "endpoint", None), ATTRIBUTE, None)
    return found if found is not None else getattr(route, ATTRIBUTE, None)
