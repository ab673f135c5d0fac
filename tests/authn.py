"""Signing tests in: bearer tokens minted with the registry's own secret, for any roles."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from open_registry.core.testing import Messages, auth_headers, token_for

__all__ = ["Messages", "admin_client", "auth_headers", "token_for"]


def admin_client(app: Any, **kw: Any) -> TestClient:
    """A TestClient signed in as a system-admin (the app's registry mints the token)."""
    headers = {**auth_headers(app.state.registry), **kw.pop("headers", {})}
    return TestClient(app, headers=headers, **kw)
