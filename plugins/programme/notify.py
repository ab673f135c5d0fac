"""Notices of the programme: a facility is told when a controller activates or suspends it or
changes its daily rate; the monitoring contact is told about serious side effects.

Each notice is a delivery queued in the outbox worker's transaction (sink `programme`), then
sent outside any transaction by the delivery dispatcher, retried on its own with a stable
idempotency key: this plugin's sender reads the record then, works out who to tell, and hands
each message to the `send_notification` hook (the integrations' email and SMS senders, with the
templates `facility-programme-changed` and `serious-side-effect`). With no sender for a
channel the notice is logged and done.
"""

from __future__ import annotations

import logging
from typing import Any

from open_registry.core import PermanentDeliveryError, delivery_key, enqueue_delivery

log = logging.getLogger("registry.programme")

SINK = "programme"
FACILITY_CHANGED = "facility-programme-changed"
SERIOUS_SIDE_EFFECT = "serious-side-effect"


def queue(connection: Any, registry: Any, event: dict[str, Any], template: str) -> bool:
    """Queue the notice `template` about the record of `event` (once per event)."""
    key = delivery_key(SINK, template, event)
    return enqueue_delivery(connection, registry, SINK, key, event, {"template": template})


def facility_addresses(facility: dict[str, Any]) -> list[tuple[str, str]]:
    """(channel, address) pairs that reach a facility: its own, then its administrators'."""
    out = []
    if facility.get("email"):
        out.append(("email", facility["email"]))
    if facility.get("contact"):
        out.append(("sms", facility["contact"]))
    for admin in facility.get("admins") or []:
        if admin.get("email"):
            out.append(("email", admin["email"]))
        if admin.get("mobile"):
            out.append(("sms", admin["mobile"]))
    return list(dict.fromkeys(out))


def _message(registry: Any, template: str, record: dict[str, Any]) -> tuple[list, dict]:
    """Who to tell and what the template is given."""
    if template == FACILITY_CHANGED:
        facility = _record_by_code(registry, record["facility"]) or {}
        context = {
            "facility": {"code": record["facility"], "name": facility.get("name")},
            "program": record["program"],
            "status": record["status"],
            "rate": record["rate"],
            "reason": record.get("reason"),
            "record": record,
        }
        return facility_addresses(facility), context
    from open_registry.plugins.programme.runtime import runtime

    contact = runtime(registry).config.monitoring_contact
    context = {
        "report": record["id"],
        "certificate": record.get("certificate"),
        "facility": {"code": record.get("facility")},
        "program": record.get("program"),
        "seriousness": record.get("seriousness") or [],
        "onset": record.get("onset"),
        "record": record,
    }
    return ([("email", contact)] if contact else []), context


def _record_by_code(registry: Any, code: str) -> dict[str, Any] | None:
    service = registry.services.get("facility")
    if service is None:
        return None
    found = service.search(service.parser.from_params([("code", code), ("limit", "1")])).items
    return found[0] if found else None


def send(delivery: dict[str, Any], registry: Any) -> str:
    """The `programme` sink's sender: one notice, to everyone concerned."""
    template = (delivery.get("payload") or {}).get("template")
    if template not in (FACILITY_CHANGED, SERIOUS_SIDE_EFFECT):
        raise PermanentDeliveryError(f"unknown programme notice {template!r}")
    record = registry.record(delivery["entity"], delivery["record_id"])
    if record is None:
        raise PermanentDeliveryError(f"{delivery['entity']} {delivery['record_id']} is gone")
    targets, context = _message(registry, template, record)
    hook = registry.pm.hook.send_notification
    results = []
    for i, (channel, to) in enumerate(targets):
        sent = hook(
            channel=channel,
            to=to,
            template=template,
            context={**context, "idempotency_key": f"{delivery['key']}:{i}"},
            registry=registry,
        )
        results.append(str(sent) if sent else f"no {channel} sender")
    if not any(r for r in results if not r.startswith("no ")):
        log.info(
            "programme notice %s for %s %s: %s",
            template,
            delivery["entity"],
            delivery["record_id"],
            "no sender" if targets else "nobody to tell",
        )
    return ",".join(results)[:500] or "nobody to tell"
