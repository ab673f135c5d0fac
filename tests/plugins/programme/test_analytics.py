"""Rollups and aggregates: incremental counts fed by the outbox agree with a full recount of the
base tables after creations, corrections, deletions and re-deliveries; certificates and
verifications are counted; tables come as JSON and CSV; bad parameters name the field."""

from __future__ import annotations

import csv
import io
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from open_registry.core.codec import parse_datetime
from open_registry.plugins.programme.rollups import age_on
from open_registry.plugins.programme.runtime import runtime
from tests.plugins.programme.conftest import (
    FACILITY,
    OTHER_FACILITY,
    Ops,
    at,
    today,
)

MERGE = {"content-type": "application/merge-patch+json"}


def full_recount(ops: Ops) -> dict[str, Counter]:
    """What the rollups should say, counted from the vaccination, recipient and facility
    records themselves (the slow way the rollups avoid)."""
    services = ops.registry.services
    config = runtime(ops.registry).config
    with ops.registry.db.engine.connect() as conn:

        def live(name: str) -> list[dict[str, Any]]:
            t = services[name].table
            rows = conn.execute(sa.select(t).where(t.c._deleted_at.is_(None))).mappings()
            return [services[name].codec.to_record(r) for r in rows]

        people = {r["id"]: r for r in live("recipient")}
        places = {f["code"]: f for f in live("facility")}
        out: dict[str, Counter] = {k: Counter() for k in ("facility", "state", "people", "dose")}
        for v in live("vaccination"):
            day = config.local_day(parse_datetime(v["date"]))
            person = people[v["recipient"]]
            out["facility"][v["facility"]] += 1
            out["state"][places[v["facility"]]["address"]["state"]] += 1
            out["people"][(person["gender"], config.age_band(age_on(person, day)))] += 1
            out["dose"][(v["program"], v["vaccine"], v["dose"])] += 1
    return out


def rolled_up(ops: Ops, **params: Any) -> dict[str, Counter]:
    tables = ops.client.get("/api/v1/analytics", params=params).json()["tables"]
    return {
        "facility": Counter({r[0]: r[3] for r in tables["facilities"]["rows"]}),
        "state": Counter({r[0]: r[1] for r in tables["states"]["rows"]}),
        "people": Counter({(r[0], r[1]): r[2] for r in tables["people"]["rows"]}),
        "dose": Counter({(r[0], r[1], r[2]): r[3] for r in tables["programmes"]["rows"]}),
    }


def test_rollups_agree_with_a_full_recount_after_changes(ops: Ops):
    ops.activate(rate=100)
    ops.activate(facility=OTHER_FACILITY, rate=100)
    people = [p["id"] for p in ops.recipients(30)]
    made = []
    for i, person in enumerate(people):
        facility = FACILITY if i % 3 else OTHER_FACILITY
        resp = ops.vaccinate(person, facility=facility, when=at(today() - timedelta(days=i % 5)))
        assert resp.status_code == 201, resp.text
        made.append(resp.json())
    ops.deliver()
    # corrections: another facility, another day, another dose; deletions
    for v in made[:4]:
        resp = ops.client.patch(
            f"/api/v1/vaccination/{v['id']}",
            headers=MERGE,
            json={"facility": OTHER_FACILITY, "dose": 2},
        )
        assert resp.status_code == 200, resp.text
    for v in made[4:7]:
        assert ops.client.delete(f"/api/v1/vaccination/{v['id']}").status_code == 204
    purged = ops.client.delete(f"/api/v1/vaccination/{made[7]['id']}?purge=true")
    assert purged.status_code == 204
    ops.deliver()
    period = {"from": (today() - timedelta(days=10)).isoformat(), "to": today().isoformat()}
    expected = full_recount(ops)
    assert sum(expected["facility"].values()) == 26
    assert rolled_up(ops, **period) == expected


def test_redelivered_events_count_once(ops: Ops):
    ops.activate()
    a = ops.recipients(1)[0]["id"]
    ops.vaccinate(a)
    ops.deliver()
    outbox = ops.registry.db.metadata.tables["registry_outbox"]
    with ops.registry.db.engine.begin() as conn:  # as if a worker died before its commit
        conn.execute(outbox.update().values(status="pending"))
    ops.deliver()
    daily = ops.analytics("daily")["rows"]
    assert daily[-1] == [today().isoformat(), 1]


