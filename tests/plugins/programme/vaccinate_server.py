"""The UI browser tests' app (`tests.registry.ui_server`: the demo data on SQLite, the outbox
worker inline) plus what the facility's flow needs: a facility-staff and a facility-admin user
of `FACILITY` (password `PASSWORD`) and a batch `BATCH` in its stock. For
`uvicorn --factory tests.plugins.programme.vaccinate_server:build`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.registry.ui_server import PASSWORD
from tests.registry.ui_server import build as build_ui

FACILITY = "NL-RVS-01"  # Riverside District Hospital, active in COVID19-2026
BATCH = "LOT-BROWSER-1"
STAFF, ADMIN = "vx-staff", "vx-admin"
__all__ = ["ADMIN", "BATCH", "FACILITY", "PASSWORD", "STAFF", "build"]


def build() -> Any:
    app = build_ui()
    registry = app.state.registry
    users = registry.auth.users
    if users.get(STAFF) is None:
        users.add(STAFF, roles=["facility-staff"], password=PASSWORD, facility=FACILITY)
        users.add(ADMIN, roles=["facility-admin"], password=PASSWORD, facility=FACILITY)
        expiry = (datetime.now(UTC).date() + timedelta(days=200)).isoformat()
        lot = {"facility": FACILITY, "vaccine": "CVX-AV", "batch": BATCH, "quantity": 50}
        registry.services["stock"].create({**lot, "expiry": expiry}, actor="test")
    return app
