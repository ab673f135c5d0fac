"""`registry audit verify|list`: check the audit log's hash chain, read its entries.

Exit codes: 0 success (verify: the chain is intact), 1 the chain is broken or the registry
cannot start, 2 wrong usage.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import orjson
import typer

from open_registry.cli.options import DatabaseOpt, DataDirOpt, NoDefaultOpt, SchemasOpt, open_from

audit_app = typer.Typer(
    help="The audit log: check its hash chain, list its entries.", no_args_is_help=True
)


def _time(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        typer.secho(
            f"error: {option} must be a date or an RFC 3339 time, got {value!r}", fg="red", err=True
        )
        raise typer.Exit(2) from None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


@audit_app.command("verify")
def verify_command(
    database_url: DatabaseOpt = None,
    data_dir: DataDirOpt = None,
    schemas: SchemasOpt = None,
    no_default_schemas: NoDefaultOpt = False,
) -> None:
    """Recompute every entry's hash; name the first entry edited, deleted or moved.

    Prints the number of entries and the last hash: keep that line somewhere else (a ticket, a
    log host) to notice later if the whole log was replaced.

    Safe while the registry runs: it reads one snapshot of the log (one REPEATABLE READ, read-only
    transaction on PostgreSQL), so entries written meanwhile are neither seen nor counted.

    Examples:

      registry audit verify

      registry audit verify --database-url postgresql://registry@db/registry
    """
    from open_registry.core.audit.chain import verify

    reg = open_from(database_url, data_dir, schemas, no_default_schemas)
    try:
        verdict = verify(reg.db.engine)
    finally:
        reg.close()
    if not verdict.ok:
        typer.secho(
            f"audit chain BROKEN at seq {verdict.broken_seq}: {verdict.reason} "
            f"({verdict.entries} entries before it verified)",
            fg="red",
            err=True,
        )
        raise typer.Exit(1)
    note = f"; {verdict.unchained} older entries have no hash" if verdict.unchained else ""
    typer.secho(
        f"audit chain intact: {verdict.entries} entries, last hash {verdict.head_hash}{note}",
        fg="green",
    )


@audit_app.command("list")
def list_command(
    entity: Annotated[str | None, typer.Option(help="Only this entity")] = None,
    record: Annotated[str | None, typer.Option(help="Only this record id")] = None,
    actor: Annotated[str | None, typer.Option(help="Only this actor")] = None,
    action: Annotated[
        str | None, typer.Option(help="Only this action: create, update, delete, export, ...")
    ] = None,
    since: Annotated[str | None, typer.Option("--from", help="From this time (inclusive)")] = None,
    until: Annotated[str | None, typer.Option("--to", help="Up to this time (exclusive)")] = None,
    limit: Annotated[int, typer.Option(help="At most this many entries", min=1)] = 50,
    oldest_first: Annotated[
        bool, typer.Option("--oldest-first", help="Oldest first (default: newest first)")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line")] = False,
    database_url: DatabaseOpt = None,
    data_dir: DataDirOpt = None,
    schemas: SchemasOpt = None,
    no_default_schemas: NoDefaultOpt = False,
) -> None:
    """List audit entries: who did what to which record, and which fields (never values).

    Examples:

      registry audit list --entity recipient --limit 20

      registry audit list --record 0193c1a0-... --oldest-first

      registry audit list --action export --from 2026-01-01 --json
    """
    from open_registry.core.audit.chain import AuditQuery, list_entries

    query = AuditQuery(
        entity=entity,
        record_id=record,
        actor=actor,
        action=action,
        since=_time(since, "--from"),
        until=_time(until, "--to"),
        limit=limit,
        ascending=oldest_first,
    )
    reg = open_from(database_url, data_dir, schemas, no_default_schemas)
    try:
        entries, _ = list_entries(reg.db.engine, query)
    finally:
        reg.close()
    for e in entries:
        if as_json:
            typer.echo(orjson.dumps(e).decode())
            continue
        what = " ".join(str(x) for x in (e["entity"], e["recordId"]) if x)
        version = f" v{e['version']}" if e["version"] is not None else ""
        fields = e["fields"]
        if fields is None:
            shown = ""
        elif isinstance(fields, list):
            shown = ", ".join(map(str, fields))
        else:
            shown = orjson.dumps(fields).decode()
        typer.echo(
            f"{e['seq']:>8}  {e['at']}  {e['actor'] or '-':<16} {e['action']:<16} "
            f"{what}{version}  {shown}"
        )
