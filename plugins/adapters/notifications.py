"""Notifications: SMTP email and an HTTP SMS gateway, from localized Jinja2 templates (en, hi, fr
shipped), sent after events (facility registered, recipient enrolled, certificate issued with its
link, appointment booked/reminder) and on demand through `send_notification` (OTP codes).

    [plugins.notifications]
    locale = "en"                               # when the record names no `locale`/`language`
    base_url = "https://registry.example.org"   # links in messages
    templates_dir = "/etc/registry/messages"    # optional <locale>.json catalogs, over ours
    events = { "appointment.created" = "appointment-booked" }   # added to / over the defaults
    [plugins.notifications.email]
    host = "smtp.example.org"
    port = 587
    starttls = true
    username = "registry"
    password_env = "SMTP_PASSWORD"
    sender = "Vaccination registry <no-reply@example.org>"
    [plugins.notifications.sms]
    url = "https://sms.example.org/v1/messages"
    auth = { type = "api-key", header = "X-API-Key", key_env = "SMS_KEY" }
    to_field = "to"                             # the JSON body's field names
    text_field = "text"
    params = { sender = "VACCIN" }              # sent with every message

Each (event, channel) is one delivery, sent outside any transaction and retried on its own; the
addresses are read (decrypted) from the record when it is sent, never stored in the queue. SMS
requests carry `Idempotency-Key` (the delivery key and the address's position); emails a stable
`Message-ID`: a retry after a crash is recognisable as the same message.
"""

from __future__ import annotations

import json
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import parseaddr
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson
from jinja2 import ChainableUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from open_registry.core import (
    DeliveryError,
    PermanentDeliveryError,
    StartupError,
    delivery_key,
    enqueue_delivery,
)
from open_registry.core.hookspecs import hookimpl
from open_registry.plugins.adapters.config import section, table_setting
from open_registry.plugins.adapters.http import (
    ConfigError,
    Http,
    Refused,
    Unavailable,
    setting_secret,
)

NAME = "notifications"
SINK = "notify"
SHIPPED = Path(__file__).parent / "templates"
LOCALES = ("en", "hi", "fr")
CHANNELS = ("email", "sms")
DEFAULT_EVENTS = {
    "facility.created": "facility-registered",
    "recipient.created": "recipient-enrolled",
    "certificate.created": "certificate-issued",
    "appointment.created": "appointment-booked",
    "appointment.reminded": "appointment-reminder",
}
_ENV = SandboxedEnvironment(undefined=ChainableUndefined, autoescape=False)


class Catalogs:
    """Message templates by locale: the shipped ones, overridden by `templates_dir`."""

    def __init__(self, folder: Path | None):
        self.messages: dict[str, dict[str, dict[str, Any]]] = {}
        for folder_ in [SHIPPED, *([folder] if folder else [])]:
            for path in sorted(folder_.glob("*.json")):
                try:
                    data = json.loads(path.read_text(encoding="utf-8"))
                    compiled = {
                        name: {part: _ENV.from_string(text) for part, text in parts.items()}
                        for name, parts in data.items()
                    }
                except (ValueError, AttributeError, TemplateError) as exc:
                    raise StartupError(f"notification templates {path}: {exc}") from None
                self.messages.setdefault(path.stem, {}).update(compiled)

    def render(self, template: str, locale: str, part: str, context: dict[str, Any]) -> str:
        """One part (`subject`, `text`, `sms`) of a template, in `locale` or else English."""
        for loc in (locale, locale.split("-")[0], "en"):
            parts = self.messages.get(loc, {}).get(template)
            if parts and part in parts:
                return parts[part].render(**context).strip()
            if parts and part == "sms" and "text" in parts:
                return parts["text"].render(**context).strip()
        raise PermanentDeliveryError(f"no notification template {template!r} ({part})")


@lru_cache(maxsize=8)
def _catalogs(folder: str | None) -> Catalogs:
    return Catalogs(Path(folder) if folder else None)


