"""`registry ...`: serve the API, check schema files, show the version.

Exit codes: 0 success, 1 the work failed (e.g. schema problems found), 2 wrong usage.
"""

from __future__ import annotations

import logging
import logging.config
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from open_registry.cli.audit import audit_app
from open_registry.cli.backup import register as register_backup_commands
from open_registry.cli.data import register as register_data_commands
from open_registry.cli.datakeys import data_key_app
from open_registry.cli.migrate import migrate_app
from open_registry.cli.options import (
    DatabaseOpt,
    DataDirOpt,
    NoDefaultOpt,
    SchemasOpt,
    settings_from,
)
from open_registry.cli.project import init
from open_registry.cli.startup import alembic_logger, base_url_warning, schema_hint
from open_registry.cli.users import client_app, demo_admin, user_app
from open_registry.cli.workers import register as register_worker_commands
from open_registry.core import Settings, StartupError, __version__
from open_registry.core.schemas.loading import load_schemas, schema_folders
from open_registry.generators.errors import SchemaError

app = typer.Typer(
    name="registry",
    help="Schema-driven registries: drop JSON Schema files in a folder, get tables, a REST API, "
    "OpenAPI and forms.",
    no_args_is_help=True,
    add_completion=False,
)
schema_app = typer.Typer(help="Check and inspect entity schema files.", no_args_is_help=True)
app.add_typer(schema_app, name="schema")
app.add_typer(migrate_app, name="migrate")
app.add_typer(audit_app, name="audit")
app.add_typer(data_key_app, name="data-key")
app.add_typer(user_app, name="user")
app.add_typer(client_app, name="client")
app.command()(init)
register_worker_commands(app)
register_data_commands(app)
register_backup_commands(app)


_settings = settings_from  # older name, kept for command modules


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes (PostgreSQL for more than 1)")] = 1,
    reload: Annotated[bool, typer.Option(help="Restart when code changes (development)")] = False,
    demo: Annotated[
        bool, typer.Option("--demo", help="Load demo data into an empty database")
    ] = False,
    database_url: DatabaseOpt = None,
    data_dir: DataDirOpt = None,
    schemas: SchemasOpt = None,
    no_default_schemas: NoDefaultOpt = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", "-v", help="Also log Alembic's INFO lines (migrations), quiet by default"
        ),
    ] = False,
) -> None:
    """Serve the REST API, OpenAPI (/docs) and pages.

    Set the certificates' base_url (registry.toml, under \\[plugins.certificates]) to the
    registry's public address before serving anywhere but localhost:8000: it is signed into
    every certificate, and start-up warns while it is left at its default.

    Examples:

      registry serve --demo                  # SQLite in ./data, demo records

      registry serve -s ./schemas --port 9000

      REGISTRY_DATABASE_URL=postgresql://postgres@127.0.0.1/registry registry serve --workers 4
    """
    import os

    import uvicorn

    from open_registry.core import serving

    settings = _settings(database_url, data_dir, schemas, no_default_schemas, demo)
    if workers > 1 and settings.sqlalchemy_url.startswith("sqlite"):
        typer.secho(
            "error: more than one worker needs PostgreSQL (SQLite has one writer); "
            "set --database-url",
            fg="red",
            err=True,
        )
        raise typer.Exit(2)
    # text or JSON lines with the request id (setting `log_format`, `REGISTRY_LOG_FORMAT`),
    # here and in uvicorn's worker processes (`log_config` below)
    from open_registry.core.observability import logging_config

    try:
        log_config = logging_config(settings.log_format)
    except ValueError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    log_config["loggers"].setdefault("alembic", alembic_logger(verbose))
    logging.config.dictConfig(log_config)
    # before start-up's lines, so that the demo sign-in stays the last thing said
    warning = base_url_warning(settings, host, port)
    if warning:
        typer.secho(warning, fg="yellow", err=True)
    # Check everything once here, so a broken schema or database stops us with a clear message.
    from open_registry.core.app import create_app, open_registry

    try:
        reg = open_registry(settings)
        create_app(registry=reg)
        if demo:
            name, password = demo_admin(reg)
            typer.secho(
                f"Demo sign-in: {name} / {password}  (a new password at every --demo start)",
                fg="yellow",
            )
        reg.close()
    except StartupError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        hint = schema_hint(str(exc), settings.default_schemas)
        if hint:
            typer.secho(hint, fg="yellow", err=True)
        raise typer.Exit(1) from None
    _export_settings(settings, os.environ)
    typer.secho(
        f"Registry on http://{host}:{port}  (API docs: http://{host}:{port}/docs)", fg="green"
    )
    uvicorn.run(
        "open_registry.core.asgi:app",
        host=host,
        port=port,
        workers=workers,
        reload=reload,
        factory=False,
        log_level="info",
        log_config=log_config,
        access_log=False,  # `registry.access` lines instead: route templates, request ids
        # time limits on request heads and idle connections (docs/operations.md, Timeouts)
        **serving.uvicorn_options(settings),
        **_worker_healthcheck(uvicorn.run),
    )


