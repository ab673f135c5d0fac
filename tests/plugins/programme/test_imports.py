"""Bulk imports obey the programme's write rules like the API (`register_write_checks`): a CSV of
vaccinations is refused row by row beyond the facility's daily rate, at a facility not active
for the programme, with an unknown, expired or used-up batch, or with a dose beyond the
schedule; refused rows leave no trace in the counters or the stock; a dry run reports the same
rows and changes nothing; an aborted import gives every place back."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from open_registry.core.imports.importer import ImportOptions, import_file
from tests.plugins.programme.conftest import (
    FACILITY,
    OTHER_FACILITY,
    PROGRAM,
    VACCINATOR,
    VACCINE,
    Ops,
    at,
    today,
)
from tests.registry.test_imports_api import finished

HEADER = "recipient,program,vaccine,facility,vaccinator,dose,totalDoses,batch,date\n"


def row(
    recipient: str,
    *,
    facility: str = FACILITY,
    batch: str = "LOT-A",
    dose: int = 1,
    when: str | None = None,
) -> str:
    return (
        f"{recipient},{PROGRAM},{VACCINE},{facility},{VACCINATOR},{dose},2,{batch},"
        f"{when or at(today())}\n"
    )


def post_csv(ops: Ops, text: str, **params: Any) -> dict[str, Any]:
    resp = ops.client.post(
        "/api/v1/vaccination/imports",
        content=text.encode(),
        params=params,
        headers={"content-type": "text/csv"},
    )
    assert resp.status_code == 202, resp.text
    return finished(ops.client, ops.registry, resp.headers["location"])


def vaccinations(ops: Ops) -> int:
    return ops.client.get("/api/v1/vaccination?count=true&limit=1").json()["total"]


def usable(ops: Ops) -> int:
    items = ops.client.get("/api/v1/programme/stock", params={"facility": FACILITY}).json()
    return next(i for i in items["items"] if i["vaccine"] == VACCINE)["usable"]


def errors_by_row(job: dict[str, Any]) -> dict[int, tuple[str, str, str]]:
    return {e["row"]: (e["pointer"], e["keyword"], e["message"]) for e in job["errors"]}


def test_an_import_beyond_the_daily_rate_is_refused_row_by_row(ops: Ops):
    ops.activate(rate=5)
    ops.stock("LOT-A", quantity=100)
    people = [p["id"] for p in ops.recipients(8)]
    job = post_csv(ops, HEADER + "".join(row(p) for p in people))
    assert (job["status"], job["inserted"], job["failed"]) == ("done", 5, 3), job
    errors = errors_by_row(job)
    assert sorted(errors) == [6, 7, 8]  # rows 1-5 (after the header) fit the rate
    pointer, keyword, message = errors[6]
    assert (pointer, keyword) == ("/date", "rate")
    assert "daily rate of 5" in message
    assert vaccinations(ops) == 5
    assert usable(ops) == 95  # only the recorded ones used a dose
    # the import used the day's places: the API is refused too
    resp = ops.vaccinate(people[0], dose=2)
    assert resp.status_code == 409 and resp.json()["errors"][0]["keyword"] == "rate", resp.text


def test_imported_rows_are_refused_for_activation_stock_and_schedule(ops: Ops):
    ops.activate(rate=100)
    ops.stock("LOT-A", quantity=2)
    ops.stock("OLD-1", expiry=today() - timedelta(days=3))
    p = [x["id"] for x in ops.recipients(8)]
    text = HEADER + "".join(
        [
            row(p[0]),  # 1: fine
            row(p[1], facility=OTHER_FACILITY),  # 2: not activated there
            row(p[2], batch="NOPE"),  # 3: unknown batch
            row(p[3], batch="OLD-1"),  # 4: expired
            row(p[4], dose=3),  # 5: beyond the two doses (the certificates plugin's rule)
            row(p[5]),  # 6: fine, the last dose of LOT-A
            row(p[6]),  # 7: LOT-A used up
        ]
    )
    job = post_csv(ops, text)
    assert (job["inserted"], job["failed"]) == (2, 5), job
    errors = errors_by_row(job)
    assert {r: errors[r][:2] for r in errors} == {
        2: ("/facility", "activation"),
        3: ("/batch", errors[3][1]),
        4: ("/batch", errors[4][1]),
        5: ("/dose", "maximum"),
        7: ("/batch", errors[7][1]),
    }
    assert "not activated" in errors[2][2]
    assert "not in the stock" in errors[3][2]
    assert "expired on" in errors[4][2]
    assert "used up" in errors[7][2]
    assert usable(ops) == 0
    # the recorded ones go on like any vaccination: a certificate each
    ops.deliver()
    certs = ops.client.get("/api/v1/certificate?count=true&limit=1").json()["total"]
    assert certs == 2


def test_a_dry_run_reports_the_same_rows_and_changes_nothing(ops: Ops):
    ops.activate(rate=3)
    ops.stock("LOT-A", quantity=100)
    people = [p["id"] for p in ops.recipients(5)]
    text = HEADER + "".join(row(p) for p in people)
    dry = post_csv(ops, text, dry_run="true")
    assert (dry["inserted"], dry["failed"]) == (3, 2), dry
    assert sorted(errors_by_row(dry)) == [4, 5]
    assert vaccinations(ops) == 0 and usable(ops) == 100
    # nothing was taken by the dry run: the real import gets the same three places
    real = post_csv(ops, text)
    assert (real["inserted"], real["failed"]) == (3, 2), real
    assert vaccinations(ops) == 3 and usable(ops) == 97


def test_an_aborted_import_gives_every_place_back(ops: Ops):
    ops.activate(rate=3)
    ops.stock("LOT-A", quantity=100)
    people = [p["id"] for p in ops.recipients(4)]
    job = post_csv(ops, HEADER + "".join(row(p) for p in people), on_error="abort")
    assert job["failed"] == 1 and job["inserted"] == 0, job
    assert vaccinations(ops) == 0 and usable(ops) == 100
    for p in people[:3]:
        assert ops.vaccinate(p, batch="LOT-A").status_code == 201


def test_the_command_line_import_is_checked_too(ops: Ops, tmp_path):
    ops.activate(rate=2)
    ops.stock("LOT-A", quantity=100)
    people = [p["id"] for p in ops.recipients(3)]
    path = tmp_path / "v.csv"
    path.write_text(HEADER + "".join(row(p) for p in people))
    service = ops.registry.services["vaccination"]
    result = import_file(service, path, ImportOptions(actor="user:test"))
    assert (result.inserted, result.failed) == (2, 1)
    assert [(e.row, e.pointer, e.keyword) for e in result.errors] == [(3, "/date", "rate")]


def test_entities_without_checks_keep_the_fast_path(ops: Ops):
    """Recipients are checked afterwards (duplicates), so their imports stay bulk inserts."""
    assert ops.registry.services["vaccination"].checks_imports
    assert ops.registry.services["stock"].checks_imports
    assert not ops.registry.services["recipient"].checks_imports
    assert not ops.registry.services["facility"].checks_imports
