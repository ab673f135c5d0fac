"""CLI commands of the certificates plugin: `registry keys generate|list|rotate` and
`registry verify FILE|QR-IMAGE`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from open_registry.core import Settings, StartupError, open_registry

DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="The registry's data folder (keys live there)")
]
DatabaseOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="REGISTRY_DATABASE_URL",
        help="The registry's database, for status lists (default: from settings)",
    ),
]
IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"RIFF")


def _settings(data_dir: Path | None, database_url: str | None = None) -> Settings:
    overrides: dict[str, Any] = {}
    if data_dir:
        overrides["data_dir"] = data_dir.resolve()
    if database_url:
        overrides["database_url"] = database_url
    try:
        return Settings.load(**overrides)
    except (ValueError, FileNotFoundError) as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None


def _keystore(data_dir: Path | None) -> Any:
    from open_registry.plugins.certificates.config import CertificatesConfig, ConfigError
    from open_registry.plugins.certificates.keystore import KeyStore

    settings = _settings(data_dir)
    try:
        config = CertificatesConfig.from_settings(settings)
    except ConfigError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    return KeyStore(config.keys_dir or settings.data_dir / "keys", config.issuer)


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(code)


TEXT_FORMATS = (b"shc:/", b"HC1:")


def read_credential(path: Path) -> dict[str, Any] | str:
    """A credential from a JSON file or a picture of its QR code (either payload); or the text
    of a SMART Health Card (`shc:/...`) or an HCERT (`HC1:...`), from a file or a QR picture."""
    from open_registry.plugins.certificates import qr

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    if data.startswith(IMAGE_MAGIC):
        data = qr.decode_image(data)
        if not data.startswith(TEXT_FORMATS):
            return qr.decode_payload(data)
    if data.strip().startswith(TEXT_FORMATS):
        return data.strip().decode("ascii", "replace")
    try:
        credential = json.loads(data)
    except ValueError as exc:
        raise ValueError(f"{path} is neither JSON nor a QR code picture: {exc}") from None
    if not isinstance(credential, dict):
        raise ValueError(f"{path} holds JSON that is not a credential object")
    return credential


def no_registry_here(settings: Settings) -> str | None:
    """Why `registry verify` cannot check against a registry with these settings, or None.

    A registry has a data folder once it has run (its keys, and the SQLite database, are
    there); a PostgreSQL database named in the settings is a registry too. Opening a registry
    where there is none would create a data folder, keys and an empty database."""
    if settings.data_dir.is_dir() or settings.sqlalchemy_url.startswith("postgresql"):
        return None
    return (
        f"no registry here (no data folder {settings.data_dir}): registry verify checks a "
        "certificate against a registry's keys and status lists; run it in the registry's "
        "folder, or pass --data-dir (the registry's data folder) or --database-url (its "
        "PostgreSQL database)"
    )


def _table(headers: tuple[str, ...], rows: list[tuple[Any, ...]]) -> list[str]:
    """A header row and the rows, in columns as wide as their widest cell."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    return [
        "  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
        for r in [headers, *rows]
    ]


def _open_for_verify(data_dir: Path | None, database_url: str | None) -> Any:
    """The registry `registry verify` checks against; exit 2 when there is none here."""
    settings = _settings(data_dir, database_url)
    missing = no_registry_here(settings)
    if missing:
        _fail(missing, 2)
    try:
        return open_registry(settings, create_tables=False)
    except StartupError as exc:
        _fail(f"cannot open the registry to check status lists: {exc}", 2)


