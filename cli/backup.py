"""`registry backup <file>` and `registry restore <file>`: a copy of the database, and a database
brought back from one.

SQLite: SQLite's online backup API (a consistent copy, safe while the server runs). PostgreSQL:
`pg_dump -Fc` and `pg_restore`, the PostgreSQL client tools, found on PATH. The keys are not in
the database and never in a backup file: both commands say what to back up separately
(docs/operations.md, Backups).

Exit codes: 0 done, 1 the work failed or was refused (the target holds data, no pg_dump, the
restored audit chain is broken), 2 wrong usage.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Annotated, NoReturn

import sqlalchemy as sa
import typer

from open_registry.cli.options import DatabaseOpt, DataDirOpt, settings_from
from open_registry.core import Settings, storage

#: the first bytes of a `pg_dump --format=custom` file
PG_DUMP_MAGIC = b"PGDMP"

FileArg = Annotated[Path, typer.Argument(help="The backup file to write", dir_okay=False)]


def _fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(1)


def _shown(url: str) -> str:
    return sa.engine.make_url(url).render_as_string(hide_password=True)


def _backend(url: str) -> str:
    backend = sa.engine.make_url(url).get_backend_name()
    if backend == "sqlite" and storage.sqlite_file(url) is None:
        _fail("an in-memory SQLite database cannot be backed up or restored")
    if backend not in ("sqlite", "postgresql"):
        _fail(f"backup and restore handle SQLite and PostgreSQL, not {backend}")
    return backend


def _sqlite_path(url: str) -> Path:
    path = storage.sqlite_file(url)
    assert path is not None, "checked by _backend"
    return path


# -- PostgreSQL: the client tools --------------------------------------------------------------
def _pg_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        _fail(
            f"{name} is not on PATH: install the PostgreSQL client tools, of the server's major "
            "version or newer (Debian/Ubuntu: apt-get install postgresql-client), or put their "
            "folder on PATH"
        )
    return path


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """The libpq form of a database URL, without its password, and the environment that holds
    the password (`PGPASSWORD`), so that it never shows on a command line."""
    sa_url = sa.engine.make_url(url)
    env = dict(os.environ)
    if sa_url.password is not None:
        env["PGPASSWORD"] = str(sa_url.password)
    plain = sa_url.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def _run(command: list[str], env: dict[str, str], what: str) -> None:
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip()
        _fail(f"{what} failed (exit {done.returncode}):\n{detail}")


def _pg_dump(url: str, target: Path) -> None:
    pg_dump = _pg_tool("pg_dump")
    dsn, env = _libpq(url)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    partial.unlink(missing_ok=True)
    os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))  # owner only
    try:
        _run(
            [pg_dump, "--format=custom", "--no-password", f"--file={partial}", f"--dbname={dsn}"],
            env,
            "pg_dump",
        )
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def _pg_restore(url: str, source: Path, force: bool) -> None:
    pg_restore = _pg_tool("pg_restore")
    dsn, env = _libpq(url)
    command = [
        pg_restore,
        "--no-password",
        f"--dbname={dsn}",
        "--no-owner",
        "--exit-on-error",
        "--single-transaction",
    ]
    if force:
        command += ["--clean", "--if-exists"]
    _run([*command, str(source)], env, "pg_restore")


# -- what is not in a backup ---------------------------------------------------------------------
def _where(path: Path, env_value: str = "", env: str = "") -> str:
    if env_value:
        return f"the {env} value (set for this command)"
    return f"{path}" + ("" if path.exists() else " (MISSING here)")


def _outside(settings: Settings) -> list[str]:
    """What a registry needs besides its database, with where this one keeps it (never the
    values)."""
    certificates = (settings.plugins or {}).get("certificates", {})
    keys_dir = Path(certificates.get("keys_dir") or settings.data_dir / "keys")
    signing = _where(keys_dir)
    if os.environ.get("REGISTRY_CERTIFICATES_SIGNING_KEY"):
        signing += " and the REGISTRY_CERTIFICATES_SIGNING_KEY value"
    data_keys = _where(settings.data_key_path, settings.data_keys, "REGISTRY_DATA_KEYS")
    secret = _where(settings.auth_secret_path, settings.auth_secret, "REGISTRY_AUTH_SECRET")
    return [
        f"data keys: {data_keys} (without them the private fields cannot be read)",
        f"certificate signing keys: {signing}",
        f"token signing secret: {secret}",
        f"migrations folder: {_where(settings.migrations_path)}",
    ]


def _say_outside(settings: Settings, lead: str) -> None:
    typer.secho(lead, fg="yellow")
    for line in _outside(settings):
        typer.secho(f"  {line}", fg="yellow")
    typer.secho("  (docs/operations.md, Backups)", fg="yellow")


# -- the commands -------------------------------------------------------------------------------
def backup_command(
    file: FileArg,
    force: Annotated[bool, typer.Option("--force", help="Overwrite the file if it exists")] = False,
    database_url: DatabaseOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Write a consistent copy of the database to FILE, while the registry keeps running.

    SQLite: a SQLite database file, made with SQLite's online backup API. PostgreSQL: a
    `pg_dump --format=custom` archive (pg_dump must be on PATH). The file is readable by its
    owner only. The data keys, signing keys and token secret are NOT in it: back them up
    separately (the command lists where they are).

    Examples:

      registry backup /backups/registry-$(date +%F).db

      registry backup /backups/registry.dump --database-url postgresql://registry@db/registry
    """
    settings = settings_from(database_url, data_dir, None, False)
    url = settings.sqlalchemy_url
    backend = _backend(url)
    target = file.resolve()
    if target.exists() and not force:
        _fail(f"{target} exists; pass --force to overwrite it")
    if backend == "sqlite":
        try:
            storage.backup_sqlite(_sqlite_path(url), target)
        except (ValueError, sqlite3.Error) as exc:
            _fail(f"backup failed: {exc}")
    else:
        _pg_dump(url, target)
    size = target.stat().st_size
    typer.secho(f"backup of {_shown(url)} written to {target} ({size:,} bytes)", fg="green")
    _say_outside(settings, "Not in the backup, back these up separately (never with it):")


