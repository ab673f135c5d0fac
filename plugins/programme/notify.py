"""Notices to facilities and to the monitoring role, sent from the outbox worker: activation,
suspension and rate changes to the facility; serious side effects to monitoring; the next dose
to the recipient. They go through the `send_notification` hook when a plugin provides one (the
integrations' email/SMS senders), else to the log, so nothing is lost when no sender is set up.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("registry.programme")


def _hook(registry: Any) -> Any:
    hook = getattr(registry.pm.hook, "send_notification", None)
    if hook is None or not hook.get_hookimpls():
        return None
    return hook


def send(
    registry: Any,
    *,
    channel: str,
    to: str | None,
    template: str,
    context: dict[str, Any],
    key: str,
) -> str | None:
    """Send one notice (`key`: an idempotency key, stable across retries of the same event);
    returns the sender's message id, or None when it was only logged."""
    hook = _hook(registry)
    if hook is None or not to:
        log.info("programme notice %s to %s (%s): %s", template, to or "nobody", channel, context)
        return None
    return hook(
        channel=channel,
        to=to,
        template=template,
        context={**context, "idempotency_key": key},
        registry=registry,
    )


def facility_contact(facility: dict[str, Any]) -> tuple[str, str | None]:
    """(channel, address) to reach a facility: its email, else its phone."""
    if facility.get("email"):
        return "email", facility["email"]
    return "sms", facility.get("contact")