def add_commands(cli: typer.Typer) -> None:
    keys = typer.Typer(
        help="Signing keys of the certificate issuer (files in the keys folder).",
        no_args_is_help=True,
    )
    cli.add_typer(keys, name="keys")

    @keys.command("generate")
    def generate(data_dir: DataDirOpt = None) -> None:
        """Create a signing key and make it current (the private key file is mode 0600).

        Examples:

          registry keys generate
        """
        store = _keystore(data_dir)
        info = store.generate()
        typer.echo(f"generated {info.kid}  {info.public_multibase}  (current)")
        typer.echo(f"private key: {store.folder / (info.kid + '.key')} (mode 600; back it up)")

    @keys.command("list")
    def list_(data_dir: DataDirOpt = None) -> None:
        """List the signing keys: id, public key, creation time; the current one is marked.

        Examples:

          registry keys list
        """
        store = _keystore(data_dir)
        found = store.keys()
        if not found:
            typer.echo("no signing keys yet; run `registry keys generate`")
            return
        from open_registry.plugins.certificates.es256 import EcKeys

        rows = [
            ("*" if k.current else "", k.kid, "Ed25519", k.created, k.public_multibase)
            for k in found
        ]
        ec_keys = EcKeys(store.folder)
        current = ec_keys._index().get("current")
        for jwk in ec_keys.jwks()["keys"]:
            mark = "*" if jwk["kid"] == current else ""
            rows.append((mark, jwk["kid"], "ES256", "-", "(SMART Health Cards, HCERT)"))
        for line in _table(("CURRENT", "ID", "TYPE", "CREATED", "PUBLIC KEY"), rows):
            typer.echo(line)

    @keys.command("rotate")
    def rotate(
        data_dir: DataDirOpt = None,
        es256: Annotated[
            bool, typer.Option("--es256", help="Rotate the ES256 key (SMART Health Cards, HCERT)")
        ] = False,
    ) -> None:
        """Make a new key current; old public keys stay published so old certificates verify.

        Examples:

          registry keys rotate

          registry keys rotate --es256
        """
        from open_registry.plugins.certificates.es256 import EcKeys
        from open_registry.plugins.certificates.keystore import KeyStoreError

        store = _keystore(data_dir)
        if es256:
            ec_keys = EcKeys(store.folder)
            kid = ec_keys.generate()
            typer.echo(
                f"rotated: ES256 key {kid} is now current; "
                f"{len(ec_keys.jwks()['keys']) - 1} older key(s) still verify"
            )
            return
        try:
            info = store.rotate()
        except KeyStoreError as exc:
            _fail(str(exc), 1)
        typer.echo(
            f"rotated: {info.kid} is now current; {len(store.keys()) - 1} older key(s) still verify"
        )

    @cli.command("verify")
    def verify(
        path: Annotated[Path, typer.Argument(help="A credential JSON file or a QR code picture")],
        data_dir: DataDirOpt = None,
        database_url: DatabaseOpt = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the verdict as JSON")] = False,
    ) -> None:
        """Verify a certificate (JSON file or QR code picture) offline, with the reason.

        Exit 0 when VALID; 1 when REVOKED, SUSPENDED, EXPIRED or INVALID; 2 when the file
        cannot be read or there is no registry here. Our own status lists are read from the
        registry's database; nothing is fetched. Run it in the registry's folder (where its
        data folder is), or name the registry with --data-dir or --database-url: elsewhere it
        stops, without creating keys or files.

        Examples:

          registry verify certificate.json

          registry verify qr-photo.png --json
        """
        from open_registry.plugins.certificates.qr import QRError
        from open_registry.plugins.certificates.runtime import runtime

        try:
            credential = read_credential(path)
        except (ValueError, QRError) as exc:
            _fail(str(exc), 2)
        reg = _open_for_verify(data_dir, database_url)
        try:
            rt = runtime(reg)
            if isinstance(credential, str):
                from open_registry.plugins.certificates.health_formats import verify_text

                verdict = verify_text(rt, credential)
            else:
                verdict = rt.verifier.verify(credential)
        finally:
            reg.close()
        if as_json:
            typer.echo(json.dumps(verdict.as_dict(), indent=2))
        else:
            colour = "green" if verdict.status == "VALID" else "red"
            typer.secho(f"{verdict.status}: {verdict.reason}", fg=colour)
            for warning in verdict.warnings:
                typer.echo(f"warning: {warning}")
        raise typer.Exit(0 if verdict.status == "VALID" else 1)