def _config(settings: Any) -> dict[str, Any]:
    table = section(settings, NAME)
    if not table:
        return {}
    where = f"plugins.{NAME}"
    try:
        email = table_setting(table, "email", where)
        sms = table_setting(table, "sms", where)
        if email and not email.get("host"):
            raise ConfigError(f"{where}.email.host is required")
        if email and not parseaddr(str(email.get("sender", "")))[1]:
            raise ConfigError(f"{where}.email.sender must be an email address")
        if sms and not str(sms.get("url", "")).startswith(("http://", "https://")):
            raise ConfigError(f"{where}.sms.url must be an http(s) address")
        table_setting(table, "events", where)
    except ConfigError as exc:
        raise StartupError(str(exc)) from None
    _catalogs(str(table["templates_dir"]) if table.get("templates_dir") else None)
    return table


def _channels(table: dict[str, Any]) -> list[str]:
    return [c for c in CHANNELS if table.get(c)]


# -- sending -----------------------------------------------------------------------------------


def _send_email(table: dict[str, Any], to: str, subject: str, text: str, key: str) -> str:
    email = table["email"]
    where = f"plugins.{NAME}.email"
    message = EmailMessage()
    message["From"] = str(email["sender"])
    message["To"] = to
    message["Subject"] = subject
    domain = parseaddr(str(email["sender"]))[1].rpartition("@")[2] or "registry"
    message_id = f"<{key.replace(':', '.')}@{domain}>"
    message["Message-ID"] = message_id
    message.set_content(text)
    timeout = float(email.get("timeout", 10))
    try:
        with smtplib.SMTP(str(email["host"]), int(email.get("port", 25)), timeout=timeout) as smtp:
            if str(email.get("starttls", "false")).lower() in ("true", "1", "yes"):
                smtp.starttls(context=ssl.create_default_context())
            if email.get("username"):
                smtp.login(str(email["username"]), setting_secret(email, "password", where) or "")
            smtp.send_message(message)
    except smtplib.SMTPRecipientsRefused as exc:
        raise PermanentDeliveryError(f"the mail server refused the address: {exc}") from None
    except (smtplib.SMTPException, OSError) as exc:
        reason = type(exc).__name__
        raise DeliveryError(f"the mail server cannot take the message: {reason}") from None
    return message_id


def _send_sms(table: dict[str, Any], to: str, text: str, key: str) -> str:
    sms = table["sms"]
    body = {
        **(sms.get("params") or {}),
        str(sms.get("to_field", "to")): to,
        str(sms.get("text_field", "text")): text,
    }
    http = Http(sms, f"plugins.{NAME}.sms")
    try:
        response = http.send(
            "POST",
            str(sms["url"]),
            orjson.dumps(body),
            {"Content-Type": "application/json", "Idempotency-Key": key},
        )
    except Refused as exc:
        raise PermanentDeliveryError(f"the SMS gateway refused the message: {exc}") from None
    except Unavailable as exc:
        raise DeliveryError(f"the SMS gateway cannot take the message: {exc}") from None
    finally:
        http.close()
    try:
        answer = response.json()
    except ValueError:
        answer = None
    found = answer.get("id") if isinstance(answer, dict) else None
    return str(found or response.status_code)


def deliver(
    table: dict[str, Any], channel: str, to: str, template: str, context: dict[str, Any], key: str
) -> str:
    """Render `template` for `channel` in the context's locale and send it to `to`."""
    catalogs = _catalogs(str(table["templates_dir"]) if table.get("templates_dir") else None)
    locale = str(context.get("locale") or table.get("locale") or "en")
    context = {"link": None, **context}
    if channel == "email":
        subject = catalogs.render(template, locale, "subject", context)
        text = catalogs.render(template, locale, "text", context)
        return _send_email(table, to, subject, text, key)
    text = catalogs.render(template, locale, "sms", context)
    return _send_sms(table, to, text, key)


