"""Every hook a plugin can implement. One function per hook, one line of docstring each.

Names: `register_*` returns things to add; `prepare_*` adjusts an object in place; `lookup_*`
answers a question (the first plugin with an answer wins); `after_*` reacts to an event.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # types only: the hooks' arguments
    from pathlib import Path

    from fastapi import APIRouter, FastAPI
    from sqlalchemy.engine import Connection

    from open_registry.core.app import Registry
    from open_registry.core.settings import Settings

PROJECT = "open_registry"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_schema_dirs(settings: Settings) -> list[str | Path] | None:
    """Folders of entity schema files this plugin contributes (loaded before the settings' own)."""


@hookspec
def register_formats() -> dict[str, Any] | None:
    """Custom string formats, name -> function(str) -> bool, checked on every write."""


@hookspec
def register_templates() -> list[str | Path] | None:
    """Folders of Jinja2 templates for the pages, searched first (widgets/<name>.html: a widget)."""


@hookspec(firstresult=True)
def lookup_widget(path: str, schema: dict[str, Any]) -> str | None:
    """The form widget for a field (its dotted path and property schema); the first answer wins."""


@hookspec
def register_routes(registry: Registry) -> list[APIRouter] | None:
    """FastAPI routers to mount in the app (paths under /api/v1/ for APIs)."""


@hookspec
def register_commands(cli: Any) -> None:
    """Add Typer commands to the `registry` command line (`cli` is the root Typer app)."""


@hookspec
def prepare_app(app: FastAPI, registry: Registry) -> None:
    """Adjust the FastAPI app after the generated routes are mounted (middleware, events)."""


@hookspec
def before_write(
    entity: str,
    action: str,
    record: dict[str, Any],
    previous: dict[str, Any] | None,
    connection: Connection,
    actor: str | None,
    origin: str,
    registry: Registry,
) -> None:
    """Check a record in its write transaction before it is stored; raise to refuse the write."""


@hookspec
def register_write_checks(registry: Registry) -> list[str] | None:
    """Entities whose `before_write` checks bulk imports must also run (row by row, slower)."""


@hookspec
def after_write(event: dict[str, Any], connection: Connection, registry: Registry) -> None:
    """React to a committed write, delivered from the outbox; raise to have it retried."""


@hookspec
def after_write_batch(
    events: list[dict[str, Any]], connection: Connection, registry: Registry
) -> None:
    """React to committed writes delivered together (faster than one by one); raise to retry."""


@hookspec(firstresult=True)
def lookup_person(identity: str, registry: Registry) -> dict[str, Any] | None:
    """Look up a person in an external registry by identity; the first answer wins."""


@hookspec(firstresult=True)
def pull_master_data(source: str, registry: Registry) -> dict[str, Any] | None:
    """Records of `source` from an external registry: {entity, key, records}; the first wins."""


@hookspec
def register_sync_sources(registry: Registry) -> list[str] | None:
    """Names of the master-data sources this plugin can pull (for `registry sync --all`)."""


@hookspec(firstresult=True)
def send_notification(
    channel: str, to: str, template: str, context: dict[str, Any], registry: Registry
) -> str | bool | None:
    """Send a templated message on `channel` (email, sms); an id or True when sent; first wins."""


@hookspec
def push_document(document: dict[str, Any], registry: Registry) -> None:
    """Push an issued document (a certificate) to a document vault; raise to have it retried."""


@hookspec
def register_webhooks(registry: Registry) -> list[dict[str, Any]] | None:
    """Webhook subscriptions to add to those of the settings ({name, url, events, secret})."""


@hookspec
def register_senders(registry: Registry) -> dict[str, Any] | None:
    """Delivery senders by name, send(delivery, registry): side effects run outside transactions."""
