"""`registry audit verify|checkpoint|public-key|list`: check the audit log's hash chains and
their signed checkpoints, sign a checkpoint, read its entries.

Exit codes: 0 success (verify: the log is intact), 1 the log is broken or the registry
cannot start, 2 wrong usage.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from open_registry.cli.options import (
    DatabaseOpt,
    DataDirOpt,
    NoDefaultOpt,
    SchemasOpt,
    open_from,
    settings_from,
)
from open_registry.cli.tables import echo_table

audit_app = typer.Typer(
    help="The audit log: check its hash chains and signed checkpoints, list its entries.",
    no_args_is_help=True,
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


PublicKeyOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--public-key",
        help="Also trust checkpoints signed by this public key (PEM; repeatable): an auditor's "
        "copy, or the key before a rotation",
    ),
]


def _keys(data_dir: Path, public_keys: list[Path] | None) -> list[Any]:
    """The keys checkpoints are checked with: the data folder's audit key (when there is one)
    and the `--public-key` files; exit 2 naming a file that cannot be read."""
    from open_registry.core.audit import keys

    found = []
    try:
        if keys.key_path(data_dir).exists():
            found.append(keys.signing_key(data_dir, create=False))
        found += [keys.read_public_key(p) for p in public_keys or ()]
    except keys.AuditKeyError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    return found


@audit_app.command("verify")
def verify_command(
    public_key: PublicKeyOpt = None,
    checkpoint: Annotated[
        bool,
        typer.Option(
            "--checkpoint/--no-checkpoint",
            help="When the log is intact, sign a checkpoint of its chain heads (needs the key)",
        ),
    ] = True,
    database_url: DatabaseOpt = None,
    data_dir: DataDirOpt = None,
    schemas: SchemasOpt = None,
    no_default_schemas: NoDefaultOpt = False,
) -> None:
    """Recompute every entry's hash and check every signed checkpoint; name the first break.

    Names the first entry edited, deleted, moved or cut off, or the first checkpoint that does
    not verify. Every chain must extend the chain heads each signed checkpoint recorded, so a chain
    truncated or rewritten below a checkpoint is found even when its head row was rewritten
    too. When the log is intact a new checkpoint is signed (`--no-checkpoint`: not). Prints the
    number of entries, the last hash and the last checkpoint's hash: keep that line somewhere
    else (a ticket, a log host) to notice later if the log and its checkpoints were replaced.

    Safe while the registry runs: it reads one snapshot of the log (one REPEATABLE READ, read-only
    transaction on PostgreSQL), so entries written meanwhile are neither seen nor counted.

    Examples:

      registry audit verify

      registry audit verify --database-url postgresql://registry@db/registry

      registry audit verify --no-checkpoint --public-key audit-public.pem
    """
    from open_registry.core.audit import checkpoint as checkpoints

    reg = open_from(database_url, data_dir, schemas, no_default_schemas)
    try:
        trusted = _keys(reg.settings.data_dir, public_key)
        verdict = checkpoints.verify(reg.db.engine, trusted)
        made = None
        if verdict.ok and checkpoint:
            from open_registry.core.audit.keys import signing_key

            made = checkpoints.record(reg.db.engine, signing_key(reg.settings.data_dir))
    finally:
        reg.close()
    if verdict.broken_checkpoint is not None:
        typer.secho(
            f"audit checkpoint BROKEN at checkpoint {verdict.broken_checkpoint}: "
            f"{verdict.reason} ({verdict.checkpoints} checkpoints before it verified)",
            fg="red",
            err=True,
        )
        raise typer.Exit(1)
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
    signed = f"{verdict.checkpoints} signed checkpoints verified"
    if verdict.checkpoints:
        signed += f", last {verdict.checkpoint_hash}"
    if made is not None:
        signed += f"; new checkpoint {made.seq}: {made.hash}"
    typer.echo(signed)


@audit_app.command("checkpoint")
def checkpoint_command(
    database_url: DatabaseOpt = None,
    data_dir: DataDirOpt = None,
    schemas: SchemasOpt = None,
    no_default_schemas: NoDefaultOpt = False,
) -> None:
    """Sign a checkpoint of every audit chain's head now.

    The workers sign one a minute when the log grew. Makes the audit key file
    `<data dir>/audit-key.pem` on first use.

    Examples:

      registry audit checkpoint
    """
    from open_registry.core.audit import checkpoint as checkpoints
    from open_registry.core.audit.keys import AuditKeyError, signing_key

    reg = open_from(database_url, data_dir, schemas, no_default_schemas)
    try:
        try:
            key = signing_key(reg.settings.data_dir)
        except AuditKeyError as exc:
            typer.secho(f"error: {exc}", fg="red", err=True)
            raise typer.Exit(1) from None
        made = checkpoints.record(reg.db.engine, key, force=True)
    finally:
        reg.close()
    if made is None:
        typer.echo("another process is writing a checkpoint now; nothing written")
        return
    moved = sum(1 for _, n, _ in made.heads if n)
    typer.echo(
        f"checkpoint {made.seq} signed by key {made.key_id}: {len(made.heads)} chain heads "
        f"({moved} with entries), hash {made.hash}"
    )


@audit_app.command("public-key")
def public_key_command(data_dir: DataDirOpt = None) -> None:
    """Print the audit key's public half (PEM), for auditors' `verify --public-key`.

    Examples:

      registry audit public-key > audit-public.pem
    """
    from open_registry.core.audit.keys import AuditKeyError, signing_key

    settings = settings_from(None, data_dir, None, False)
    try:
        key = signing_key(settings.data_dir, create=False)
    except AuditKeyError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(1) from None
    typer.echo(key.public_pem(), nl=False)


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
    if as_json:
        for e in entries:
            typer.echo(orjson.dumps(e).decode())
        return
    echo_table(("SEQ", "AT", "ACTOR", "ACTION", "RECORD", "FIELDS"), map(_row, entries))


def _row(e: dict[str, Any]) -> tuple[object, ...]:
    """One audit entry as a row of `audit list`'s table."""
    what = " ".join(str(x) for x in (e["entity"], e["recordId"]) if x)
    version = f" v{e['version']}" if e["version"] is not None else ""
    fields = e["fields"]
    if fields is None:
        shown = ""
    elif isinstance(fields, list):
        shown = ", ".join(map(str, fields))
    else:
        shown = orjson.dumps(fields).decode()
    return e["seq"], e["at"], e["actor"], e["action"], f"{what}{version}" or None, shown
