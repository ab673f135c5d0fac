"""`registry init DIR`: a new implementer project, ready for `registry serve`."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer

from open_registry.core.migrations import ensure_environment
from open_registry.core.schemas.loading import default_schema_dir

SETTINGS = """# Registry settings. Environment variables REGISTRY_<NAME> override these.
title = "{title}"
# SQLite in data/ by default; for PostgreSQL:
# database_url = "postgresql://postgres@127.0.0.1:5432/registry"
data_dir = "data"
# The entity schema files of this project (copies of the shipped ones: edit freely). A file
# here replaces the shipped entity of the same name; the shipped schemas stay on so that the
# certificates and programme plugins load their entities (vaccination, certificate, schedule,
# ...), which refer to these. `default_schemas = false` serves schemas/ alone, without them.
schema_dirs = ["schemas"]
default_schemas = true
# Alembic revisions written by `registry migrate`: commit them.
migrations_dir = "migrations"
"""

GITIGNORE = """data/
__pycache__/
"""

README = """# {title}

A registry project. Edit the entity schema files in `schemas/`, then:

    registry schema check schemas     # file, JSON pointer and reason per problem
    registry migrate                  # plan, write and apply the revision the change needs
    registry serve                    # http://127.0.0.1:8000/docs

Commit `schemas/`, `migrations/` and `registry.toml`; `data/` holds the SQLite database.
"""


def init(
    directory: Annotated[Path, typer.Argument(help="Folder to create (must be empty or new)")],
    title: Annotated[str, typer.Option(help="Name shown in the API docs")] = "Registry",
) -> None:
    """Create a new implementer project: settings, editable schemas, migrations folder.

    Examples:

      registry init my-registry && cd my-registry && registry serve
    """
    if directory.exists() and any(directory.iterdir()):
        typer.secho(f"error: {directory} is not empty; choose a new folder", fg="red", err=True)
        raise typer.Exit(2)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "registry.toml").write_text(SETTINGS.format(title=title))
    (directory / ".gitignore").write_text(GITIGNORE)
    (directory / "README.md").write_text(README.format(title=title))
    schemas = directory / "schemas"
    schemas.mkdir()
    for path in sorted(default_schema_dir().glob("*.json")):
        shutil.copy(path, schemas / path.name)
    ensure_environment(directory / "migrations")
    typer.echo(
        f"created {directory}: registry.toml, schemas/ ({len(list(schemas.iterdir()))} "
        "files), migrations/"
    )
    typer.echo(f"next: cd {directory} && registry serve")
