"""Outbound webhooks: any entity event POSTed to subscribers, signed with HMAC-SHA256, each
(event, subscriber) a delivery of its own (retried on its own, with a stable idempotency key).

    [plugins.webhooks]
    timeout = 5
    [[plugins.webhooks.subscriptions]]
    name = "his"
    url = "https://his.example.org/hooks/registry"
    events = ["facility.*", "certificate.created"]     # fnmatch patterns; "*" for all
    secret_env = "HIS_WEBHOOK_SECRET"                   # or secret = "..." (not in the repo!)
    include_private = false                             # private fields are left out by default

The request: `POST url`, body `{id, event, entity, recordId, version, fields, occurredAt,
record}` (the record as it is when sent; null once deleted), headers `Idempotency-Key` (the same
on every retry), `X-Registry-Event`, and `X-Registry-Signature: t=<unix time>,v1=<hex
HMAC-SHA256(secret, "<t>." + body)>`. A 2xx answer is success; 408, 429 and 5xx are retried
with back-off; other 4xx answers park the delivery as dead.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any

import orjson

from open_registry.core import (
    DeliveryError,
    NotFound,
    PermanentDeliveryError,
    Registry,
    StartupError,
    StateKey,
    delivery_key,
    enqueue_delivery,
    timed_sender,
)
from open_registry.core.hookspecs import hookimpl
from open_registry.plugins.adapters.config import section
from open_registry.plugins.adapters.http import (
    ConfigError,
    Http,
    Refused,
    Unavailable,
    request_seconds,
    setting_secret,
)
from open_registry.plugins.adapters.http import signature_header as sign

NAME = "webhooks"
SINK = "webhook"


def subscriptions(registry: Any) -> dict[str, dict[str, Any]]:
    """Every subscription by name (the settings' and the plugins'), checked."""
    table = section(registry.settings, NAME)
    found: list[Any] = list(table.get("subscriptions") or [])
    for contributed in registry.pm.hook.register_webhooks(registry=registry):
        found.extend(contributed or [])
    out: dict[str, dict[str, Any]] = {}
    for i, sub in enumerate(found):
        where = f"plugins.{NAME}.subscriptions[{i}]"
        if not isinstance(sub, Mapping):
            raise StartupError(f"{where} must be a table")
        name = str(sub.get("name") or "")
        url = str(sub.get("url") or "")
        events = sub.get("events") or ["*"]
        if not name or name in out:
            raise StartupError(f"{where}.name is required and must be unique")
        if not url.startswith(("http://", "https://")):
            raise StartupError(f"{where}.url must be an http(s) address")
        if isinstance(events, str):
            events = [events]
        try:
            secret = setting_secret(sub, "secret", where)
        except ConfigError as exc:
            raise StartupError(str(exc)) from None
        if not secret:
            raise StartupError(f"{where} needs a secret (secret_env = the variable holding it)")
        out[name] = {**sub, "name": name, "url": url, "events": list(events), "secret": secret}
    return out


_SUBSCRIPTIONS: StateKey[dict[str, dict[str, Any]]] = StateKey("webhooks")


def _cached(registry: Registry) -> dict[str, dict[str, Any]]:
    return registry.state(_SUBSCRIPTIONS, lambda: subscriptions(registry))


@hookimpl
def after_write_batch(events: list[dict[str, Any]], connection: Any, registry: Any) -> None:
    subs = _cached(registry)
    if not subs:
        return
    for event in events:
        for name, sub in subs.items():
            if any(fnmatchcase(event["event"], pattern) for pattern in sub["events"]):
                key = delivery_key(SINK, name, event)
                enqueue_delivery(connection, registry, SINK, key, event, {"subscription": name})


def body_of(delivery: Mapping[str, Any], registry: Any, include_private: bool) -> bytes:
    """The JSON body sent for one delivery."""
    record = None
    service = registry.services.get(delivery["entity"])
    if service is not None and not str(delivery["event"]).endswith(("deleted", "purged")):
        try:
            record = service.get(delivery["record_id"])
        except NotFound:
            record = None
        if record is not None and not include_private:
            for name in service.entity.private:
                record.pop(name, None)
    created = delivery.get("created_at")
    body = {
        "id": delivery["key"],
        "event": delivery["event"],
        "entity": delivery["entity"],
        "recordId": delivery["record_id"],
        "version": delivery["version"],
        "occurredAt": created.isoformat() if isinstance(created, datetime) else created,
        "record": record,
    }
    return orjson.dumps(body)


def send(delivery: dict[str, Any], registry: Any) -> str:
    """POST one event to one subscriber."""
    name = (delivery.get("payload") or {}).get("subscription")
    sub = _cached(registry).get(name) if isinstance(name, str) else None
    if sub is None:
        raise PermanentDeliveryError(f"the webhook subscription {name!r} is no longer configured")
    body = body_of(delivery, registry, bool(sub.get("include_private", False)))
    headers = {
        "Content-Type": "application/json",
        "Idempotency-Key": delivery["key"],
        "X-Registry-Event": str(delivery["event"]),
        "X-Registry-Signature": sign(sub["secret"], body),
    }
    table = section(registry.settings, NAME)
    http = Http({"timeout": sub.get("timeout", table.get("timeout", 10))}, f"webhook {name}")
    try:
        response = http.send("POST", sub["url"], body, headers)
    except Refused as exc:
        raise PermanentDeliveryError(str(exc)) from None
    except Unavailable as exc:
        raise DeliveryError(str(exc)) from None
    finally:
        http.close()
    return str(response.status_code)


def send_seconds(delivery: dict[str, Any], registry: Any) -> float:
    """The longest `send` may take for `delivery`: its subscription's HTTP timeout, tripled
    (`request_seconds`); the delivery's lease is tied to it."""
    name = (delivery.get("payload") or {}).get("subscription")
    sub = _cached(registry).get(name) if isinstance(name, str) else None
    timeout = (sub or {}).get("timeout", section(registry.settings, NAME).get("timeout", 10))
    return request_seconds(float(timeout))


@hookimpl
def register_senders(registry: Any) -> dict[str, Any]:
    return {SINK: timed_sender(send, send_seconds)}


@hookimpl
def register_routes(registry: Any) -> list[Any]:
    _cached(registry)  # a broken subscription stops the server at start-up, not at the first event
    return []
