"""Every route of the built app (API, pages, plugins) declares who may use it
(`registry.auth.rules`), and does what it declares: each route is tried as anonymous, as a role
without the right and as staff of another facility, against seeded records, on both databases.
A route added without a rule fails `test_every_route_declares_its_rule`."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import pytest
from fastapi.testclient import TestClient

from open_registry.core import Principal, create_app
from open_registry.core.auth.rules import Rule, routes_of, rule_of
from tests.authn import auth_headers
from tests.registry.test_access_matrix import pick_records, settings, world  # noqa: F401

#: roles tried as "a role without the right", in this order (system-admin has every right)
OTHER_ROLES = ("api-client", "monitoring", "recipient", "facility-staff", "controller")
#: facility roles: the "staff of another facility" callers
FACILITY_ROLES = ("facility-staff", "facility-admin")
#: values for path parameters that name no record of the seeded world
PARAMETERS = {
    "purpose": "revocation",
    "number": "0",
    "seq": "1",
    "delivery_id": "1",
    "job_id": "00000000-0000-0000-0000-000000000000",
    "name": "coverage",
    "field": "name",
    "version": "1",
}


def endpoints(app: Any) -> list[tuple[str, str, Any, Rule | None]]:
    """(method, path, route, rule) for every method of every route (static mounts: GET)."""
    found = []
    for route in routes_of(app):
        methods = sorted((getattr(route, "methods", None) or {"GET"}) - {"HEAD"})
        for method in methods:
            found.append((method, route.path, route, rule_of(route)))
    return found


@pytest.fixture
def app(registry: Any, world: dict[str, Any]) -> Any:  # noqa: F811
    return create_app(registry=registry)


#: plugin sections that add routes only when configured (the vault's pull route)
OPTIONAL_ROUTES = {
    "vault": {
        "push_url": "http://127.0.0.1:9/push",
        "secret_env": "TEST_ROUTE_RULES_VAULT_SECRET",
        "issuer_id": "org.example.registry",
        "base_url": "https://registry.example",
    }
}


@pytest.mark.parametrize("configured", [False, True], ids=["defaults", "optional-routes"])
def test_every_route_declares_its_rule(
    registry: Any, make_registry: Any, monkeypatch: pytest.MonkeyPatch, configured: bool
):
    if configured:
        monkeypatch.setenv("TEST_ROUTE_RULES_VAULT_SECRET", "not-a-real-secret")
        registry = make_registry(plugins=OPTIONAL_ROUTES)
    app = create_app(registry=registry)
    missing = [f"{m} {p}" for m, p, _, rule in endpoints(app) if rule is None]
    assert missing == [], "routes without an access rule (registry.auth.rules):\n" + "\n".join(
        missing
    )
    if configured:
        assert "/api/v1/vault/pull" in {p for _, p, _, _ in endpoints(app)}


def grant(registry: Any, entity: str, operation: str, p: Principal) -> Any:
    return registry.auth.policy(registry.services[entity].entity).grant(p, operation)


def principal(role: str, facility: str | None = None, recipient: str | None = None) -> Principal:
    """A caller with one role (tokens for it: `auth_headers`)."""
    return Principal(
        "user", subject=f"t-{role}", roles=frozenset({role}), facility=facility, recipient=recipient
    )


def fill(path: str, rule: Rule, record: dict[str, Any] | None) -> str:
    """The path with its parameters: the rule's record, its entity, fixed values otherwise."""

    def value(m: re.Match[str]) -> str:
        name = m.group(1)
        if name == rule.record and record is not None:
            return str(record["id"])
        if name == "entity":
            return str(rule.entity if rule.entity not in (None, "{entity}") else "facility")
        if name == "id" and record is not None:
            return str(record["id"])
        return PARAMETERS.get(name, "x")

    return re.sub(r"\{([a-z_]+)(?::[a-z]+)?\}", value, path)


def call(client: TestClient, method: str, path: str) -> int:
    if method in ("POST", "PUT", "PATCH"):
        if path.startswith("/ui/"):
            resp = client.request(method, path, data={}, follow_redirects=False)
        else:
            resp = client.request(method, path, json={}, follow_redirects=False)
    else:
        resp = client.request(method, path, follow_redirects=False)
    return resp.status_code


def refused_anonymous(path: str, status: int) -> bool:
    return status == 401 or (path.startswith("/ui/") and status == 303)


