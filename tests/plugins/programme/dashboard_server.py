"""An app holding the demo data and one simulated day, for the dashboard's browser test:
`uvicorn --factory tests.plugins.programme.dashboard_server:build` with `REGISTRY_DATA_DIR`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from registry import Settings, create_app, open_registry
from registry.demo import load_demo_data
from registry.outbox import Worker
from tests.plugins.programme.day import simulate_day


def build() -> Any:
    settings = Settings.load(load_entrypoints=False, inline_worker=False)
    registry = open_registry(settings)
    load_demo_data(registry.services)
    app = create_app(registry=registry)
    Worker(registry).run_once(limit=10**6)
    expected = simulate_day(TestClient(app), registry)  # no lifespan: the app stays open
    out = Path(os.environ["REGISTRY_DATA_DIR"]) / "expected.json"
    out.write_text(json.dumps({k: v for k, v in expected.items() if k != "people"}))
    return app