def test_programme_filter_and_period(ops: Ops):
    ops.activate()
    ops.activate(program="MR-2026")
    a, b, c = (p["id"] for p in ops.recipients(3))
    ops.vaccinate(a)
    ops.vaccinate(b, program="MR-2026", vaccine="MRV-2")
    ops.vaccinate(c, when=at(today() - timedelta(days=40)))
    ops.deliver()
    assert sum(r[1] for r in ops.analytics("daily")["rows"]) == 2  # the last 30 days
    assert sum(r[1] for r in ops.analytics("daily", program="MR-2026")["rows"]) == 1
    longer = ops.analytics("daily", **{"from": (today() - timedelta(days=60)).isoformat()})
    assert len(longer["rows"]) == 61 and sum(r[1] for r in longer["rows"]) == 3


def test_certificates_and_verifications_are_counted(ops: Ops):
    ops.activate()
    a, b = (p["id"] for p in ops.recipients(2))
    va = ops.vaccinate(a).json()
    ops.vaccinate(b)
    ops.deliver()
    # a correction re-issues, a revocation revokes
    ops.client.patch(f"/api/v1/vaccination/{va['id']}", headers=MERGE, json={"batch": "B-9"})
    ops.deliver()
    certs = ops.client.get("/api/v1/certificate?sort=revision").json()["items"]
    latest = [c for c in certs if c["status"] == "active"]
    ops.post(f"/api/v1/certificates/{latest[0]['id']}/revoke", {"reason": "test"}, 200)
    ops.deliver()
    assert ops.analytics("certificates")["rows"][-1] == [today().isoformat(), 2, 1, 1, 0]
    # verifications by outcome
    credential = ops.client.get(f"/api/v1/certificates/{latest[1]['id']}").json()
    revoked = ops.client.get(f"/api/v1/certificates/{latest[0]['id']}").json()
    for _ in range(3):
        assert ops.client.post("/api/v1/verify", json=credential).json()["status"] == "VALID"
    assert ops.client.post("/api/v1/verify", json=revoked).json()["status"] == "REVOKED"
    assert (
        ops.client.post(
            "/api/v1/verify", content=b"nonsense", headers={"content-type": "application/json"}
        ).status_code
        == 400
    )
    rows = dict(ops.analytics("verifications")["rows"])
    assert rows == {"VALID": 3, "REVOKED": 1, "ERROR": 1}


def test_tables_download_as_csv(ops: Ops):
    ops.activate()
    ops.vaccinate(ops.recipients(1)[0]["id"])
    ops.deliver()
    for url in (
        "/api/v1/analytics/facilities.csv",
        "/api/v1/analytics/facilities?format=csv",
        "/ui/dashboard/facilities.csv",
    ):
        resp = ops.client.get(url)
        assert resp.status_code == 200, resp.text
        assert resp.headers["content-type"].startswith("text/csv")
        assert "attachment" in resp.headers["content-disposition"]
        rows = list(csv.reader(io.StringIO(resp.text)))
        assert rows == [
            ["facility", "district", "state", "vaccinations"],
            [FACILITY, "Riverside", "Northland", "1"],
        ]


def test_csv_cells_that_look_like_formulas_are_defused():
    from open_registry.plugins.programme.analytics import Table

    text = Table("t", "T", ["a"], [["=cmd()"], ["+1"], ["ok"]]).csv()
    assert text.splitlines() == ["a", "'=cmd()", "'+1", "ok"]


def test_bad_parameters_name_the_field(ops: Ops):
    resp = ops.client.get("/api/v1/analytics/daily", params={"from": "yesterday"})
    assert resp.status_code == 422 and resp.json()["errors"][0]["pointer"] == "/from"
    resp = ops.client.get(
        "/api/v1/analytics/daily", params={"from": "2026-02-01", "to": "2026-01-01"}
    )
    assert resp.status_code == 422 and resp.json()["errors"][0]["pointer"] == "/from"
    resp = ops.client.get(
        "/api/v1/analytics/daily", params={"from": "2000-01-01", "to": "2026-01-01"}
    )
    assert resp.status_code == 422
    assert ops.client.get("/api/v1/analytics/nothing").status_code == 404


