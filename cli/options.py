"""Options shared by the commands that open a registry, and turning them into `Settings`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from open_registry.core import Settings
from open_registry.core.settings import parse_flag

DatabaseOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="REGISTRY_DATABASE_URL",
        help="SQLAlchemy URL, e.g. postgresql://user@host/db (default: SQLite in the data folder)",
    ),
]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="Folder for the SQLite file")]
SchemasOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--schemas",
        "-s",
        help="A folder of entity schema files (repeatable), after the shipped ones",
    ),
]
NoDefaultOpt = Annotated[
    bool,
    typer.Option(
        "--no-default-schemas", help="Do not load the shipped facility/vaccinator/... schemas"
    ),
]


def settings_from(
    database_url: str | None,
    data_dir: Any,
    schemas: Any,
    no_default_schemas: bool,
    demo: bool = False,
) -> Settings:
    """Settings file and environment, overridden by the command line; exit 2 on bad settings."""
    overrides: dict[str, Any] = {}
    if database_url:
        overrides["database_url"] = database_url
    if data_dir:
        overrides["data_dir"] = Path(data_dir).resolve()
    if schemas:
        overrides["schema_dirs"] = tuple(Path(p).resolve() for p in schemas)
    if no_default_schemas:
        overrides["default_schemas"] = False
    if demo:
        overrides["demo_data"] = True
        # with its history, unless REGISTRY_DEMO_HISTORY=false
        history = parse_flag(os.environ.get("REGISTRY_DEMO_HISTORY", ""))
        overrides["demo_history"] = history is not False
    try:
        return Settings.load(**overrides)
    except (ValueError, FileNotFoundError) as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None


def open_from(
    database_url: str | None,
    data_dir: Any,
    schemas: Any,
    no_default_schemas: bool,
    *,
    create_tables: bool = True,
) -> Any:
    """Open the registry the options describe; exit 1 with the reason when it cannot start."""
    from open_registry.core.app import open_registry
    from open_registry.core.errors import StartupError

    settings = settings_from(database_url, data_dir, schemas, no_default_schemas)
    try:
        return open_registry(settings, create_tables=create_tables)
    except StartupError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(1) from None
