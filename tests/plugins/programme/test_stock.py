"""Stock: each vaccination uses one dose of its batch in its own transaction; unknown, expired,
mismatched and used-up batches are refused with a 422 naming /batch; low-stock warnings in the
API; stock entered by CSV import like any entity."""

from __future__ import annotations

from datetime import timedelta

from open_registry.core import Settings
from tests.plugins.programme.conftest import (
    FACILITY,
    OTHER_FACILITY,
    Ops,
    at,
    make_ops,
    today,
)
from tests.registry.test_imports_api import finished


def batch_error(resp) -> str:
    assert resp.status_code == 422, resp.text
    [error] = resp.json()["errors"]
    assert error["pointer"] == "/batch"
    return error["message"]


def level(ops: Ops, facility: str = FACILITY, vaccine: str = "CVX-AV") -> dict:
    items = ops.client.get("/api/v1/programme/stock", params={"facility": facility}).json()
    return next(i for i in items["items"] if i["vaccine"] == vaccine)


def test_stock_goes_down_with_each_vaccination(ops: Ops):
    ops.activate()
    ops.stock("LOT-A", quantity=3)
    people = [p["id"] for p in ops.recipients(4)]
    for i in range(3):
        assert ops.vaccinate(people[i], batch="LOT-A").status_code == 201
        assert level(ops)["usable"] == 2 - i
    assert "used up" in batch_error(ops.vaccinate(people[3], batch="LOT-A"))
    assert ops.client.get("/api/v1/vaccination?count=true").json()["total"] == 3


def test_unknown_expired_and_mismatched_batches_are_refused(ops: Ops):
    ops.activate()
    ops.stock("LOT-A")
    ops.stock("OLD-1", expiry=today() - timedelta(days=1))
    ops.stock("MR-LOT", vaccine="CVX-MR")
    a = ops.recipients(1)[0]["id"]
    assert "not in the stock of facility" in batch_error(ops.vaccinate(a, batch="NOPE"))
    assert "expired on" in batch_error(ops.vaccinate(a, batch="OLD-1"))
    assert "is of vaccine CVX-MR" in batch_error(ops.vaccinate(a, batch="MR-LOT"))
    # a batch of another facility is unknown here
    ops.activate(facility=OTHER_FACILITY)
    ops.stock("THERE-1", facility=OTHER_FACILITY)
    assert "not in the stock" in batch_error(ops.vaccinate(a, batch="THERE-1"))
    # expiry is compared with the day the dose was given
    yesterday = at(today() - timedelta(days=1))
    assert ops.vaccinate(a, batch="OLD-1", when=yesterday).status_code == 201


def test_a_facility_without_stock_records_is_not_tracked_unless_required(settings: Settings):
    for ops in make_ops(settings):
        ops.activate()
        assert ops.vaccinate(ops.recipients(1)[0]["id"], batch="ANY").status_code == 201
    for ops in make_ops(settings, stock="required"):
        ops.activate()
        assert "not in the stock" in batch_error(ops.vaccinate(ops.recipients(1)[0]["id"]))


def test_a_correction_to_another_batch_moves_the_dose(ops: Ops):
    ops.activate()
    ops.stock("LOT-A", quantity=5)
    ops.stock("LOT-B", quantity=5)
    a = ops.recipients(1)[0]["id"]
    v = ops.vaccinate(a, batch="LOT-A").json()
    moved = ops.client.patch(
        f"/api/v1/vaccination/{v['id']}",
        json={"batch": "LOT-B"},
        headers={"content-type": "application/merge-patch+json"},
    )
    assert moved.status_code == 200, moved.text
    batches = {b["batch"]: b["used"] for b in level(ops)["batches"]}
    assert batches == {"LOT-A": 0, "LOT-B": 1}
    ops.client.delete(f"/api/v1/vaccination/{v['id']}")
    ops.deliver()
    assert level(ops)["used"] == 0


def test_a_batchs_quantity_cannot_drop_below_what_was_used(ops: Ops):
    ops.activate()
    lot = ops.stock("LOT-A", quantity=5)
    people = [p["id"] for p in ops.recipients(2)]
    for p in people:
        ops.vaccinate(p, batch="LOT-A")
    resp = ops.client.patch(
        f"/api/v1/stock/{lot['id']}",
        json={"quantity": 1},
        headers={"content-type": "application/merge-patch+json"},
    )
    assert resp.status_code == 422 and resp.json()["errors"][0]["pointer"] == "/quantity"
    resp = ops.client.patch(
        f"/api/v1/stock/{lot['id']}",
        json={"batch": "RENAMED"},
        headers={"content-type": "application/merge-patch+json"},
    )
    assert resp.status_code == 409
    resp = ops.client.patch(
        f"/api/v1/stock/{lot['id']}",
        json={"quantity": 50},
        headers={"content-type": "application/merge-patch+json"},
    )
    assert resp.status_code == 200  # another delivery of the same batch


def test_low_stock_is_warned_per_facility_and_vaccine(ops: Ops):
    ops.activate()
    ops.stock("LOT-A", quantity=60)  # default threshold 50
    ops.stock("OLD-1", quantity=500, expiry=today() - timedelta(days=3))  # expired: not usable
    ops.post(
        "/api/v1/stock_threshold", {"facility": FACILITY, "vaccine": "CVX-MR", "threshold": 10}, 201
    )
    ops.stock("MR-LOT", vaccine="CVX-MR", quantity=12)
    av = level(ops)
    assert (av["usable"], av["expiredUnused"], av["low"]) == (60, 500, False)
    people = [p["id"] for p in ops.recipients(11)]
    for p in people:
        assert ops.vaccinate(p, batch="LOT-A").status_code == 201
    assert level(ops)["low"] is True and level(ops)["usable"] == 49
    assert level(ops, vaccine="CVX-MR")["low"] is False  # 12 >= its threshold of 10
    low = ops.client.get("/api/v1/programme/stock", params={"low": "true"}).json()["items"]
    assert [(i["facility"], i["vaccine"]) for i in low] == [(FACILITY, "CVX-AV")]
    table = ops.analytics("low_stock")
    assert table["rows"] == [[FACILITY, "CVX-AV", 49, 50, 500]]


def test_stock_can_be_imported_from_csv(ops: Ops):
    expiry = (today() + timedelta(days=200)).isoformat()
    csv = (
        "facility,vaccine,batch,expiry,quantity,receivedAt\n"
        f"{FACILITY},CVX-AV,CSV-1,{expiry},40,{today().isoformat()}\n"
        f"{FACILITY},CVX-AV,CSV-2,{expiry},10,{today().isoformat()}\n"
        f"{FACILITY},CVX-AV,CSV-3,not-a-date,10,\n"
    )
    resp = ops.client.post(
        "/api/v1/stock/imports", content=csv.encode(), headers={"content-type": "text/csv"}
    )
    assert resp.status_code == 202, resp.text
    job = finished(ops.client, ops.registry, resp.headers["location"])
    assert (job["status"], job["inserted"], job["failed"]) == ("done", 2, 1), job
    assert job["errors"][0]["pointer"].endswith("/expiry")
    ops.activate()
    a = ops.recipients(1)[0]["id"]
    assert ops.vaccinate(a, batch="CSV-1").status_code == 201
    lv = level(ops)
    assert (lv["received"], lv["used"]) == (50, 1)
    assert {b["batch"] for b in lv["batches"]} == {"CSV-1", "CSV-2"}  # the bad row is reported
