"""`registry user add|list|disable|enable|passwd` and `registry client add|list|disable`: the
people and API clients that may sign in (docs/security.md).

Exit codes: 0 success, 1 refused (a name taken, no such user, bad role), 2 wrong usage.
"""

from __future__ import annotations

import getpass
import os
from typing import Annotated

import orjson
import typer

from open_registry.cli.options import DatabaseOpt, DataDirOpt, NoDefaultOpt, SchemasOpt, open_from
from open_registry.cli.tables import echo_table
from open_registry.core.auth.principal import ROLES, SCOPES
from open_registry.core.errors import RegistryError

user_app = typer.Typer(help="Users who sign in to the API and the pages.", no_args_is_help=True)
client_app = typer.Typer(
    help="API clients (OAuth2 client credentials) for integrations.", no_args_is_help=True
)
ACTOR = "cli:" + (os.environ.get("USER") or "local")

RolesOpt = Annotated[
    list[str],
    typer.Option("--role", "-r", help=f"A role (repeat for more): {', '.join(ROLES)}"),
]
FacilityOpt = Annotated[
    str | None, typer.Option("--facility", help="Facility code (for facility roles)")
]


def _fail(exc: RegistryError) -> typer.Exit:
    reasons = "; ".join(f"{e['pointer'].strip('/')}: {e['message']}" for e in exc.errors or [])
    typer.secho(f"error: {exc.detail}" + (f" ({reasons})" if reasons else ""), fg="red", err=True)
    return typer.Exit(1)


def _audit(reg: object, action: str, **details: object) -> None:
    from open_registry.core.audit import chain as audit

    audit.record_event(reg.db.engine, action, actor=ACTOR, details=details)  # type: ignore[attr-defined]


@user_app.command("add")
def add_user(
    username: Annotated[str, typer.Argument(help="The sign-in name")],
    role: RolesOpt,
    facility: FacilityOpt = None,
    recipient: Annotated[
        str | None, typer.Option("--recipient", help="Recipient id (for the recipient role)")
    ] = None,
    email: Annotated[str | None, typer.Option(help="Email for one-time codes")] = None,
    mobile: Annotated[str | None, typer.Option(help="Mobile number for one-time codes")] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input")
    ] = False,
    no_password: Annotated[
        bool, typer.Option("--no-password", help="Sign in by one-time code only")
    ] = False,
    database_url: DatabaseOpt = None,
    data_dir: DataDirOpt = None,
    schemas: SchemasOpt = None,
    no_default_schemas: NoDefaultOpt = False,
) -> None:
    """Add a user. The password is asked for (twice), or read from standard input.

    Examples:

      registry user add asha --role system-admin

      registry user add ravi --role facility-staff --facility FAC001 --mobile "+91 90000 00001"

      echo "$PASSWORD" | registry user add meena --role recipient --recipient <id> --password-stdin
    """
    password = None
    if password_stdin:
        password = typer.get_text_stream("stdin").readline().rstrip("\r\n")
    elif not no_password:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            typer.secho("error: the passwords differ", fg="red", err=True)
            raise typer.Exit(2)
    reg = open_from(database_url, data_dir, schemas, no_default_schemas)
    try:
        user = reg.auth.users.add(
            username,
            roles=role,
            password=password,
            facility=facility,
            recipient=recipient,
            email=email,
            phone=mobile,
            actor=ACTOR,
        )
        _audit(reg, "user.add", username=username, roles=user["roles"])
    except RegistryError as exc:
        raise _fail(exc) from None
    finally:
        reg.close()
    typer.echo(f"added user {username} ({', '.join(user['roles'])})")


@user_app.command("list")
def list_users(
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines")] = False,
    database_url: DatabaseOpt = None,
    data_dir: DataDirOpt = None,
    schemas: SchemasOpt = None,
    no_default_schemas: NoDefaultOpt = False,
) -> None:
    """List the users (never a password hash, email or mobile: only whether one is set)."""
    reg = open_from(database_url, data_dir, schemas, no_default_schemas)
    try:
        users = reg.auth.users.list()
    finally:
        reg.close()
    if as_json:
        for u in users:
            typer.echo(orjson.dumps(u).decode())
        return
    echo_table(
        ("USERNAME", "ROLES", "FACILITY", "SIGN-IN BY", "STATE"),
        (
            (
                u["username"],
                ",".join(u["roles"]),
                u["facility"],
                "/".join(k for k in ("password", "email", "mobile") if u[k]) or None,
                "DISABLED" if u["disabled"] else "active",
            )
            for u in users
        ),
    )


def _set_disabled(username: str, disabled: bool, *opts: object) -> None:
    reg = open_from(*opts)  # type: ignore[arg-type]
    try:
        reg.auth.users.set_disabled(username, disabled)
        _audit(reg, "user.disable" if disabled else "user.enable", username=username)
    except RegistryError as exc:
        raise _fail(exc) from None
    finally:
        reg.close()
    typer.echo(f"{'disabled' if disabled else 'enabled'} user {username}")


