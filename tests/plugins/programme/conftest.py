"""Fixtures of the programme plugin's tests: a client over the demo data (SQLite and
PostgreSQL) with helpers for the day's operations, and dates relative to the real today."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from open_registry.core import Settings, create_app, open_registry
from open_registry.core.demo import load_demo_data
from open_registry.core.outbox.worker import Worker
from open_registry.plugins.programme.scheduling import DAYS
from tests.authn import admin_client

FACILITY = "NL-RVS-01"  # Riverside, Northland
OTHER_FACILITY = "EM-PTV-01"  # Portview, Eastmarch
PROGRAM = "COVID19-2026"
VACCINE = "CVX-AV"  # two doses, 28 to 84 days apart
VACCINATOR = "VAC-0001"


def today() -> date:
    return datetime.now(UTC).date()


def next_weekday(weekday: int, after: date | None = None) -> date:
    """The first day with `weekday` (0 = Monday) strictly after `after` (default today)."""
    start = (after or today()) + timedelta(days=1)
    return start + timedelta(days=(weekday - start.weekday()) % 7)


def at(day: date, hhmm: str = "10:00") -> str:
    return f"{day.isoformat()}T{hhmm}:00Z"


class Ops:
    """The client and the day's operations, as the people involved would do them."""

    def __init__(self, client: TestClient, registry: Any):
        self.client = client
        self.registry = registry

    def post(self, path: str, body: Any, status: int | None = None) -> Any:
        resp = self.client.post(path, json=body)
        if status is not None:
            assert resp.status_code == status, resp.text
        return resp

    def deliver(self) -> int:
        return Worker(self.registry).run_once(limit=10**6)

    def send(self) -> int:
        """Send the queued deliveries (notices), as the worker does after the events."""
        return Worker(self.registry).send_due(limit=10**6)

    def recipients(self, n: int = 60) -> list[dict[str, Any]]:
        return self.client.get(f"/api/v1/recipient?limit={n}&sort=name").json()["items"]

    def activate(
        self,
        facility: str = FACILITY,
        program: str = PROGRAM,
        rate: int = 100,
        status: str = "Active",
        **extra: Any,
    ) -> dict[str, Any]:
        body = {"facility": facility, "program": program, "rate": rate, "status": status, **extra}
        resp = self.post("/api/v1/programme/activation", body)
        assert resp.status_code in (200, 201), resp.text
        return resp.json()

    def schedule(self, facility: str = FACILITY, program: str = PROGRAM, **extra: Any) -> dict:
        body = {
            "facility": facility,
            "program": program,
            "days": list(DAYS[:5]),
            "startTime": "09:00",
            "endTime": "12:00",
            "slotMinutes": 30,
            "capacity": 10,
            **extra,
        }
        return self.post("/api/v1/schedule", body, 201).json()

    def stock(
        self,
        batch: str,
        quantity: int = 100,
        facility: str = FACILITY,
        vaccine: str = VACCINE,
        expiry: date | None = None,
    ) -> dict[str, Any]:
        body = {
            "facility": facility,
            "vaccine": vaccine,
            "batch": batch,
            "quantity": quantity,
            "expiry": (expiry or today() + timedelta(days=365)).isoformat(),
        }
        return self.post("/api/v1/stock", body, 201).json()

    def vaccinate(
        self,
        recipient: str,
        *,
        batch: str = "B-1",
        facility: str = FACILITY,
        program: str = PROGRAM,
        vaccine: str = VACCINE,
        dose: int = 1,
        when: str | None = None,
    ) -> Any:
        body = {
            "recipient": recipient,
            "program": program,
            "vaccine": vaccine,
            "facility": facility,
            "vaccinator": VACCINATOR,
            "dose": dose,
            "totalDoses": 2,
            "batch": batch,
            "date": when or at(today()),
        }
        return self.client.post("/api/v1/vaccination", json=body)

    def analytics(self, name: str, **params: Any) -> dict[str, Any]:
        resp = self.client.get(f"/api/v1/analytics/{name}", params=params)
        assert resp.status_code == 200, resp.text
        return resp.json()


def make_ops(settings: Settings, *, extra: tuple[Any, ...] = (), **programme: Any) -> Iterator[Ops]:
    plugins = {**settings.plugins, "programme": {"facility_programs_fallback": False, **programme}}
    reg = open_registry(settings.with_(plugins=plugins), plugins=extra)
    load_demo_data(reg.services)
    with admin_client(create_app(registry=reg)) as client:
        ops = Ops(client, reg)
        ops.deliver()  # the demo data's own events
        yield ops


@pytest.fixture
def ops(settings: Settings) -> Iterator[Ops]:
    yield from make_ops(settings)
