"""The dashboard: its SVG charts count in whole numbers, its totals say "1 vaccination"."""

from __future__ import annotations

import re
from typing import Any

import pytest

from open_registry.plugins.programme.charts import columns, count_ticks


@pytest.mark.parametrize(
    ("peak", "ticks"),
    [
        (0, [0, 1]),
        (1, [0, 1]),
        (3, [0, 1, 2, 3]),
        (7, [0, 2, 4, 6, 8]),
        (37, [0, 10, 20, 30, 40]),
        (1234, [0, 500, 1000, 1500]),
    ],
)
def test_count_ticks_are_whole_numbers_up_to_the_peak(peak: int, ticks: list[int]):
    assert count_ticks(peak) == ticks


def test_every_peak_gets_whole_ticks_covering_it_in_at_most_five_lines():
    for peak in range(0, 2000, 7):
        ticks = count_ticks(peak)
        assert all(isinstance(t, int) for t in ticks) and ticks[0] == 0
        assert ticks[-1] >= peak and len(ticks) <= 5


def test_column_chart_axis_labels_are_whole_numbers():
    svg = columns("daily", "Vaccinations per day", ["1 Jan", "2 Jan"], [("doses", [1, 3])])
    labels = re.findall(r'<text [^>]*text-anchor="end" class="axis">([^<]*)</text>', svg)
    assert labels == ["0", "1", "2", "3"]


def test_dashboard_cards_say_one_vaccination_not_one_vaccinations(ops: Any):
    ops.activate()
    (person,) = ops.recipients(1)
    assert ops.vaccinate(person["id"]).status_code == 201
    ops.deliver()
    html = ops.client.get("/ui/dashboard").text
    assert 'data-total="vaccinations">1</span> vaccination</li>' in html
    assert 'data-total="certificates">1</span> certificate issued</li>' in html
    assert 'data-total="revoked">0</span> revoked</li>' in html
    assert 'data-total="side_effects">0</span> side-effect reports</li>' in html
