"""An app with the UI mounted and the demo data, for the browser tests' uvicorn server:
`uvicorn --factory tests.registry.ui_server:build` with `REGISTRY_DATA_DIR` set."""

from __future__ import annotations

from typing import Any

from registry import Settings, create_app
from registry.ui import add_ui_routes


def build() -> Any:
    settings = Settings.load(demo_data=True, load_entrypoints=False)
    app = create_app(settings)
    if not hasattr(app.state, "ui"):
        add_ui_routes(app, app.state.registry)
    return app
