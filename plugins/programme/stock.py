"""Vaccine stock: batches held by a facility (the `stock` entity), consumed one dose per
vaccination in the vaccination's own transaction; expired, unknown, mismatched and used-up
batches are refused (422 naming `/batch`); low-stock warnings per facility and vaccine.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from open_registry.core import Conflict, Invalid
from open_registry.plugins.programme import counters
from open_registry.plugins.programme.runtime import STOCK, STOCK_THRESHOLD, Programme
from open_registry.plugins.programme.tables import counts


def _invalid(pointer: str, message: str, keyword: str) -> Invalid:
    return Invalid(
        "1 field failed validation",
        errors=[{"pointer": pointer, "message": message, "keyword": keyword}],
    )


def keeps_stock(rt: Programme, conn: Connection, facility: str, vaccine: str) -> bool:
    """Whether `facility` has a lot of `vaccine` in stock (`rt.one` keeps the statement)."""
    return rt.one(conn, STOCK, facility=facility, vaccine=vaccine) is not None


def consume(
    rt: Programme,
    conn: Connection,
    record: dict[str, Any],
    day: date,
    moved: bool,
    *,
    fresh: bool = False,
) -> None:
    """Take one dose of the vaccination's batch (nothing when stock is not tracked there;
    `fresh`: the vaccination is being created)."""
    mode = rt.config.stock
    if mode == "off" or not rt.has(STOCK):
        return
    facility, vaccine, batch = record["facility"], record["vaccine"], record["batch"]
    lot = rt.one(conn, STOCK, lock="share", facility=facility, batch=batch)
    if lot is None:
        if mode == "required" or keeps_stock(rt, conn, facility, vaccine):
            raise _invalid(
                "/batch", f"batch {batch} is not in the stock of facility {facility}", "stock"
            )
        if not fresh:
            counters.release(conn, counters.BATCH, record["id"])  # moved to untracked stock
        return
    if not moved and counters.held(conn, counters.BATCH, record["id"]) == lot["id"]:
        return  # a correction that keeps the batch keeps its dose
    if lot["vaccine"] != vaccine:
        raise _invalid(
            "/batch", f"batch {batch} is of vaccine {lot['vaccine']}, not {vaccine}", "stock"
        )
    if date.fromisoformat(lot["expiry"]) < day:
        raise _invalid("/batch", f"batch {batch} expired on {lot['expiry']}", "expired")
    if not counters.take(
        conn, counters.BATCH, record["id"], lot["id"], lot["quantity"], fresh=fresh
    ):
        raise _invalid(
            "/batch",
            f"batch {batch} is used up at facility {facility} ({lot['quantity']} doses recorded)",
            "stock",
        )


def check_stock_change(
    rt: Programme, conn: Connection, record: dict[str, Any], previous: dict[str, Any]
) -> None:
    """A batch's received quantity cannot drop below what was used; a used batch keeps its
    facility, batch number and vaccine."""
    used = counters.used(conn, counters.BATCH, record["id"])
    if record.get("quantity", 0) < used:
        raise _invalid("/quantity", f"{used} doses of this batch are recorded already", "minimum")
    if used and any(record.get(k) != previous.get(k) for k in ("facility", "batch", "vaccine")):
        raise Conflict(
            "vaccinations are recorded with this batch: its facility, number and vaccine stay",
            fields=["facility", "batch", "vaccine"],
        )


@dataclass
class Level:
    """A facility's usable doses of a vaccine (unexpired batches), against its threshold."""

    facility: str
    vaccine: str
    received: int
    used: int
    usable: int
    expired: int
    threshold: int
    batches: list[dict[str, Any]]

    @property
    def low(self) -> bool:
        return self.usable < self.threshold

    def as_dict(self) -> dict[str, Any]:
        return {
            "facility": self.facility,
            "vaccine": self.vaccine,
            "received": self.received,
            "used": self.used,
            "usable": self.usable,
            "expiredUnused": self.expired,
            "threshold": self.threshold,
            "low": self.low,
            "batches": self.batches,
        }


def levels(
    rt: Programme, conn: Connection, today: date, facilities: Iterable[str] | None = None
) -> list[Level]:
    """Stock levels by facility and vaccine (every facility, or those named)."""
    if not rt.has(STOCK):
        return []
    service = rt.services[STOCK]
    table = service.table
    stmt = sa.select(table).where(table.c._deleted_at.is_(None))
    wanted = sorted(set(facilities)) if facilities is not None else None
    if wanted is not None:
        stmt = stmt.where(table.c.facility.in_(wanted))
    lots = [service.codec.to_record(r) for r in conn.execute(stmt).mappings()]
    used = counts(conn, counters.BATCH, [lot["id"] for lot in lots])
    thresholds = {
        (t["facility"], t["vaccine"]): t["threshold"]
        for t in _thresholds(rt, conn, {lot["facility"] for lot in lots})
    }
    by_pair: dict[tuple[str, str], Level] = {}
    for lot in sorted(lots, key=lambda r: (r["facility"], r["vaccine"], r["expiry"], r["batch"])):
        pair = (lot["facility"], lot["vaccine"])
        level = by_pair.get(pair)
        if level is None:
            threshold = thresholds.get(pair, rt.config.low_stock_threshold)
            level = by_pair[pair] = Level(*pair, 0, 0, 0, 0, threshold, [])
        n_used = used.get(lot["id"], 0)
        left = max(0, lot["quantity"] - n_used)
        expired = date.fromisoformat(lot["expiry"]) < today
        level.received += lot["quantity"]
        level.used += n_used
        if expired:
            level.expired += left
        else:
            level.usable += left
        level.batches.append(
            {
                "id": lot["id"],
                "batch": lot["batch"],
                "expiry": lot["expiry"],
                "quantity": lot["quantity"],
                "used": n_used,
                "left": left,
                "expired": expired,
            }
        )
    return list(by_pair.values())


def _thresholds(rt: Programme, conn: Connection, facilities: set[str]) -> list[dict[str, Any]]:
    if not rt.has(STOCK_THRESHOLD) or not facilities:
        return []
    return list(rt.fetch_all(conn, STOCK_THRESHOLD, "facility", facilities))
