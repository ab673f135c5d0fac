"""An app with the UI mounted and the demo data, for the browser tests' uvicorn server:
`uvicorn --factory tests.registry.ui_server:build` with `REGISTRY_DATA_DIR` set. Two users sign
in with `PASSWORD`: `ui-admin` (system-admin) and `ui-staff` (facility-staff of `FACILITY`)."""

from __future__ import annotations

from typing import Any

from open_registry.core import Settings, create_app
from open_registry.core.ui.pages import add_ui_routes
from tests import cheap_hashing

PASSWORD = "browser-test-password"
FACILITY = "NL-HLC-02"


def build() -> Any:
    cheap_hashing.install()  # this server's users: argon2's profile for tests
    settings = Settings.load(demo_data=True, load_entrypoints=False)
    app = create_app(settings)
    if not hasattr(app.state, "ui"):
        add_ui_routes(app, app.state.registry)
    users = app.state.registry.auth.users
    if users.get("ui-admin") is None:
        users.add("ui-admin", roles=["system-admin"], password=PASSWORD)
        users.add("ui-staff", roles=["facility-staff"], password=PASSWORD, facility=FACILITY)
    return app
