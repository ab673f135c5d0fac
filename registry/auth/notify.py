"""Sending notifications (sign-in codes): a plugin's `send_notification` hook first, else the
built-in sender the settings name: `console` (development: the message on the console, never in
the log), `smtp` (email through the configured server) or `none`."""

from __future__ import annotations

import logging
import smtplib
import sys
from email.message import EmailMessage
from typing import Any

from open_registry.core.errors import RegistryError
from open_registry.core.settings import Settings

log = logging.getLogger("registry.auth")

TEMPLATES = {
    "otp": (
        "Your sign-in code",
        "Your sign-in code is {code}. It expires in {minutes} minutes.\n"
        "If you did not ask for it, ignore this message.",
    ),
}


class NotSent(RegistryError):
    status = 503
    slug = "notification-failed"
    title = "Notification not sent"


def render(template: str, context: dict[str, Any]) -> tuple[str, str]:
    subject, body = TEMPLATES[template]
    return subject, body.format(**context)


def masked(to: str) -> str:
    """`a***@example.org`, `***7890`: enough to tell messages apart in a log."""
    if "@" in to:
        name, _, domain = to.partition("@")
        return f"{name[:1]}***@{domain}"
    return "***" + to[-4:]


def send(
    settings: Settings, pm: Any, registry: Any, channel: str, to: str, template: str, ctx: dict
) -> None:
    """Send one message; `NotSent` when nothing could send it."""
    handled = pm.hook.send_notification(
        channel=channel, to=to, template=template, context=ctx, registry=registry
    )
    if handled:
        log.info("%s %s sent to %s by a plugin", channel, template, masked(to))
        return
    sender = settings.notification_sender
    subject, text = render(template, ctx)
    if sender == "console":
        # for a developer signing in locally: on the console, never in the log
        print(f"[registry] {channel} to {to}: {text.splitlines()[0]}", file=sys.stderr, flush=True)
        log.info("%s %s sent to %s (console sender)", channel, template, masked(to))
        return
    if sender == "smtp" and channel == "email":
        send_email(settings, to, subject, text)
        log.info("email %s sent to %s", template, masked(to))
        return
    log.warning(
        "no sender for %s %s to %s (notification_sender=%s)", channel, template, masked(to), sender
    )
    raise NotSent(f"no way to send {channel} messages is configured")


def send_email(settings: Settings, to: str, subject: str, text: str) -> None:
    """One email through the SMTP server of the settings."""
    if not settings.smtp_host or not settings.smtp_from:
        raise NotSent("smtp_host and smtp_from must be set to send email")
    msg = EmailMessage()
    msg["From"] = settings.smtp_from
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(text)
    try:
        with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=10) as smtp:
            if settings.smtp_starttls:
                smtp.starttls()
            if settings.smtp_username:
                smtp.login(settings.smtp_username, settings.smtp_password)
            smtp.send_message(msg)
    except (OSError, smtplib.SMTPException) as exc:
        log.warning("email to %s not sent: %s", masked(to), type(exc).__name__)
        raise NotSent("the email could not be sent; try again later") from None
