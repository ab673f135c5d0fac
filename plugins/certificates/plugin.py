"""Built-in plugin: vaccinations become signed certificates (registered through the
`open_registry` entry-point group like any third-party plugin).

- `register_schema_dirs`: the `vaccination` and `certificate` entities;
- `before_write`: certificates are written by the issuer only; a dose cannot exceed the
  schedule; a vaccination's certificate can be corrected `max_corrections` times;
- `after_write_batch`: a created vaccination gets its certificate, a changed one a corrected
  certificate (the old one revoked and linked), a deleted one has its certificates revoked;
- `register_routes`: certificate outputs, lifecycle, status lists, verification, VC-API, DID,
  and the public verification page `/verify` (`verify_page.py`);
- `register_templates`, `prepare_app`: the certificate page `/ui/vaccination/{id}/certificate`
  with its revoke / suspend / reinstate form (`pages.py`);
- `register_commands`: `registry keys ...`, `registry verify ...`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from open_registry.core import Conflict, Forbidden, Invalid, StartupError
from open_registry.core.hookspecs import hookimpl
from open_registry.plugins.certificates.config import CertificatesConfig, ConfigError
from open_registry.plugins.certificates.issuance import (
    ACTOR,
    CERTIFICATE,
    ORIGIN,
    VACCINATION,
    Job,
)
from open_registry.plugins.certificates.runtime import runtime

SCHEMAS = Path(__file__).parent / "schemas"
#: the pages' templates (`certificates/page.html`: the certificate page, `pages.py`)
TEMPLATES = Path(__file__).parent / "templates"


def _enabled(settings: Any) -> bool:
    try:
        return CertificatesConfig.from_settings(settings).enabled
    except ConfigError as exc:
        raise StartupError(str(exc)) from None


@hookimpl
def register_schema_dirs(settings: Any) -> list[Path]:
    # the vaccination entity refers to the shipped recipient, facility, vaccine, programme and
    # vaccinator entities: without them (default_schemas off) the plugin stays out of the way
    return [SCHEMAS] if settings.default_schemas and _enabled(settings) else []


@hookimpl
def register_write_checks(registry: Any) -> list[str]:
    # a dose beyond the schedule is refused in a CSV import as it is through the API
    return [VACCINATION] if CERTIFICATE in registry.services else []


@hookimpl
def before_write(
    entity: str,
    action: str,
    record: dict[str, Any],
    previous: dict[str, Any] | None,
    connection: Any,
    origin: str,
    registry: Any,
) -> None:
    if entity == CERTIFICATE and origin != ORIGIN:
        raise Forbidden(
            "certificates are issued by the registry from vaccination records; record or "
            "correct the vaccination instead, or use the certificate's revoke/suspend actions"
        )
    if entity != VACCINATION or CERTIFICATE not in registry.services:
        return
    dose, total = record.get("dose"), record.get("totalDoses")
    if isinstance(dose, int) and isinstance(total, int) and dose > total:
        raise Invalid(
            "1 field failed validation",
            errors=[
                {
                    "pointer": "/dose",
                    "message": f"dose {dose} is beyond the schedule's {total} doses",
                    "keyword": "maximum",
                }
            ],
        )
    if action == "update":
        certs = runtime(registry)
        issued = certs.issuer.certificates_of(connection, [record["id"]]).get(record["id"], [])
        limit = certs.config.max_corrections
        if len(issued) > limit:
            raise Conflict(
                f"this vaccination's certificate has been corrected {len(issued) - 1} times, "
                f"the limit is {limit}; ask a system administrator",
                fields=["id"],
            )


@hookimpl
def after_write_batch(events: list[dict[str, Any]], connection: Any, registry: Any) -> None:
    mine = [e for e in events if e["entity"] == VACCINATION]
    if not mine or CERTIFICATE not in registry.services:
        return
    certs = runtime(registry)
    issuer = certs.issuer
    existing = issuer.certificates_of(connection, {e["record_id"] for e in mine})
    jobs: list[Job] = []
    planned: set[str] = set()
    latest_event = {e["record_id"]: e for e in mine}  # several changes in a batch: the last
    for event in mine:
        vid = event["record_id"]
        if latest_event[vid] is not event:
            continue
        live = [c for c in existing.get(vid, []) if c["status"] != "revoked"]
        kind = event["event"].rsplit(".", 1)[-1]
        if kind in ("deleted", "purged"):
            for cert in live:
                issuer.set_status(
                    cert["id"], "revoked", reason="the vaccination record was deleted"
                )
            certs.verifier.forget_lists()
            continue
        if vid in planned:
            continue
        if kind == "created" and existing.get(vid):
            continue  # issued already (by an update event delivered first)
        replaces = live[0] if (kind == "updated" and live) else None
        jobs.append(Job(vid, replaces))
        planned.add(vid)
    if jobs:
        issuer.issue(connection, jobs)
        if any(j.replaces for j in jobs):
            certs.verifier.forget_lists()


@hookimpl
def register_routes(registry: Any) -> list[Any]:
    if CERTIFICATE not in registry.services:
        return []
    from open_registry.plugins.certificates.routes import certificate_routes
    from open_registry.plugins.certificates.verify_page import verify_page_routes

    return [*certificate_routes(registry), *verify_page_routes(registry)]


@hookimpl
def register_templates() -> list[Path]:
    return [TEMPLATES]


@hookimpl
def prepare_app(app: Any, registry: Any) -> None:
    if CERTIFICATE not in registry.services:
        return
    from open_registry.plugins.certificates.pages import add_certificate_pages
    from open_registry.plugins.certificates.verifier import TrustStore

    config = CertificatesConfig.from_settings(registry.settings)
    if config.trust_dir is not None:
        # read now, so a broken file stops start-up naming it (not the first verification)
        try:
            TrustStore(None, config.trusted_issuers, config.trust_dir)
        except ValueError as exc:
            raise StartupError(f"plugins.certificates.trust_dir: {exc}") from None

    add_certificate_pages(app, registry)  # /ui/vaccination/{id}/certificate


@hookimpl
def register_commands(cli: Any) -> None:
    from open_registry.plugins.certificates.commands import add_commands

    add_commands(cli)


__all__ = ["ACTOR"]
