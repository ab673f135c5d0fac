"""Concurrent writers append to separate audit chains on PostgreSQL (no global lock in the write
path), and every kind of tampering is still found in any chain."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa

from open_registry.core import storage
from open_registry.core.audit import chain
from open_registry.core.audit.chain import GENESIS, verify
from open_registry.core.codec import utcnow
from tests.registry.test_api import demo_record


@pytest.fixture
def registry(registry: Any) -> Any:
    if registry.db.dialect != "postgresql":
        pytest.skip("SQLite has one chain: its writers take turns anyway")
    return registry


def write_in_parallel(registry: Any, writers: int = 6, each: int = 8) -> None:
    """`writers` threads writing records at once, while one transaction holds a chain (an
    audit entry appended, not yet committed): the others must take other chains, not wait."""
    svc = registry.services["vaccine"]
    start = threading.Barrier(writers + 1)

    def write(i: int) -> None:
        start.wait()
        for j in range(each):
            body = demo_record("vaccine")
            body.update(code=f"{body['code']}-{i}-{j}", name=f"{body['name']} {i}-{j}")
            svc.create(body, actor=f"w{i}")

    entry = {"at": utcnow(), "actor": "held", "action": "export", "entity": "vaccine",
             "record_id": None, "version": None, "fields": None}  # fmt: skip
    with storage.write(registry.db.engine) as held, ThreadPoolExecutor(writers) as pool:
        chain.append(held, [entry])  # this transaction holds its chain until it commits
        done = [pool.submit(write, i) for i in range(writers)]
        start.wait()
        for d in done:
            d.result()


def chains(registry: Any) -> list[list[dict[str, Any]]]:
    """The log's chains, each in order (by following prev_hash)."""
    with registry.db.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM registry_audit ORDER BY seq")).mappings().all()
    by_prev = {r["prev_hash"]: r for r in rows if r["prev_hash"] != GENESIS}
    out = []
    for first in (r for r in rows if r["prev_hash"] == GENESIS):
        links = [dict(first)]
        while links[-1]["hash"] in by_prev:
            links.append(dict(by_prev[links[-1]["hash"]]))
        out.append(links)
    return out


def test_concurrent_writers_spread_over_chains_and_the_log_verifies(registry: Any):
    chain.ensure_heads(registry.db.engine, 4)
    write_in_parallel(registry)
    verdict = verify(registry.db.engine)
    assert verdict.ok, verdict
    found = chains(registry)
    with registry.db.engine.connect() as conn:
        heads = conn.execute(sa.text("SELECT entries, hash FROM registry_audit_head")).all()
    assert 1 < len(found) <= len(heads)  # (the registry made `audit_shards` heads: 8)
    assert sum(len(c) for c in found) == verdict.entries == 6 * 8 + 1
    assert sorted((n, h) for n, h in heads if n) == sorted((len(c), c[-1]["hash"]) for c in found)


@pytest.mark.parametrize("tamper", ["edit", "delete", "truncate", "drop-head"])
def test_tampering_in_any_chain_is_found(registry: Any, tamper: str):
    chain.ensure_heads(registry.db.engine, 4)
    write_in_parallel(registry, writers=4, each=6)
    found = sorted(chains(registry), key=len)
    assert len(found) > 1
    victim = next(c for c in found if len(c) >= 3)  # the shortest chain with a middle
    middle = victim[len(victim) // 2]
    with registry.db.engine.begin() as conn:
        if tamper == "edit":
            conn.execute(
                sa.text("UPDATE registry_audit SET actor = 'forger' WHERE seq = :s"),
                {"s": middle["seq"]},
            )
        elif tamper == "delete":
            conn.execute(sa.text("DELETE FROM registry_audit WHERE seq = :s"), {"s": middle["seq"]})
        elif tamper == "truncate":
            conn.execute(
                sa.text("DELETE FROM registry_audit WHERE seq = :s"), {"s": victim[-1]["seq"]}
            )
        else:  # the whole head row of a chain (its entries stay)
            conn.execute(
                sa.text("DELETE FROM registry_audit_head WHERE hash = :h"),
                {"h": victim[-1]["hash"]},
            )
    verdict = verify(registry.db.engine)
    assert not verdict.ok
    if tamper == "edit":
        assert verdict.broken_seq == middle["seq"] and "edited" in verdict.reason
    elif tamper == "delete":
        after = victim[len(victim) // 2 + 1]
        assert verdict.broken_seq == after["seq"] and "deleted" in verdict.reason
    else:
        assert "deleted" in verdict.reason or "altered" in verdict.reason
