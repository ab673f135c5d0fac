"""`registry import` and `registry export`: bulk data in and out of one entity; `registry purge`:
one record removed for good.

Exit codes: 0 every row imported (or exported), 1 some rows were bad (on_error=skip), the import
was aborted (on_error=abort) or interrupted (purge: no such record, or not confirmed), 2 wrong
usage (unreadable file or mapping, unknown entity or field, bad option).
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from open_registry.cli.options import DatabaseOpt, DataDirOpt, NoDefaultOpt, SchemasOpt, open_from
from open_registry.core.errors import RegistryError
from open_registry.core.query import OPERATORS


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(f"error: {message}", fg="red", err=True)
    return typer.Exit(code)


def _open_registry(
    database_url: str | None, data_dir: Path | None, schemas: Any, no_default_schemas: bool
) -> Any:
    return open_from(database_url, data_dir, schemas, no_default_schemas)


def _service(reg: Any, entity: str) -> Any:
    if entity not in reg.services:
        reg.close()
        raise _fail(f"no entity {entity!r}; entities: {', '.join(reg.services)}")
    return reg.services[entity]


def import_command(
    entity: Annotated[str, typer.Argument(help="Entity to import into, e.g. facility")],
    file: Annotated[
        Path, typer.Argument(help="CSV or JSON Lines file (.csv, .jsonl, .ndjson; .gz too)")
    ],
    mapping: Annotated[
        Path | None,
        typer.Option("--mapping", "-m", help="Mapping file (JSON or TOML): renames, constants..."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check every row, write nothing")
    ] = False,
    upsert_on: Annotated[
        str | None,
        typer.Option(
            "--upsert-on", help="Unique field: update the record with the row's value, else insert"
        ),
    ] = None,
    on_error: Annotated[
        str,
        typer.Option(
            "--on-error", help="skip: write the good rows; abort: write nothing if a row is bad"
        ),
    ] = "skip",
    errors: Annotated[
        Path | None,
        typer.Option("--errors", help="Write bad rows to this CSV: row, field, message, data"),
    ] = None,
    keep_ids: Annotated[
        bool, typer.Option("--keep-ids", help="Take record ids from the file's id column")
    ] = False,
    file_format: Annotated[
        str | None, typer.Option("--format", help="csv or jsonl (default: by file name)")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar")] = False,
    database_url: DatabaseOpt = None,
    data_dir: DataDirOpt = None,
    schemas: SchemasOpt = None,
    no_default_schemas: NoDefaultOpt = False,
) -> None:
    """Import a CSV or JSON Lines file into an entity, every row validated like an API write.

    CSV headers are field names; nested fields are dotted (address.district), list items indexed
    (programs.0.programId), a list of values sits in one cell split on | . An empty cell is an
    absent field. See docs/import-export.md for the mapping file.

    Examples:

      registry import facility facilities.csv

      registry import recipient enrollments.csv.gz --dry-run --errors bad.csv

      registry import facility divoc/facilities.csv -m examples/divoc-mappings/facilities.toml

      registry import recipient people.jsonl --upsert-on identity --on-error abort
    """
    from open_registry.core.imports.importer import ImportInterrupted, ImportOptions, import_file
    from open_registry.core.imports.rows import ImportUsageError, load_mapping

    if on_error not in ("skip", "abort"):
        raise _fail("--on-error must be skip or abort")
    if file_format not in (None, "csv", "jsonl"):
        raise _fail("--format must be csv or jsonl")
    if not file.is_file():
        raise _fail(f"{file} is not a file")
    try:
        loaded = load_mapping(mapping) if mapping else None
    except ImportUsageError as exc:
        raise _fail(str(exc)) from None
    reg = _open_registry(database_url, data_dir, schemas, no_default_schemas)
    try:
        service = _service(reg, entity)
        options = ImportOptions(
            format=file_format,
            mapping=loaded,
            dry_run=dry_run,
            upsert_on=upsert_on,
            on_error=on_error,
            errors_path=errors,
            keep_ids=keep_ids,
            max_line_bytes=reg.settings.import_max_line_bytes,
        )
        try:
            with _ProgressBar(quiet) as bar:
                options.progress = bar
                result = import_file(service, file, options)
        except ImportUsageError as exc:
            raise _fail(str(exc)) from None
        except ImportInterrupted as exc:
            typer.secho(f"interrupted: {exc.result.summary()}", fg="yellow", err=True)
            typer.echo("committed chunks are kept; re-run with --upsert-on to finish", err=True)
            raise typer.Exit(1) from None
    finally:
        reg.close()
    for e in result.errors[:10]:
        typer.secho(f"row {e.row}: {e.pointer or '/'}: {e.message}", fg="red", err=True)
    if len(result.errors) > 10:
        more = len(result.errors) - 10 + result.errors_dropped
        where = f" (all in {errors})" if errors else " (--errors FILE lists them all)"
        typer.secho(f"... and {more} more{where}", fg="red", err=True)
    colour = "green" if result.ok else "red" if result.aborted else "yellow"
    typer.secho(result.summary(), fg=colour)
    if not result.ok:
        raise typer.Exit(1)


class _ProgressBar:
    """A Rich progress bar over the file's bytes, with rows/s; a no-op when quiet or not a TTY."""

    def __init__(self, quiet: bool):
        self.enabled = not quiet and sys.stderr.isatty()
        self.progress: Any = None
        self.task: Any = None

    def __enter__(self) -> _ProgressBar:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.progress = Progress(
                TextColumn("[bold]import"),
                BarColumn(),
                TextColumn("{task.percentage:>5.1f}%"),
                TextColumn("{task.fields[rows]:>10,} rows  {task.fields[rate]:>8,.0f} rows/s"),
                TextColumn("{task.fields[failed]:,} bad"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self.progress.__enter__()
            self.task = self.progress.add_task("import", total=None, rows=0, rate=0.0, failed=0)
        return self

    def __call__(self, p: Any) -> None:
        if self.progress is not None:
            self.progress.update(
                self.task,
                total=p.bytes_total or None,
                completed=p.bytes_read,
                rows=p.rows,
                rate=p.rows_per_s,
                failed=p.failed,
            )

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)


def export_command(
    entity: Annotated[str, typer.Argument(help="Entity to export, e.g. facility")],
    file_format: Annotated[str, typer.Option("--format", help="csv or jsonl")] = "csv",
    where: Annotated[
        list[str] | None,
        typer.Option(
            "--where",
            "-w",
            help="Filter, as in the API (repeat for more): field=value, or field\\[op]=value with "
            f"op one of {', '.join(OPERATORS)}; in and between take comma-separated values, "
            "e.g. dob\\[between]=1960-01-01,1969-12-31 (docs/api.md, Search)",
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="File to write (.gz compresses; default stdout)"),
    ] = None,
    database_url: DatabaseOpt = None,
    data_dir: DataDirOpt = None,
    schemas: SchemasOpt = None,
    no_default_schemas: NoDefaultOpt = False,
) -> None:
    """Export an entity's records as CSV (import's header conventions) or JSON Lines.

    The CSV imports back unchanged: registry import ENTITY FILE --keep-ids.

    Examples:

      registry export facility > facilities.csv

      registry export recipient --format jsonl -o recipients.jsonl.gz

      registry export facility -w status=Active -w "address.state=Northland"

      registry export recipient -w "dob\\[gte]=1960-01-01" -w "gender\\[in]=Female,Other"
    """
    from open_registry.core.exports import EXPORT_FORMATS, export

    if file_format not in EXPORT_FORMATS:
        raise _fail(f"--format must be one of {', '.join(EXPORT_FORMATS)}")
    reg = _open_registry(database_url, data_dir, schemas, no_default_schemas)
    try:
        service = _service(reg, entity)
        try:
            if output is None:
                n = export(service, sys.stdout, file_format, where or [])
            else:
                opener: Any = gzip.open if output.suffix == ".gz" else open
                with opener(output, "wt", newline="", encoding="utf-8") as fh:
                    n = export(service, fh, file_format, where or [])
        except (RegistryError, ValueError) as exc:
            detail = getattr(exc, "detail", None) or str(exc)
            raise _fail(detail) from None
    finally:
        reg.close()
    if output is not None:
        typer.secho(f"{n} {entity} records written to {output}", fg="green", err=True)


def purge_command(
    entity: Annotated[str, typer.Argument(help="The record's entity, e.g. recipient")],
    record_id: Annotated[str, typer.Argument(help="The record's id")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation")] = False,
    database_url: DatabaseOpt = None,
    data_dir: DataDirOpt = None,
    schemas: SchemasOpt = None,
    no_default_schemas: NoDefaultOpt = False,
) -> None:
    """Remove a record's row for good: a soft-deleted record (or a live one).

    The audit log keeps a `purge` entry (who, when, which record; never its values) on its
    hash chain, and plugins get a `purged` event (a purged vaccination's certificates are
    revoked). The API's equivalent is DELETE /api/v1/ENTITY/ID?purge=true (system-admin).

    Examples:

      registry purge recipient 0193c1a0-...

      registry purge facility 0193c1a0-... --yes
    """
    from open_registry.cli.users import ACTOR

    if not yes and not typer.confirm(f"Purge {entity} {record_id} for good?", default=False):
        raise _fail("not purged", 1)
    reg = _open_registry(database_url, data_dir, schemas, no_default_schemas)
    try:
        service = _service(reg, entity)
        try:
            service.delete(record_id, actor=ACTOR, purge=True)
        except RegistryError as exc:
            raise _fail(exc.detail, 1) from None
    finally:
        reg.close()
    typer.secho(f"purged {entity} {record_id}", fg="green")


def register(app: typer.Typer) -> None:
    """Add `import`, `export` and `purge` to the `registry` command."""
    app.command("import")(import_command)
    app.command("export")(export_command)
    app.command("purge")(purge_command)
