"""An app holding the demo data and one simulated day, for the dashboard's browser test:
`uvicorn --factory tests.plugins.programme.dashboard_server:build` with `REGISTRY_DATA_DIR`.
The day is driven by a system-admin; `dash-monitor` (monitoring) and `dash-staff`
(facility-staff) sign in with `PASSWORD`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from open_registry.core import Settings, create_app, open_registry
from open_registry.core.demo import load_demo_data
from open_registry.core.outbox.worker import Worker
from tests import cheap_hashing
from tests.authn import auth_headers
from tests.plugins.programme.day import simulate_day

PASSWORD = "dashboard-test-password"


def build() -> Any:
    cheap_hashing.install()  # this server's users: argon2's profile for tests
    settings = Settings.load(load_entrypoints=False, inline_worker=False)
    registry = open_registry(settings)
    load_demo_data(registry.services)
    app = create_app(registry=registry)
    Worker(registry).run_once(limit=10**6)
    admin = TestClient(app, headers=auth_headers(registry))  # no lifespan: the app stays open
    expected = simulate_day(admin, registry)
    users = registry.auth.users
    users.add("dash-monitor", roles=["monitoring"], password=PASSWORD)
    users.add("dash-staff", roles=["facility-staff"], password=PASSWORD, facility="NL-RVS-01")
    out = Path(os.environ["REGISTRY_DATA_DIR"]) / "expected.json"
    out.write_text(json.dumps({k: v for k, v in expected.items() if k != "people"}))
    return app
