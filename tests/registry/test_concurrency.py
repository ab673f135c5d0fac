"""Concurrent writers: optimistic concurrency holds and unique keys hold, on both databases."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import sqlalchemy as sa

from open_registry.core.errors import Conflict, PreconditionFailed
from tests.registry.test_api import demo_record


def test_parallel_updates_with_the_same_if_match_let_exactly_one_win(registry: Any):
    service = registry.services["vaccine"]
    rec = service.create(demo_record("vaccine"), actor="t")

    def attempt(i: int) -> str:
        try:
            service.update(rec["id"], {"price": 1000.0 + i}, actor=f"u{i}", if_match=1, patch=True)
            return "ok"
        except PreconditionFailed:
            return "412"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(attempt, range(16)))
    assert outcomes.count("ok") == 1 and outcomes.count("412") == 15
    assert service.get(rec["id"])["_version"] == 2


def test_parallel_creates_of_one_unique_code_store_exactly_one(registry: Any):
    service = registry.services["vaccine"]
    body = demo_record("vaccine")

    def attempt(_: int) -> str:
        try:
            service.create(body, actor="t")
            return "ok"
        except Conflict:
            return "409"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(attempt, range(12)))
    assert outcomes.count("ok") == 1 and outcomes.count("409") == 11
    with registry.db.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM vaccine")).scalar_one() == 1
        assert conn.execute(sa.text("SELECT count(*) FROM registry_outbox")).scalar_one() == 1