def _tables(settings: Settings, backend: str) -> list[str]:
    url = settings.sqlalchemy_url
    if backend == "sqlite":
        return storage.sqlite_tables(_sqlite_path(url))
    engine = sa.create_engine(url)
    try:
        return sorted(sa.inspect(engine).get_table_names())
    except sa.exc.OperationalError as exc:
        _fail(f"cannot use the database {_shown(url)}: {exc.orig}")
    finally:
        engine.dispose()


def restore_command(
    file: Annotated[
        Path, typer.Argument(help="The backup file", exists=True, dir_okay=False, readable=True)
    ],
    force: Annotated[
        bool, typer.Option("--force", help="Replace the content of a database that holds tables")
    ] = False,
    check: Annotated[
        bool, typer.Option("--verify/--no-verify", help="Verify the restored audit chain")
    ] = True,
    database_url: DatabaseOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Bring the database back from FILE (made by `registry backup`), then verify its audit chain.

    The database must be empty (SQLite: no file, or no tables; PostgreSQL: an existing database
    with no tables, e.g. just made with `createdb`) unless --force. Stop the server and the
    workers first. SQLite backups restore into SQLite, PostgreSQL ones (pg_restore must be on
    PATH) into PostgreSQL. The keys do not come with the backup: put them in place before
    starting the registry.

    Examples:

      registry restore /backups/registry-2026-03-01.db --data-dir ./data

      registry restore /backups/registry.dump --database-url postgresql://registry@db/registry2
    """
    from open_registry.core.audit.chain import verify

    settings = settings_from(database_url, data_dir, None, False)
    url = settings.sqlalchemy_url
    backend = _backend(url)
    source = file.resolve()
    with source.open("rb") as fh:
        magic = fh.read(len(storage.SQLITE_MAGIC))
    kind = (
        "sqlite"
        if magic == storage.SQLITE_MAGIC
        else "postgresql"
        if magic.startswith(PG_DUMP_MAGIC)
        else None
    )
    if kind is None:
        _fail(f"{source} is neither a SQLite database nor a pg_dump --format=custom archive")
    if kind != backend:
        _fail(f"{source} is a {kind} backup; the database {_shown(url)} is {backend}")
    present = _tables(settings, backend)
    if present and not force:
        shown = ", ".join(present[:5]) + (", ..." if len(present) > 5 else "")
        _fail(
            f"the database {_shown(url)} is not empty ({len(present)} tables: {shown}); "
            "restore into an empty database, or pass --force to replace its content"
        )
    if backend == "sqlite":
        try:
            storage.restore_sqlite(source, _sqlite_path(url))
        except (ValueError, sqlite3.Error) as exc:
            _fail(f"restore failed: {exc}")
    else:
        _pg_restore(url, source, force)
    typer.secho(f"restored {_shown(url)} from {source}", fg="green")
    if check:
        engine = storage.make_engine(settings)
        try:
            verdict = verify(engine)
        finally:
            engine.dispose()
        if not verdict.ok:
            _fail(
                f"audit chain BROKEN at seq {verdict.broken_seq}: {verdict.reason} "
                f"({verdict.entries} entries before it verified)"
            )
        typer.secho(
            f"audit chain intact: {verdict.entries} entries, last hash {verdict.head_hash}",
            fg="green",
        )
    _say_outside(
        settings,
        "Not restored (never in a backup): put the originals in place before starting the "
        "registry; a registry started without its data keys makes new ones, which cannot read "
        "the restored private fields:",
    )


def register(app: typer.Typer) -> None:
    """Add `backup` and `restore` to the `registry` command."""
    app.command("backup")(backup_command)
    app.command("restore")(restore_command)
