"""Signing tests in: bearer tokens minted with the registry's own secret, for any roles."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from registry.auth import Principal
from registry.hookspecs import hookimpl


def token_for(
    registry: Any,
    *roles: str,
    facility: str | None = None,
    recipient: str | None = None,
    subject: str = "test-admin",
    kind: str = "user",
) -> str:
    """A bearer token of the registry's own, for a caller with `roles` (system-admin if none)."""
    p = Principal(
        kind,
        subject,
        frozenset(roles or ("system-admin",)),
        facility=facility,
        recipient=recipient,
    )
    return registry.auth.tokens.issue(p).token


def auth_headers(registry: Any, *roles: str, **kw: Any) -> dict[str, str]:
    """`Authorization: Bearer ...` for a caller with `roles` (system-admin if none)."""
    return {"Authorization": f"Bearer {token_for(registry, *roles, **kw)}"}


def admin_client(app: Any, **kw: Any) -> TestClient:
    """A TestClient signed in as a system-admin (the app's registry mints the token)."""
    headers = {**auth_headers(app.state.registry), **kw.pop("headers", {})}
    return TestClient(app, headers=headers, **kw)


class Messages:
    """A test plugin whose `send_notification` keeps the messages (one-time codes, notices)
    instead of sending them; answers a message id."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    @hookimpl
    def send_notification(
        self, channel: str, to: str, template: str, context: dict[str, Any], registry: Any
    ) -> str:
        self.sent.append({"channel": channel, "to": to, "template": template, **context})
        return f"m{len(self.sent)}"

    def last_code(self, to: str) -> str:
        """The last one-time code sent to `to` (as normalised: `+` and digits)."""
        return next(m["code"] for m in reversed(self.sent) if m["to"] == to)