@user_app.command("disable")
def disable_user(
    username: str,
    database_url: DatabaseOpt = None,
    data_dir: DataDirOpt = None,
    schemas: SchemasOpt = None,
    no_default_schemas: NoDefaultOpt = False,
) -> None:
    """Stop a user from signing in (their page sessions end at once; API tokens they already
    hold run out within `token_ttl_seconds`)."""
    _set_disabled(username, True, database_url, data_dir, schemas, no_default_schemas)


@user_app.command("enable")
def enable_user(
    username: str,
    database_url: DatabaseOpt = None,
    data_dir: DataDirOpt = None,
    schemas: SchemasOpt = None,
    no_default_schemas: NoDefaultOpt = False,
) -> None:
    """Let a disabled user sign in again."""
    _set_disabled(username, False, database_url, data_dir, schemas, no_default_schemas)


@user_app.command("passwd")
def set_password(
    username: str,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input")
    ] = False,
    database_url: DatabaseOpt = None,
    data_dir: DataDirOpt = None,
    schemas: SchemasOpt = None,
    no_default_schemas: NoDefaultOpt = False,
) -> None:
    """Set a user's password."""
    if password_stdin:
        password = typer.get_text_stream("stdin").readline().rstrip("\r\n")
    else:
        password = getpass.getpass("New password: ")
    reg = open_from(database_url, data_dir, schemas, no_default_schemas)
    try:
        reg.auth.users.set_password(username, password)
        _audit(reg, "user.password", username=username)
    except RegistryError as exc:
        raise _fail(exc) from None
    finally:
        reg.close()
    typer.echo(f"password of {username} changed")


@client_app.command("add")
def add_client(
    role: Annotated[
        list[str] | None,
        typer.Option("--role", "-r", help="A role besides api-client (repeat for more)"),
    ] = None,
    facility: FacilityOpt = None,
    scope: Annotated[
        list[str] | None, typer.Option("--scope", help=f"An OAuth2 scope: {', '.join(SCOPES)}")
    ] = None,
    name: Annotated[str | None, typer.Option(help="What the client is, for people")] = None,
    database_url: DatabaseOpt = None,
    data_dir: DataDirOpt = None,
    schemas: SchemasOpt = None,
    no_default_schemas: NoDefaultOpt = False,
) -> None:
    """Add an API client; prints its id and secret ONCE (only a hash of the secret is kept).

    The client gets tokens from POST /api/v1/auth/token (grant_type=client_credentials).

    Examples:

      registry client add --name "hospital HIS" --role facility-staff --facility FAC001

      registry client add --name "partner issuer" --scope vc:issue
    """
    reg = open_from(database_url, data_dir, schemas, no_default_schemas)
    try:
        client, secret = reg.auth.clients.add(
            roles=role or [], facility=facility, name=name, scopes=scope or [], actor=ACTOR
        )
        _audit(reg, "client.add", client=client["clientId"], roles=client["roles"])
    except RegistryError as exc:
        raise _fail(exc) from None
    finally:
        reg.close()
    typer.echo(f"client_id:     {client['clientId']}")
    typer.echo(f"client_secret: {secret}")
    typer.secho("Keep the secret now: it cannot be shown again.", fg="yellow", err=True)


@client_app.command("list")
def list_clients(
    database_url: DatabaseOpt = None,
    data_dir: DataDirOpt = None,
    schemas: SchemasOpt = None,
    no_default_schemas: NoDefaultOpt = False,
) -> None:
    """List the API clients (never their secrets)."""
    reg = open_from(database_url, data_dir, schemas, no_default_schemas)
    try:
        clients = reg.auth.clients.list()
    finally:
        reg.close()
    echo_table(
        ("CLIENT ID", "ROLES", "FACILITY", "SCOPES", "STATE", "NAME"),
        (
            (
                c["clientId"],
                ",".join(c["roles"]),
                c["facility"],
                ",".join(c["scopes"]) or None,
                "DISABLED" if c["disabled"] else "active",
                c["name"] or "",
            )
            for c in clients
        ),
    )


@client_app.command("disable")
def disable_client(
    client_id: str,
    database_url: DatabaseOpt = None,
    data_dir: DataDirOpt = None,
    schemas: SchemasOpt = None,
    no_default_schemas: NoDefaultOpt = False,
) -> None:
    """Stop a client from getting tokens (tokens it holds run out within token_ttl_seconds)."""
    reg = open_from(database_url, data_dir, schemas, no_default_schemas)
    try:
        reg.auth.clients.set_disabled(client_id, True)
        _audit(reg, "client.disable", client=client_id)
    except RegistryError as exc:
        raise _fail(exc) from None
    finally:
        reg.close()
    typer.echo(f"disabled client {client_id}")


def demo_admin(reg: object) -> tuple[str, str]:
    """For `serve --demo`: the user `demo-admin` (system-admin) with a new random password."""
    import secrets

    users = reg.auth.users  # type: ignore[attr-defined]
    password = secrets.token_urlsafe(12)
    if users.get("demo-admin") is None:
        users.add("demo-admin", roles=["system-admin"], password=password, actor=ACTOR)
    else:
        users.set_password("demo-admin", password)
        users.set_disabled("demo-admin", False)
    return "demo-admin", password
