"""Built-in plugin: programme operations (registered through the `open_registry` entry-point
group like any third-party plugin).

- `register_schema_dirs`: the `facility_programme`, `schedule`, `appointment`, `stock`,
  `stock_threshold` and `side_effect` entities;
- `before_write`: activation, daily rates and stock for vaccinations; slot capacity and one
  booking per recipient for appointments; duplicate recipients; side effects match their
  certificate; `register_write_checks` has bulk imports of these entities checked the same way;
- `after_write_batch`: the rollups, and the follow-ups (notices, next-dose suggestions,
  completed appointments, enrolment codes and duplicates of imports);
- `register_routes`: `/api/v1/programme/...` and `/api/v1/analytics/...`;
- `register_templates`, `prepare_app`: the dashboard and self-enrolment pages and the
  verification counter;
- `register_commands`: `registry programme rebuild-rollups`;
- `register_senders`: the `programme` sink sends the facility and monitoring notices.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from open_registry.core import StartupError
from open_registry.core.hookspecs import hookimpl
from open_registry.plugins.programme.config import ConfigError
from open_registry.plugins.programme.runtime import FACILITY_PROGRAMME, enabled, runtime

SCHEMAS = Path(__file__).parent / "schemas"
#: the entities whose writes the plugin checks
CHECKED = frozenset({"vaccination", "appointment", "schedule", "stock", "side_effect"})
TEMPLATES = Path(__file__).parent / "templates"


def _on(registry: Any) -> bool:
    return FACILITY_PROGRAMME in registry.services


@hookimpl
def register_schema_dirs(settings: Any) -> list[Path]:
    try:
        return [SCHEMAS] if enabled(settings) else []
    except ConfigError as exc:
        raise StartupError(str(exc)) from None


@hookimpl
def register_write_checks(registry: Any) -> list[str]:
    # imports are refused row by row like API writes: rates, stock, slots, reports
    return sorted(CHECKED) if _on(registry) else []


@hookimpl
def before_write(
    entity: str,
    action: str,
    record: dict[str, Any],
    previous: dict[str, Any] | None,
    connection: Any,
    registry: Any,
) -> None:
    if not _on(registry) or entity not in CHECKED:
        return
    from open_registry.plugins.programme.checks import check

    rt = runtime(registry)
    rt.ensure(connection)
    check(rt, entity, action, record, previous, connection)


@hookimpl
def after_write_batch(events: list[dict[str, Any]], connection: Any, registry: Any) -> None:
    if not _on(registry):
        return
    from open_registry.plugins.programme.followups import follow_up
    from open_registry.plugins.programme.rollups import Rollups

    rt = runtime(registry)
    rt.ensure(connection)
    seen = Rollups(rt).apply(connection, events)
    follow_up(rt, connection, events, seen)


@hookimpl
def register_routes(registry: Any) -> list[Any]:
    if not _on(registry):
        return []
    from open_registry.plugins.programme.dashboard import analytics_routes
    from open_registry.plugins.programme.routes import programme_routes

    runtime(registry).create_tables()
    return [*programme_routes(registry), analytics_routes(registry)]


@hookimpl
def register_commands(cli: Any) -> None:
    from open_registry.plugins.programme.commands import add_commands

    add_commands(cli)


@hookimpl
def register_senders(registry: Any) -> dict[str, Any]:
    from open_registry.plugins.programme.notify import SINK, send

    return {SINK: send}


@hookimpl
def register_templates() -> list[Path]:
    return [TEMPLATES]


@hookimpl
def prepare_app(app: Any, registry: Any) -> None:
    if not _on(registry):
        return
    from open_registry.plugins.programme.dashboard import add_dashboard_page
    from open_registry.plugins.programme.enrol_page import add_enrol_page
    from open_registry.plugins.programme.vaccinate_page import add_vaccinate_page
    from open_registry.plugins.programme.verifications import VerificationCounter

    add_dashboard_page(app, registry)
    add_enrol_page(app, registry)
    add_vaccinate_page(app, registry)  # /ui/vaccinate and the facility's home-page tasks
    app.add_middleware(VerificationCounter, rt=runtime(registry))