def _worker_healthcheck(run: Callable[..., object]) -> dict[str, Any]:
    """uvicorn 0.37+ kills a worker that does not answer its parent within 5 s: with
    `--workers 4` on two busy cores a worker's start-up (imports, schemas, the database check)
    takes longer, and workers were killed and started again. A minute, where uvicorn has it."""
    import inspect

    params = inspect.signature(run).parameters
    return {"timeout_worker_healthcheck": 60} if "timeout_worker_healthcheck" in params else {}


def _export_settings(settings: Settings, environ: dict[str, str] | object) -> None:
    """Hand the effective settings to worker processes through the environment."""
    import os

    os.environ["REGISTRY_DATABASE_URL"] = settings.database_url or settings.sqlalchemy_url
    os.environ["REGISTRY_DATA_DIR"] = str(settings.data_dir)
    os.environ["REGISTRY_SCHEMA_DIRS"] = os.pathsep.join(str(p) for p in settings.schema_dirs)
    os.environ["REGISTRY_DEFAULT_SCHEMAS"] = "true" if settings.default_schemas else "false"
    os.environ["REGISTRY_DEMO_DATA"] = "false"  # loaded once above, not per worker


@schema_app.command("check")
def schema_check(
    folders: Annotated[list[Path], typer.Argument(help="Folders of schema files to check")],
    with_defaults: Annotated[
        bool,
        typer.Option(
            "--with-defaults", help="Also load the shipped schemas (for references to them)"
        ),
    ] = False,
) -> None:
    """Check schema files without starting anything: file, JSON pointer and reason per problem.

    Examples:

      registry schema check ./schemas

      registry schema check ./schemas --with-defaults
    """
    try:
        schemas = load_schemas(schema_folders(with_defaults, folders))
    except SchemaError as exc:
        for issue in exc.issues:
            typer.secho(
                f"{issue.source}: {issue.pointer or '/'}: {issue.message}", fg="red", err=True
            )
        typer.secho(f"{len(exc.issues)} problem(s) found", fg="red", err=True)
        hint = schema_hint("\n".join(map(str, exc.issues)), with_defaults)
        if hint:
            typer.secho(hint + " (and check them without --with-defaults)", err=True)
        raise typer.Exit(1) from None
    for w in schemas.warnings:
        typer.secho(f"warning: {w}", fg="yellow", err=True)
    for e in schemas:
        typer.echo(
            f"ok  {e.name:<28} {len(e.fields):>3} fields  table {e.table_name}  ({e.source})"
        )
    typer.echo(f"{len(schemas)} entities, no problems")


@schema_app.command("show")
def schema_show(
    entity: Annotated[str, typer.Argument(help="Entity name, e.g. facility")],
    schemas: SchemasOpt = None,
    no_default_schemas: NoDefaultOpt = False,
) -> None:
    """Show an entity's fields, column types, indexes, unique keys and references.

    Examples:

      registry schema show facility

      registry schema show cold_chain_equipment -s ./schemas
    """
    settings = _settings(None, None, schemas, no_default_schemas)
    try:
        loaded = load_schemas(schema_folders(settings.default_schemas, settings.schema_dirs))
    except SchemaError as exc:
        for issue in exc.issues:
            typer.secho(str(issue), fg="red", err=True)
        raise typer.Exit(1) from None
    if entity not in loaded:
        typer.secho(
            f"error: no entity {entity!r}; entities: {', '.join(loaded.entities)}",
            fg="red",
            err=True,
        )
        raise typer.Exit(1)
    e = loaded[entity]
    typer.echo(f"{e.name}: {e.title}  (table {e.table_name}, {e.source})")
    flags = {"private": set(e.private), "internal": set(e.internal)}
    for f in e.fields.values():
        notes = [k for k, names in flags.items() if f.name in names]
        if f.required:
            notes.insert(0, "required")
        if f.enum:
            notes.append("one of " + ", ".join(map(str, f.enum)))
        typer.echo(f"  {f.name:<24} {f.kind:<9} {' '.join(notes)}")
    for label, groups in (("index", e.indexes), ("unique", e.uniques)):
        for g in groups:
            typer.echo(f"  {label}: ({', '.join(g)})")
    for ref in e.references:
        typer.echo(f"  reference: {ref.path} -> {ref.entity}.{ref.field}")
    if e.owner:
        typer.echo(f"  owner: {e.owner}")


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


_plugin_commands_added = False


def with_plugin_commands(third_party: bool = True) -> typer.Typer:
    """The root app with the commands plugins contribute (added once per process)."""
    global _plugin_commands_added
    if not _plugin_commands_added:
        from open_registry.core.plugins import plugin_manager

        _plugin_commands_added = True
        plugin_manager(third_party=third_party).hook.register_commands(cli=app)
    return app


def main() -> None:
    """The console script: adds the commands plugins contribute, then runs."""
    try:
        with_plugin_commands()
    except Exception as exc:
        typer.secho(f"warning: plugin commands not loaded: {exc}", fg="yellow", err=True)
    app()