def test_long_periods_read_whole_months_and_agree_with_the_days(ops: Ops):
    ops.activate(rate=100)
    people = [p["id"] for p in ops.recipients(40)]
    for i, person in enumerate(people):
        resp = ops.vaccinate(person, when=at(today() - timedelta(days=i * 3)))
        assert resp.status_code == 201, resp.text
    ops.deliver()
    start = today() - timedelta(days=120)
    tables = ops.client.get("/api/v1/analytics", params={"from": start.isoformat()}).json()[
        "tables"
    ]
    by_day = sum(r[1] for r in tables["daily"].get("rows"))  # read day by day
    by_place = sum(r[3] for r in tables["facilities"]["rows"])  # whole months + edge days
    assert by_day == by_place == 40
    for offset in (5, 33, 61):  # periods starting mid-month, ending today
        params = {"from": (today() - timedelta(days=offset)).isoformat()}
        t = ops.client.get("/api/v1/analytics", params=params).json()["tables"]
        assert sum(r[1] for r in t["daily"]["rows"]) == sum(r[1] for r in t["states"]["rows"])


def test_whole_months_of_a_period():
    from datetime import date

    from open_registry.plugins.programme.analytics import whole_months

    assert whole_months(date(2026, 1, 15), date(2026, 2, 27)) is None
    assert whole_months(date(2026, 1, 1), date(2026, 1, 31)) == (
        date(2026, 1, 1),
        date(2026, 1, 1),
        date(2026, 2, 1),
    )
    assert whole_months(date(2025, 11, 29), date(2026, 11, 28)) == (
        date(2025, 12, 1),
        date(2026, 10, 1),
        date(2026, 11, 1),
    )


def test_rollups_can_be_rebuilt_from_the_records(ops: Ops, tmp_path):
    from typer.testing import CliRunner

    from open_registry.cli.main import with_plugin_commands

    ops.activate(rate=100)
    people = [p["id"] for p in ops.recipients(12)]
    for i, person in enumerate(people):
        ops.vaccinate(person, when=at(today() - timedelta(days=i)))
    ops.deliver()
    ops.client.post("/api/v1/verify", json={"not": "a credential"})
    before = ops.client.get("/api/v1/analytics").json()["tables"]
    with ops.registry.db.engine.begin() as conn:  # lost: as after restoring an old backup
        for table in ("programme_rollup", "programme_rollup_delta"):
            conn.execute(sa.text(f"DELETE FROM {table} WHERE rollup LIKE 'place%'"))
    assert ops.analytics("states")["rows"] == []
    settings = ops.registry.settings
    result = CliRunner().invoke(
        with_plugin_commands(third_party=False),
        [
            "programme",
            "rebuild-rollups",
            "--data-dir",
            str(settings.data_dir),
            "--database-url",
            settings.sqlalchemy_url,
        ],
        env={"REGISTRY_PLUGINS__PROGRAMME__FACILITY_PROGRAMS_FALLBACK": "false"},
    )
    assert result.exit_code == 0, result.output
    assert "12 vaccination" in result.output and "12 certificate" in result.output
    after = ops.client.get("/api/v1/analytics").json()["tables"]
    assert after == before  # verifications kept too
    assert rolled_up(ops) == full_recount(ops)


def test_workers_append_deltas_that_fold_in_without_changing_a_count(ops: Ops):
    """Workers never update a rollup row in place: they append deltas, which readers add and
    one compaction at a time folds into the rollup rows."""
    from open_registry.core import storage
    from open_registry.plugins.programme import rollups

    ops.activate(rate=100)
    for i, person in enumerate(p["id"] for p in ops.recipients(6)):
        ops.vaccinate(person, when=at(today() - timedelta(days=i % 2)))
    rollups._compacted[id(ops.registry.db.engine)] = time.monotonic()  # next one due in 5 s
    ops.deliver()

    def count(table: str) -> int:
        with ops.registry.db.engine.connect() as conn:
            return conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()

    pending = count("programme_rollup_delta")
    assert pending > 0
    before = ops.client.get("/api/v1/analytics").json()["tables"]
    assert rolled_up(ops) == full_recount(ops)
    with storage.write(ops.registry.db.engine) as conn:
        assert rollups.compact(conn) == pending
    assert count("programme_rollup_delta") == 0 and count("programme_rollup") > 0
    assert ops.client.get("/api/v1/analytics").json()["tables"] == before
