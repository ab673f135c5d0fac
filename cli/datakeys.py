"""`registry data-key init|status|rotate`: the keys that encrypt private fields at rest.

(Signing keys of certificates are another thing: `registry keys ...` of the certificates
plugin.) No command prints a key. Exit codes: 0 success, 1 the work failed, 2 wrong usage.
"""

from __future__ import annotations

from typing import Annotated

import typer

from open_registry.cli.options import (
    DatabaseOpt,
    DataDirOpt,
    NoDefaultOpt,
    SchemasOpt,
    open_from,
    settings_from,
)
from open_registry.core.errors import RegistryError

data_key_app = typer.Typer(
    help="Data keys: encryption at rest of private fields (see docs/security.md).",
    no_args_is_help=True,
)


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.secho(f"error: {message}", fg="red", err=True)
    return typer.Exit(code)


@data_key_app.command("init")
def init_command(data_dir: DataDirOpt = None) -> None:
    """Create the data key file (mode 0600) if there is none; print where it is and its key id.

    The server also creates it on first start. Back it up: without it no private value can be
    read. With REGISTRY_DATA_KEYS set, the keys come from there and no file is needed.

    Examples:

      registry data-key init

      registry data-key init --data-dir /var/lib/registry
    """
    from open_registry.core.crypto import load_keyring

    settings = settings_from(None, data_dir, None, False)
    if settings.data_keys.strip():
        raise _fail("REGISTRY_DATA_KEYS is set: the keys come from there, not from a file")
    try:
        keyring, created = load_keyring("", settings.data_key_path)
    except RegistryError as exc:
        raise _fail(exc.detail) from None
    state = "created" if created else "already exists"
    typer.echo(f"{settings.data_key_path} {state}; current key id {keyring.current}")


@data_key_app.command("status")
def status_command(
    database_url: DatabaseOpt = None,
    data_dir: DataDirOpt = None,
    schemas: SchemasOpt = None,
    no_default_schemas: NoDefaultOpt = False,
) -> None:
    """Show the key ids, the current one, and how many stored values each key encrypts.

    Examples:

      registry data-key status
    """
    from open_registry.core.rekey import key_usage

    reg = open_from(database_url, data_dir, schemas, no_default_schemas)
    try:
        keyring = reg.db.keyring()
        source = keyring.path or "REGISTRY_DATA_KEYS"
        typer.echo(f"keys from {source}: {', '.join(sorted(keyring.keys.keys))}")
        typer.echo(f"current key: {keyring.current}")
        for entity, fields in key_usage(reg.services).items():
            for name, counts in fields.items():
                shown = ", ".join(f"{k}: {n}" for k, n in sorted(counts.items())) or "no values"
                typer.echo(f"  {entity}.{name}: {shown}")
    except RegistryError as exc:
        raise _fail(exc.detail) from None
    finally:
        reg.close()


@data_key_app.command("rotate")
def rotate_command(
    new_key: Annotated[
        bool,
        typer.Option(
            "--new-key/--no-new-key",
            help="Make a new current key first (--no-new-key: re-encrypt to the current one, "
            "e.g. after changing REGISTRY_DATA_KEYS, or to encrypt values stored before)",
        ),
    ] = True,
    keep_old: Annotated[
        bool, typer.Option("--keep-old", help="Keep the old keys in the key file afterwards")
    ] = False,
    batch_size: Annotated[int, typer.Option(help="Rows per transaction", min=1)] = 1000,
    grace_seconds: Annotated[
        float,
        typer.Option(help="Wait after writing the new key, so running servers pick it up", min=0),
    ] = 3.0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress lines")] = False,
    database_url: DatabaseOpt = None,
    data_dir: DataDirOpt = None,
    schemas: SchemasOpt = None,
    no_default_schemas: NoDefaultOpt = False,
) -> None:
    """Rotate the data key: a new current key, every private value re-encrypted with it.

    Reading works throughout (the old key stays until nothing uses it); servers that are
    running load the changed key file by themselves. Old keys no stored value uses are removed
    at the end, unless --keep-old.

    Examples:

      registry data-key rotate

      registry data-key rotate --no-new-key        # encrypt values stored before encryption
    """
    from open_registry.core.rekey import rotate

    last: dict[str, int] = {}

    def progress(entity: str, done: int, total: int) -> None:
        step = max(1, total // 20)
        if quiet or (done and done < total and done - last.get(entity, 0) < step):
            return
        last[entity] = done
        typer.echo(f"  {entity}: {done}/{total} rows re-encrypted", err=True)

    reg = open_from(database_url, data_dir, schemas, no_default_schemas)
    try:
        report = rotate(
            reg.services,
            new_key=new_key,
            keep_old=keep_old,
            batch_size=batch_size,
            grace_seconds=grace_seconds,
            progress=progress,
            actor="cli",
        )
    except RegistryError as exc:
        raise _fail(exc.detail) from None
    finally:
        reg.close()
    if report.new_key:
        typer.echo(f"new current key: {report.new_key}")
    total = sum(report.rewritten.values())
    typer.echo(f"{total} rows re-encrypted")
    if report.retired:
        typer.echo(f"removed keys no value uses any more: {', '.join(report.retired)}")
    if report.still_used:
        left = ", ".join(f"{k}: {n}" for k, n in sorted(report.still_used.items()))
        typer.secho(f"values still under other keys (kept): {left}", fg="yellow", err=True)
        raise typer.Exit(1)
