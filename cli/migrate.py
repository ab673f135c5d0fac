"""`registry migrate`: plan, write and apply Alembic revisions generated from the schema files."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from open_registry.cli.options import DatabaseOpt, DataDirOpt, NoDefaultOpt, SchemasOpt, open_from
from open_registry.core import migrations
from open_registry.core.app import Registry
from open_registry.core.audit.chain import record_event

migrate_app = typer.Typer(
    help="Bring the database to the schema files through migrations (Alembic revisions).",
    invoke_without_command=True,
)


def _open(database_url: str | None, data_dir: Any, schemas: Any, no_default: bool) -> Registry:
    return open_from(database_url, data_dir, schemas, no_default, create_tables=False)


def _show(plan: migrations.Plan) -> None:
    if plan.pending:
        typer.echo(f"revisions not applied yet: {', '.join(plan.pending)}")
    for change in plan.changes:
        typer.secho(f"  {change}", fg="red" if change.destructive else None)


@migrate_app.callback()
def migrate(
    ctx: typer.Context,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Only tell whether the database is behind the schemas: exit 1 if it is (for CI)",
        ),
    ] = False,
    allow_destructive: Annotated[
        bool,
        typer.Option(
            "--allow-destructive", help="Apply changes that drop or narrow data (reported first)"
        ),
    ] = False,
    message: Annotated[
        str | None, typer.Option("-m", "--message", help="Name of the new revision")
    ] = None,
    database_url: DatabaseOpt = None,
    data_dir: DataDirOpt = None,
    schemas: SchemasOpt = None,
    no_default_schemas: NoDefaultOpt = False,
) -> None:
    """Plan the changes the schemas need, write them as a revision and apply it.

    Additive changes (new entity, field, index, enum value, a field becoming optional) apply and
    keep every row. Dropping a field or entity, changing a type, making a field required while
    rows lack it, narrowing an enum, or a unique key existing rows violate are refused unless
    --allow-destructive is given, and the data they would break is reported first.

    Examples:

      registry migrate --check          # exit 1 when the database is behind (CI)

      registry migrate plan             # show what would change

      registry migrate -m "add cold chain"

      registry migrate apply            # run revisions written elsewhere (production)
    """
    if ctx.invoked_subcommand:
        return
    reg = _open(database_url, data_dir, schemas, no_default_schemas)
    folder = reg.settings.migrations_path
    try:
        plan = migrations.plan(reg.db, reg.schemas, folder)
        if check:
            if plan.up_to_date:
                typer.echo("the database matches the schemas")
                return
            typer.echo("the database is behind the schemas:")
            _show(plan)
            raise typer.Exit(1)
        if plan.pending:
            migrations.apply_pending(reg.db, folder)
            _audit(reg, plan.pending)
            typer.echo(f"applied revisions: {', '.join(plan.pending)}")
            plan = migrations.plan(reg.db, reg.schemas, folder)
        if not plan.changes:
            typer.echo("the database matches the schemas")
            return
        typer.echo("plan:")
        _show(plan)
        if plan.destructive and not allow_destructive:
            typer.secho(
                f"refused: {len(plan.destructive)} change(s) would drop or break stored "
                "data (marked DESTRUCTIVE above). Fix the data or the schema, or run "
                "again with --allow-destructive.",
                fg="red",
                err=True,
            )
            raise typer.Exit(1)
        blocked = [c for c in plan.changes if c.action == "add unique key" and c.destructive]
        if blocked:
            typer.secho(
                "refused: a unique key cannot be created while records share its value; "
                "fix those records first.",
                fg="red",
                err=True,
            )
            raise typer.Exit(1)
        if not plan.needs_ddl:
            typer.echo("no table changes needed (the schema change affects validation only)")
            return
        name = message or "; ".join(f"{c.action} {c.table}" for c in plan.changes)[:60]
        path = migrations.write_revision(reg.db, folder, name)
        typer.echo(f"wrote {path}")
        migrations.apply_pending(reg.db, folder)
        _audit(reg, [path.stem] if path else [])
        typer.secho("applied; the database matches the schemas", fg="green")
    finally:
        reg.close()


def _audit(reg: Registry, revisions: list[str]) -> None:
    """Schema changes are audit entries too (which revisions, never data)."""
    record_event(reg.db.engine, "schema.migrate", actor="cli", details={"revisions": revisions})


@migrate_app.command("plan")
def migrate_plan(
    database_url: DatabaseOpt = None,
    data_dir: DataDirOpt = None,
    schemas: SchemasOpt = None,
    no_default_schemas: NoDefaultOpt = False,
) -> None:
    """Show what `registry migrate` would do, and the data each risky change would break."""
    reg = _open(database_url, data_dir, schemas, no_default_schemas)
    try:
        plan = migrations.plan(reg.db, reg.schemas, reg.settings.migrations_path)
    finally:
        reg.close()
    if plan.up_to_date:
        typer.echo("the database matches the schemas")
        return
    _show(plan)


@migrate_app.command("apply")
def migrate_apply(
    database_url: DatabaseOpt = None,
    data_dir: DataDirOpt = None,
    schemas: SchemasOpt = None,
    no_default_schemas: NoDefaultOpt = False,
) -> None:
    """Apply the revisions in the migrations folder that the database does not have yet."""
    reg = _open(database_url, data_dir, schemas, no_default_schemas)
    try:
        _, _, pending = migrations.revision_state(reg.db, reg.settings.migrations_path)
        if not pending:
            typer.echo("no revisions to apply")
            return
        migrations.apply_pending(reg.db, reg.settings.migrations_path)
        _audit(reg, pending)
        typer.echo(f"applied revisions: {', '.join(pending)}")
    finally:
        reg.close()
