"""A full day end to end, on SQLite and PostgreSQL: facilities activated, a schedule set,
people enrol (one signs up with a code and enrols herself) and book, vaccinations recorded
(one refused by the rate), a walk-in, certificates issued by the outbox worker, side effects
reported, certificates verified; then the dashboard page and the aggregates show exactly that
day."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from open_registry.core import Settings
from tests.plugins.programme.conftest import Ops, make_ops
from tests.plugins.programme.day import A, B, simulate_day


@pytest.fixture
def ops(settings: Settings) -> Iterator[Ops]:
    """People may sign up with a one-time code (one of them enrols herself)."""
    yield from make_ops(settings.with_(otp_signup=True))


def test_a_simulated_day_shows_on_the_dashboard(ops: Ops):
    expected = simulate_day(ops.client, ops.registry)
    page = ops.client.get("/ui/dashboard")
    assert page.status_code == 200, page.text
    html = page.text
    totals = {k: int(v) for k, v in re.findall(r'data-total="(\w+)">(\d+)<', html)}
    assert totals == expected["totals"]
    assert html.count("<svg") == 7 and 'role="img"' in html
    assert "<script" not in html.split("<main", 1)[1]  # the dashboard itself needs no script

    tables = ops.client.get("/api/v1/analytics").json()["tables"]
    assert {r[0]: r[1] for r in tables["states"]["rows"]} == expected["states"]
    assert {r[0]: r[3] for r in tables["facilities"]["rows"]} == expected["facilities"]
    assert {(r[0], r[1]): r[2] for r in tables["people"]["rows"]} == expected["people"]
    util = {r[0]: (r[7], r[8]) for r in tables["utilisation"]["rows"]}
    assert util == expected["utilisation_today"]
    assert dict(tables["appointments"]["rows"]) == expected["appointments"]
    assert tables["daily"]["rows"][-1] == [expected["today"], 6]
    assert tables["certificates"]["rows"][-1] == [expected["today"], 6, 0, 0, 0]
    assert dict(tables["verifications"]["rows"]) == {"VALID": 2}
    assert tables["side_effects"]["rows"][-1] == [expected["today"], 2, 1]
    assert [r[0] for r in tables["low_stock"]["rows"]] == [B]

    levels = ops.client.get("/api/v1/programme/stock").json()["items"]
    left = {lv["facility"]: lv["usable"] for lv in levels}
    assert left == expected["stock"]
    # the same figures in the page's tables
    assert re.search(rf"<td>{A}</td><td>Riverside</td><td>Northland</td><td class=\"num\">4<", html)
