"""storage.write: nested writes on one thread join the open transaction (as a savepoint)."""

from __future__ import annotations

import pytest

from open_registry.core import storage
from open_registry.core.app import Registry


def _names(registry: Registry) -> list[str]:
    page = registry.services["vaccine"].search(registry.services["vaccine"].parser.from_params([]))
    return sorted(r["name"] for r in page.items)


VACCINE = {"code": "V1", "name": "Alpha", "manufacturer": "M", "status": "Active"}


def test_nested_write_commits_with_the_outer_one(registry: Registry) -> None:
    vaccines = registry.services["vaccine"]
    with storage.write(registry.db.engine) as outer:
        created = vaccines.create(VACCINE, actor="t")  # joins `outer`, does not deadlock
        assert outer.in_transaction()
    assert _names(registry) == ["Alpha"]
    assert vaccines.get(created["id"])["code"] == "V1"


def test_outer_rollback_undoes_the_nested_write(registry: Registry) -> None:
    vaccines = registry.services["vaccine"]
    with pytest.raises(RuntimeError), storage.write(registry.db.engine):
        vaccines.create(VACCINE, actor="t")
        raise RuntimeError("the outer work fails")
    assert _names(registry) == []


def test_failed_nested_write_leaves_the_outer_one_usable(registry: Registry) -> None:
    vaccines = registry.services["vaccine"]
    with storage.write(registry.db.engine):
        vaccines.create(VACCINE, actor="t")
        with pytest.raises(Exception, match="already has this"):
            vaccines.create({**VACCINE, "name": "Beta"}, actor="t")  # code V1 taken
        vaccines.create({**VACCINE, "code": "V2", "name": "Gamma"}, actor="t")
    assert _names(registry) == ["Alpha", "Gamma"]