def refused_role(path: str, status: int) -> bool:
    return status == 403 or (path.startswith("/ui/") and status == 404)


class Trial:
    """One route tried by outsiders; `outcomes` counts what they got, `wrong` what broke."""

    def __init__(self, registry: Any, app: Any, seeded: dict[str, Any]):
        self.registry, self.app, self.world = registry, app, seeded
        self.keys = seeded["keys"]
        facilities = seeded["records"]["facility"]
        self.other = next(f["code"] for f in facilities if f["code"] != self.keys["facility"])
        self.outcomes: Counter[tuple[str, str]] = Counter()
        self.wrong: list[str] = []

    def status(self, method: str, url: str, headers: dict[str, str]) -> int:
        with TestClient(self.app, headers={**headers, "origin": "http://testserver"}) as c:
            return call(c, method, url)

    def record(self, entity_name: str) -> dict[str, Any] | None:
        if entity_name not in self.registry.services:
            return None
        inside, _ = pick_records(
            self.registry.services[entity_name].entity,
            self.world["records"].get(entity_name) or [{"id": "x"}],
            self.keys,
        )
        return inside

    def anonymous(self, method: str, url: str, rule: Rule, entity_name: str) -> bool:
        """Tried anonymously; False when the route is public (nothing more to try)."""
        status = self.status(method, url, {})
        if status >= 500:
            self.wrong.append(f"anonymous {method} {url}: {status}")
        access = (
            self.registry.services[entity_name].entity.access or {} if rule.who == "entity" else {}
        )
        if rule.who == "public" or "public" in access.get(rule.operation or "read", ()):
            self.outcomes[("anonymous", "public")] += 1
            return False
        if refused_anonymous(url, status):
            self.outcomes[("anonymous", "refused")] += 1
        else:
            self.wrong.append(f"anonymous {method} {url}: {status}, expected 401")
        return True

    def allowed(self, rule: Rule, entity_name: str, p: Principal) -> bool:
        if rule.who == "roles":
            return bool(p.roles & set(rule.roles))
        if rule.who == "entity":
            return bool(grant(self.registry, entity_name, rule.operation or "read", p).allowed)
        return True

    def wrong_role(self, method: str, url: str, rule: Rule, entity_name: str) -> None:
        """Tried by the first role without the right."""
        for role in OTHER_ROLES:
            if self.allowed(rule, entity_name, principal(role, self.other, "nobody")):
                continue
            kw = {"facility": self.other} if role in FACILITY_ROLES else {}
            if role == "recipient":
                kw = {"recipient": "nobody"}
            status = self.status(method, url, auth_headers(self.registry, role, **kw))
            if refused_role(url, status):
                self.outcomes[("wrong role", "refused")] += 1
            else:
                self.wrong.append(f"{role} {method} {url}: {status}, expected 403")
            return

    def other_facility(self, method: str, url: str, rule: Rule, entity_name: str) -> None:
        """Tried by staff of another facility on a record of facility A."""
        paths = self.registry.services[entity_name].entity.owner_paths
        if "facility" not in paths:
            return
        for role in FACILITY_ROLES:
            g = grant(
                self.registry, entity_name, rule.operation or "read", principal(role, self.other)
            )
            if not g.allowed or g.scope is None:
                continue
            status = self.status(
                method, url, auth_headers(self.registry, role, facility=self.other)
            )
            if status in (403, 404):
                self.outcomes[("other facility", str(status))] += 1
            else:
                self.wrong.append(f"{role} of {self.other} {method} {url}: {status}, expected 404")
            return

    def route(self, method: str, path: str, rule: Rule) -> None:
        entity_name = rule.entity if rule.entity != "{entity}" else "facility"
        entity_name = entity_name or ""
        record = self.record(entity_name)
        url = fill(path, rule, record)
        if not self.anonymous(method, url, rule, entity_name):
            return
        self.wrong_role(method, url, rule, entity_name)
        if rule.who == "entity" and rule.record and record is not None:
            self.other_facility(method, url, rule, entity_name)


def test_every_route_follows_its_rule_for_outsiders(registry: Any, app: Any, world: Any):  # noqa: F811
    trial = Trial(registry, app, world)
    for method, path, _route, rule in endpoints(app):
        if rule is not None:  # (test_every_route_declares_its_rule fails for a route without)
            trial.route(method, path, rule)
    print("\nroute rule matrix:", dict(trial.outcomes))
    assert trial.wrong == [], "\n".join(trial.wrong)
