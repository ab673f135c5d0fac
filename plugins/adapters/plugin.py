"""Built-in plugin `adapters`: what every adapter shares.

- `register_commands`: `registry sync SOURCE... | --all | --list [--dry-run] [--every 6h]`;
- `register_routes`: `GET /api/v1/people/lookup?identity=...` asks the citizen registries
  (`lookup_person`): 200 with the person, 404 when no registry knows them, 503 when a registry
  could not answer (not the same as "not found");
- `after_write_batch` + `register_senders`: every issued certificate (`certificate.created`) is
  queued as a `documents` delivery and handed to the `push_document` hook (document vaults),
  outside any transaction, retried on its own.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from open_registry.core import (
    NotFound,
    PermanentDeliveryError,
    Settings,
    StartupError,
    delivery_key,
    enqueue_delivery,
    open_registry,
)
from open_registry.core.hookspecs import hookimpl
from open_registry.plugins.adapters import sync
from open_registry.plugins.adapters.config import section

_DURATION = re.compile(r"^(\d+)\s*([smhd]?)$")


def parse_every(text: str) -> float:
    """`90`, `90s`, `15m`, `6h`, `1d` -> seconds."""
    m = _DURATION.match(text.strip().lower())
    if not m or int(m.group(1)) == 0:
        raise typer.BadParameter(f"{text!r} is not a duration such as 90s, 15m, 6h or 1d")
    return int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def sync_command(
    sources: Annotated[list[str] | None, typer.Argument(help="Source names to pull")] = None,
    all_sources: Annotated[bool, typer.Option("--all", help="Every configured source")] = False,
    list_sources: Annotated[
        bool, typer.Option("--list", help="List the configured sources and exit")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check and count, write nothing")
    ] = False,
    every: Annotated[
        str | None, typer.Option(help="Run again after this long (90s, 15m, 6h, 1d) until stopped")
    ] = None,
    report: Annotated[
        Path | None, typer.Option(help="Write the full report (every failed row) as JSON here")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="The data folder")] = None,
    database_url: Annotated[
        str | None, typer.Option("--database-url", envvar="REGISTRY_DATABASE_URL")
    ] = None,
) -> None:
    """Pull master data (facilities, vaccinators, ...) from external registries and upsert it.

    Records are matched by the source's natural key: new ones are created, changed ones updated,
    the others left alone (re-running changes nothing). Rows that fail validation are reported
    and write nothing. Exit code 1 when a source failed or a row was refused.

    Examples:

      registry sync --list

      registry sync dhis2 fhir-facilities

      registry sync --all --every 6h --report sync-report.json
    """
    overrides: dict[str, Any] = {}
    if data_dir:
        overrides["data_dir"] = data_dir.resolve()
    if database_url:
        overrides["database_url"] = database_url
    try:
        settings = Settings.load(**overrides)
        reg = open_registry(settings)
    except (ValueError, FileNotFoundError, StartupError) as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    try:
        known = sync.sources(reg)
        if list_sources:
            for name in known:
                typer.echo(name)
            return
        wanted = known if all_sources else list(sources or [])
        if not wanted:
            typer.secho("error: name a source, or --all (see --list)", fg="red", err=True)
            raise typer.Exit(2)
        pause = parse_every(every) if every else None
        while True:
            ok = _run_all(reg, wanted, dry_run, report)
            if pause is None:
                break
            time.sleep(pause)
    finally:
        reg.close()
    if not ok:
        raise typer.Exit(1)


def _run_all(reg: Any, wanted: list[str], dry_run: bool, report: Path | None) -> bool:
    ok = True
    reports = []
    for name in wanted:
        try:
            result = sync.run(reg, name, dry_run=dry_run)
        except sync.SyncError as exc:
            typer.secho(f"error: {exc}", fg="red", err=True)
            reports.append({"source": name, "error": str(exc)})
            ok = False
            continue
        reports.append(result.as_dict())
        typer.echo(result.summary())
        for failure in result.failed[:20]:
            reasons = "; ".join(f"{e['pointer'] or '/'}: {e['message']}" for e in failure.errors)
            typer.echo(f"  row {failure.row} ({failure.ref}): {reasons}")
        if len(result.failed) > 20:
            typer.echo(f"  ... and {len(result.failed) - 20} more (see --report)")
        ok = ok and result.ok
    if report:
        report.write_text(json.dumps(reports, indent=2, ensure_ascii=False))
    return ok


@hookimpl
def register_commands(cli: Any) -> None:
    cli.command("sync")(sync_command)


@hookimpl
def register_routes(registry: Any) -> list[Any]:
    from fastapi import APIRouter, Depends
    from fastapi.concurrency import run_in_threadpool

    from open_registry.core.auth import rules

    router = APIRouter(tags=["integrations"])

    @router.get(
        "/api/v1/people/lookup",
        # personal data from outside: for the roles that may create recipients (enrol them)
        dependencies=[Depends(rules.entity("recipient", "create"))],
        summary="Look a person up in the citizen registries",
        description="200 with what the registry knows, 404 when no registry knows the "
        "identity, 503 when a registry could not answer (try again later). Personal data: "
        "for the roles that may create recipients.",
    )
    async def lookup(identity: str) -> dict[str, Any]:
        person = await run_in_threadpool(registry.lookup_person, identity)
        if person is None:
            raise NotFound("no citizen registry knows this identity")
        return person

    return [router]


DOCUMENTS = "documents"


def _has_vault(registry: Any) -> bool:
    impls = registry.pm.hook.push_document.get_hookimpls()
    return any(i.plugin_name != "vault" for i in impls) or bool(section(registry.settings, "vault"))


@hookimpl
def after_write_batch(events: list[dict[str, Any]], connection: Any, registry: Any) -> None:
    issued = [e for e in events if e["event"] == "certificate.created"]
    if not issued or not _has_vault(registry):
        return
    for event in issued:
        key = delivery_key(DOCUMENTS, "certificate", event)
        enqueue_delivery(connection, registry, DOCUMENTS, key, event, {"type": "certificate"})


def send_document(delivery: dict[str, Any], registry: Any) -> None:
    """Hand one issued certificate to every `push_document` implementation."""
    certificates = registry.services.get("certificate")
    try:
        record = certificates.get(delivery["record_id"]) if certificates else None
    except NotFound:
        record = None
    if record is None:
        raise PermanentDeliveryError(f"certificate {delivery['record_id']} is gone")
    owner = None
    recipients = registry.services.get("recipient")
    if recipients is not None and record.get("recipient"):
        try:
            owner = recipients.get(record["recipient"]).get("identity")
        except NotFound:
            owner = None
    document = {
        "type": "certificate",
        "id": record["id"],
        "owner": owner,
        "issued_at": record.get("issuedAt"),
        "idempotency_key": delivery["key"],
        "record": record,
    }
    registry.pm.hook.push_document(document=document, registry=registry)


@hookimpl
def register_senders(registry: Any) -> dict[str, Any]:
    return {DOCUMENTS: send_document}
