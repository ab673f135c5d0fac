"""CLI commands of the programme plugin: `registry programme rebuild-rollups`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from open_registry.core import Settings, StartupError, open_registry

DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="The registry's data folder")]
DatabaseOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="REGISTRY_DATABASE_URL",
        help="The registry's database (default: from settings)",
    ),
]


def add_commands(cli: typer.Typer) -> None:
    group = typer.Typer(help="Programme operations: rollups of the dashboard.")

    @group.command("rebuild-rollups")
    def rebuild_rollups(data_dir: DataDirOpt = None, database_url: DatabaseOpt = None) -> None:
        """Recount the dashboard's rollups from the records (after a restore or a new timezone)."""
        from open_registry.plugins.programme.rollups import rebuild
        from open_registry.plugins.programme.runtime import FACILITY_PROGRAMME, runtime

        overrides: dict[str, Any] = {}
        if data_dir:
            overrides["data_dir"] = data_dir.resolve()
        if database_url:
            overrides["database_url"] = database_url
        try:
            registry = open_registry(Settings.load(**overrides))
        except (StartupError, ValueError, FileNotFoundError) as exc:
            typer.secho(f"error: {exc}", fg="red", err=True)
            raise typer.Exit(2) from None
        try:
            if FACILITY_PROGRAMME not in registry.services:
                typer.secho("error: the programme plugin is off", fg="red", err=True)
                raise typer.Exit(2)
            done = rebuild(runtime(registry))
        finally:
            registry.close()
        counted = ", ".join(f"{n:,} {entity}" for entity, n in done.items())
        typer.echo(f"rollups rebuilt from {counted}")

    cli.add_typer(group, name="programme")
