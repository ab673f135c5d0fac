"""The demo history (`registry serve --demo`): vaccinations of the last 60 days at several
facilities, with certificates, corrections, revocations and side-effect reports; off unless
asked for, so the tests' demo fixtures stay small."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from open_registry.cli.options import settings_from
from open_registry.core import Registry, storage, utcnow
from open_registry.core.demo import HistorySize, load_demo_data, load_demo_history

#: small enough for a test; `registry serve --demo` loads `HistorySize()` (see docs/ui.md)
SMALL = HistorySize(people=150, corrections=4, revocations=3, suspensions=2, side_effects=5)


def _count(conn: sa.Connection, sql: str) -> list[tuple]:
    return [tuple(r) for r in conn.execute(sa.text(sql))]


def test_history_spreads_over_60_days_and_facilities_with_its_aftermath(
    registry: Registry, capsys: pytest.CaptureFixture[str]
):
    load_demo_data(registry.services)
    started = time.perf_counter()
    written = load_demo_history(registry, SMALL)
    took = time.perf_counter() - started
    with capsys.disabled():  # a figure for people, not a gate
        print(f"\ndemo history ({SMALL.people} people): {written} in {took:.2f} s")
    assert written["recipient"] == SMALL.people
    assert written["vaccination"] > SMALL.people  # second doses too
    assert written["corrected vaccination"] == SMALL.corrections
    assert written["revoked certificate"] == SMALL.revocations
    assert written["suspended certificate"] == SMALL.suspensions
    assert written["side_effect"] == SMALL.side_effects
    vaccination = registry.services["vaccination"]
    with storage.read(registry.db.engine) as conn:
        days = {
            (d if isinstance(d, datetime) else datetime.fromisoformat(str(d))).date()
            for (d,) in conn.execute(sa.select(vaccination.table.c.date))
        }
        facilities = _count(conn, "SELECT DISTINCT facility FROM vaccination")
        statuses = dict(_count(conn, "SELECT status, count(*) FROM certificate GROUP BY status"))
        revisions = _count(conn, "SELECT count(*) FROM certificate WHERE revision = 2")
        pending = _count(conn, "SELECT count(*) FROM registry_outbox WHERE status <> 'done'")
        ranked = _count(conn, "SELECT count(*) FROM vaccination WHERE dose = 2")
    today = utcnow().date()
    assert min(days) >= today - timedelta(days=SMALL.days) and max(days) <= today
    assert max(days) - min(days) >= timedelta(days=45), sorted(days)  # spread, not one day
    assert len(days) >= 30
    assert len(facilities) >= 5
    assert ranked[0][0] > 0
    # every vaccination has its certificate (issued before the load returns); a correction
    # issued a second revision and revoked the first
    assert revisions == [(SMALL.corrections,)]
    assert sum(statuses.values()) == written["vaccination"] + SMALL.corrections
    assert statuses["revoked"] == SMALL.revocations + SMALL.corrections
    assert statuses["suspended"] == SMALL.suspensions
    assert pending == [(0,)]  # worked through: the dashboard counts it on first start
    # loaded once: a second start adds nothing
    assert load_demo_history(registry, SMALL) == {}


def test_the_tests_demo_data_has_no_history_but_serve_demo_has(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
):
    load_demo_data(registry.services)
    with storage.read(registry.db.engine) as conn:
        assert _count(conn, "SELECT count(*) FROM vaccination") == [(0,)]
    monkeypatch.delenv("REGISTRY_DEMO_HISTORY", raising=False)
    assert settings_from(None, None, None, False, demo=True).demo_history
    assert not settings_from(None, None, None, False).demo_history
    monkeypatch.setenv("REGISTRY_DEMO_HISTORY", "false")
    assert not settings_from(None, None, None, False, demo=True).demo_history