@hookimpl
def send_notification(
    channel: str, to: str, template: str, context: dict[str, Any], registry: Any
) -> str | None:
    table = _config(registry.settings)
    if not table or channel not in _channels(table):
        return None
    key = str(context.get("idempotency_key") or f"{SINK}:{channel}:{template}:{to}")
    return deliver(table, channel, to, template, context, key)


# -- after events ------------------------------------------------------------------------------


def _events(table: dict[str, Any]) -> dict[str, str]:
    return {**DEFAULT_EVENTS, **{str(k): str(v) for k, v in (table.get("events") or {}).items()}}


@hookimpl
def after_write_batch(events: list[dict[str, Any]], connection: Any, registry: Any) -> None:
    table = _config(registry.settings)
    if not table:
        return
    templates = _events(table)
    channels = _channels(table)
    for event in events:
        template = templates.get(event["event"])
        if not template:
            continue
        for channel in channels:
            key = delivery_key(SINK, f"{channel}:{template}", event)
            payload = {"channel": channel, "template": template}
            enqueue_delivery(connection, registry, SINK, key, event, payload)


def addresses(entity: str, record: dict[str, Any], recipient: dict[str, Any] | None) -> dict:
    """Who hears about a record, by channel: the facility and its administrators, or the
    recipient (the record itself, or the recipient it refers to)."""
    out: dict[str, list[str]] = {"email": [], "sms": []}
    if entity == "facility":
        out["email"] += [record["email"]] if record.get("email") else []
        out["sms"] += [record["contact"]] if record.get("contact") else []
        for admin in record.get("admins") or []:
            out["email"] += [admin["email"]] if admin.get("email") else []
            out["sms"] += [admin["mobile"]] if admin.get("mobile") else []
    elif recipient:
        out["email"] += [recipient["email"]] if recipient.get("email") else []
        out["sms"] += [recipient["phone"]] if recipient.get("phone") else []
    return {k: list(dict.fromkeys(v)) for k, v in out.items()}


def _link(table: dict[str, Any], registry: Any, entity: str, record: dict[str, Any]) -> str | None:
    base = table.get("base_url")
    if not base:
        certs = (getattr(registry.settings, "plugins", None) or {}).get("certificates") or {}
        base = certs.get("base_url", "")
    base = str(base).rstrip("/")
    if entity == "certificate":
        return f"{base}/api/v1/certificates/{record['id']}?format=pdf"
    return f"{base}/ui" if base else None


def send(delivery: dict[str, Any], registry: Any) -> str:
    """Send one event's message on one channel to everyone concerned."""
    table = _config(registry.settings)
    payload = delivery.get("payload") or {}
    channel, template = payload.get("channel"), payload.get("template")
    if not table or channel not in _channels(table):
        raise PermanentDeliveryError(f"the {channel} channel is no longer configured")
    entity = delivery["entity"]
    record = registry.record(entity, delivery["record_id"])
    if record is None:
        raise PermanentDeliveryError(f"{entity} {delivery['record_id']} is gone")
    recipient = (
        record if entity == "recipient" else registry.record("recipient", record.get("recipient"))
    )
    context: dict[str, Any] = {
        "record": record,
        entity: record,
        "recipient": recipient or {},
        "link": _link(table, registry, entity, record),
        "locale": record.get("locale") or (recipient or {}).get("locale") or table.get("locale"),
    }
    if record.get("facility") and "facility" in registry.services and entity != "facility":
        context.setdefault("facility", {"code": record["facility"]})
    to = addresses(entity, record, recipient)[channel]
    if not to:
        return "nobody to tell"
    if not isinstance(template, str):  # as Catalogs.render would refuse it
        raise PermanentDeliveryError(f"no notification template {template!r}")
    results = [
        deliver(table, channel, address, template, context, f"{delivery['key']}:{i}")
        for i, address in enumerate(to)
    ]
    return ",".join(results)[:500]


@hookimpl
def register_senders(registry: Any) -> dict[str, Any]:
    return {SINK: send}


@hookimpl
def register_routes(registry: Any) -> list[Any]:
    _config(registry.settings)  # broken settings stop the server at start-up, not later
    return []
