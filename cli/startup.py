"""What `registry serve` says and logs at start-up, apart from serving: the `base_url` check and
how loud Alembic is (`--verbose`)."""

from __future__ import annotations

from typing import Any

from open_registry.core import Settings

#: the certificates plugin's `base_url` when the settings leave it out
DEFAULT_BASE_URL = "http://localhost:8000"
#: the addresses `DEFAULT_BASE_URL` reaches a server on
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
_OFF = frozenset({"false", "0", "no", "off"})


def base_url_warning(settings: Settings, host: str, port: int) -> str | None:
    """One line when certificates are issued with the default `base_url` while the server
    listens elsewhere than localhost:8000 (another port, or an address other people reach):
    `base_url` is signed into every certificate (its status list links, a SMART Health Card's
    `iss`), so certificates issued now would point at this machine's localhost. None otherwise
    (the setting is set, the certificates plugin is off, or the server is localhost:8000)."""
    certificates: Any = (settings.plugins or {}).get("certificates") or {}
    if not settings.default_schemas or str(certificates.get("enabled", True)).lower() in _OFF:
        return None  # no certificates are issued
    url = str(certificates.get("base_url") or DEFAULT_BASE_URL).rstrip("/")
    if url != DEFAULT_BASE_URL or (port == 8000 and host in _LOOPBACK):
        return None
    return (
        f"warning: base_url is left at {DEFAULT_BASE_URL} but the registry serves on "
        f"{host}:{port}; base_url is signed into every certificate, so set this registry's "
        'public address: base_url = "https://..." under [plugins.certificates] in '
        "registry.toml, or REGISTRY_PLUGINS__CERTIFICATES__BASE_URL"
    )


def schema_hint(problems: str, default_schemas: bool) -> str | None:
    """What to do when schema files clash with the shipped ones by table name (DIVOC's
    `Facility` and the shipped `facility` both need the table `facility`), or None."""
    if default_schemas and "already taken by" in problems and "entity_schemas" in problems:
        return (
            "hint: these files replace the shipped entities of the same names (DIVOC's opensaber "
            "files do): serve them alone with --no-default-schemas"
        )
    return None


def alembic_logger(verbose: bool) -> dict[str, str]:
    """The `logging` configuration of Alembic's logger: quiet (its warnings and errors only)
    unless `verbose`, since its INFO lines (dozens at every start, again in each worker) bury
    the address and the demo sign-in printed after them."""
    return {"level": "INFO" if verbose else "WARNING"}
